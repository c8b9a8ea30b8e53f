"""A library in use whose contrib instrumentation is not installed: one line saying so, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.otlp_receiver import OtlpReceiver
from tests.reduced_env import environment_of, environment_without
from tests.seeded_records import RecordWriter
from tests.support import ROOT, RedisHandle, wait_for

REQUESTS_WITHOUT_CONTRIB = (
    "tracestream: WARNING requests is in use but opentelemetry-instrumentation-requests is not "
    "installed: no requests integration (pip install -e '.[clients]' in tracestream's checkout adds it)"
)
APP = """
import logging, tracestream
telemetry = tracestream.configure()
import requests
logging.getLogger("app").warning("still here")
telemetry.force_flush()
"""


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_an_absent_contrib_instrumentation_is_one_line(stream: RedisHandle, tmp_path: Path) -> None:
    python = environment_without(tmp_path / "venv", "opentelemetry-instrumentation-requests")
    done = _run([str(python), "-c", APP], stream.env())
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert notes == [REQUESTS_WITHOUT_CONTRIB]
    assert "still here" in done.stderr  # the app's own warning, through logging.lastResort
    wait_for(lambda: [e for e in stream.logs() if e.body == "still here"], what="the app's record")


@pytest.fixture(scope="module")
def without_requests_contrib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return environment_without(tmp_path_factory.mktemp("venv"), "opentelemetry-instrumentation-requests")


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


# OpenTelemetry's OTLP/HTTP exporter sends with requests, so it imports it: the app need not.
FANNED_OUT = """
import logging, sys, tracestream
both = "redis_stream,otlp"
telemetry = tracestream.configure(logs_exporter=both, traces_exporter=both)
logging.getLogger("app").warning("sent both ways")
telemetry.force_flush()
print("requests" in sys.modules)
"""


@pytest.mark.parametrize(
    ("app", "notes"),
    [
        (FANNED_OUT, []),
        ("import requests\n" + FANNED_OUT, [REQUESTS_WITHOUT_CONTRIB]),
        (FANNED_OUT + "import requests\n", [REQUESTS_WITHOUT_CONTRIB]),
        (FANNED_OUT + "from requests import Session\n", [REQUESTS_WITHOUT_CONTRIB]),
    ],
    ids=["the exporter's only", "the app's first", "the app's after the exporter's", "the app's Session"],
)
def test_requests_is_in_use_when_the_app_imports_it_not_when_the_otlp_exporter_does(
    without_requests_contrib: Path,
    receiver: OtlpReceiver,
    stream: RedisHandle,
    app: str,
    notes: list[str],
) -> None:
    env = stream.env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url)
    done = _run([str(without_requests_contrib), "-c", app], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["True"]  # the exporter had imported requests
    assert [line for line in done.stderr.splitlines() if line.startswith("tracestream:")] == notes
    wait_for(
        lambda: [r for r in receiver.logs if r.record.body.string_value == "sent both ways"], what="OTLP"
    )


LAUNCHER = "from opentelemetry.instrumentation.auto_instrumentation import run; run()"


@pytest.mark.parametrize(
    ("app", "notes"),
    [("", []), ("import requests", [REQUESTS_WITHOUT_CONTRIB])],
    ids=["the exporter's only", "the app's too"],
)
def test_under_the_launcher_the_otlp_exporters_requests_is_not_the_apps(
    without_requests_contrib: Path, receiver: OtlpReceiver, stream: RedisHandle, app: str, notes: list[str]
) -> None:
    """`opentelemetry-instrument`, as its script runs it, in the environment without the contrib."""
    env = stream.env(
        OTEL_SERVICE_NAME="launched",
        OTEL_LOGS_EXPORTER="otlp,redis_stream",
        OTEL_TRACES_EXPORTER="otlp,redis_stream",
        OTEL_METRICS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
    )
    code = f"{app}\nimport logging; logging.getLogger('launched').warning('launched both ways')"
    python = str(without_requests_contrib)
    done = _run([python, "-c", LAUNCHER, python, "-c", code], env)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("tracestream:")] == notes
    wait_for(lambda: [e for e in stream.logs() if e.body == "launched both ways"], what="the record in Redis")
    wait_for(
        lambda: [r for r in receiver.logs if r.record.body.string_value == "launched both ways"], what="OTLP"
    )


CLI = "import sys; from tracestream.cli import main; sys.exit(main(sys.argv[1:]))"


def test_the_cli_reads_without_the_console_extra(stream: RedisHandle, tmp_path: Path) -> None:
    """Installed with `[django,celery]` only: every command but `console` works, and that one
    says what to install in one line."""
    RecordWriter(stream).log("still readable")
    python = environment_without(tmp_path / "venv", "starlette", "uvicorn")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        where = ["--redis-url", stream.url, "--stream", stream.stream]
        command = [str(python), "-c", CLI, *args, *where]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)

    found = cli("search", "--grep", "readable")
    assert found.returncode == 0 and "still readable" in found.stdout, found.stderr
    console = cli("console")
    assert console.returncode == 2 and console.stdout == ""
    assert console.stderr.strip().splitlines() == [
        "tracestream: the console needs the console extra (starlette is not installed): "
        "pip install -e '.[console]' in tracestream's checkout"
    ]


# Flask's own quickstart, after configure().
FLASK_QUICKSTART = """
import logging, tracestream
tracestream.configure()
from flask import Flask
app = Flask(__name__)

@app.route("/")
def hello_world():
    logging.getLogger("hello").warning("saying hello")
    return "<p>Hello, World!</p>"

print(app.test_client().get("/").data.decode())
"""


@pytest.mark.parametrize(
    ("contrib", "disabled", "spans_from"),
    [
        (
            True,
            "",
            "upstream's Flask instrumentation, which nothing loads in this process: run it under "
            "opentelemetry-instrument, or call FlaskInstrumentor().instrument_app(app)",
        ),
        (
            True,
            "flask",
            "upstream's Flask instrumentation, which OTEL_PYTHON_DISABLED_INSTRUMENTATIONS turns off",
        ),
        (
            False,
            "",
            "upstream's Flask instrumentation, which is not installed (opentelemetry-instrumentation-flask)",
        ),
    ],
    ids=["upstream's instrumentation installed", "turned off", "not installed"],
)
def test_a_web_framework_without_an_integration_is_said_in_one_line(
    stream: RedisHandle, tmp_path: Path, contrib: bool, disabled: str, spans_from: str
) -> None:
    """Flask's requests got no record, and no line said why."""
    without = "opentelemetry-instrumentation-flask"
    python = sys.executable if contrib else environment_without(tmp_path, without)
    env = stream.env(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=disabled)
    done = _run([str(python), "-c", FLASK_QUICKSTART], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "<p>Hello, World!</p>\n"
    notes = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert notes == [
        "tracestream: WARNING flask is in use, which tracestream does not integrate: its requests get no "
        f"request records, and spans only from {spans_from}; the log lines of its apps reach the stream"
    ]
    assert [e.body for e in wait_for(lambda: stream.logs(), what="the view's line")] == ["saying hello"]


# The Flask tutorial's application factory, set up by tracestream once the app is made.
FLASK_FACTORY = """
import tracestream
from flask import Flask

def create_app():
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(SECRET_KEY="dev")
    tracestream.configure()

    @app.route("/hello")
    def hello():
        return "Hello, World!"

    return app

print(create_app().test_client().get("/hello").data.decode())
"""


def test_a_web_framework_beside_tracestreams_base_install_alone_is_said_in_one_line(
    stream: RedisHandle, tmp_path: Path
) -> None:
    """`pip install tracestream flask`, no extra: the line's code imported a module only the
    extras bring (`opentelemetry.util.http`), and making the app failed with its traceback."""
    python = environment_of(tmp_path, "tracestream", "flask")
    done = _run([str(python), "-c", FLASK_QUICKSTART], stream.env())
    assert (done.returncode, done.stdout) == (0, "<p>Hello, World!</p>\n"), done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("tracestream:")] == [
        "tracestream: WARNING flask is in use, which tracestream does not integrate: its requests get no "
        "request records, and spans only from upstream's Flask instrumentation, which is not installed "
        "(opentelemetry-instrumentation-flask); the log lines of its apps reach the stream"
    ], done.stderr


OTLP_BESIDE_REDIS = """
import tracestream
tracestream.configure(logs_exporter="redis_stream,otlp", traces_exporter="redis_stream,otlp")
"""


def test_otlp_without_the_otlp_extra_says_how_to_add_it(stream: RedisHandle, tmp_path: Path) -> None:
    """It blamed upstream's distro, which is not installed, and told the user to set the protocol
    already in use, or to turn the exporter variable off, which would turn Redis off too."""
    done = _run([str(environment_of(tmp_path, "tracestream")), "-c", OTLP_BESIDE_REDIS], stream.env())
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "tracestream.settings.ConfigError: OTEL_TRACES_EXPORTER=otlp: the OTLP/HTTP exporter is not "
        "installed (installed: console, none, redis_stream): "
        "pip install -e '.[otlp]' in tracestream's checkout"
    ), done.stderr


def test_an_app_made_before_configure_is_said_too(stream: RedisHandle) -> None:
    """Only the making of an app said it: a factory that sets tracestream up after `Flask(...)`
    got no spans, no request records and no line."""
    done = _run([sys.executable, "-c", FLASK_FACTORY], stream.env())
    assert (done.returncode, done.stdout) == (0, "Hello, World!\n"), done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("tracestream:")] == [
        "tracestream: WARNING flask is in use, which tracestream does not integrate: its requests get no "
        "request records, and spans only from upstream's Flask instrumentation, which nothing loads in "
        "this process: run it under opentelemetry-instrument, or call "
        "FlaskInstrumentor().instrument_app(app); the log lines of its apps reach the stream"
    ]


def test_a_web_framework_imported_but_never_made_into_an_app_is_not_said(stream: RedisHandle) -> None:
    """Sentry's integrations import Flask wherever it is installed: a FastAPI app set up as
    Sentry's docs say heard that Flask was in use."""
    for code in (
        "import tracestream\ntracestream.configure()\nimport flask\nprint(flask.__name__)\n",
        "import flask, tracestream\ntracestream.configure()\nprint(flask.__name__)\n",
    ):
        done = _run([sys.executable, "-c", code], stream.env())
        assert (done.returncode, done.stdout) == (0, "flask\n"), done.stderr
        assert "tracestream:" not in done.stderr


# Celery's "First Steps" app, its task's arguments serialized as a publisher does.
CELERY_FIRST_STEPS = """
import json, sys
import tracestream
tracestream.configure(service_name="tasks")
from celery import Celery
from kombu.serialization import dumps

app = Celery("tasks", broker="redis://127.0.0.1:1/0")

@app.task
def add(x, y):
    return x + y

dumps({"args": [4, 4]}, serializer="json")
print(json.dumps([name for name in ("django", "django.core.handlers") if name in sys.modules]))
"""


def test_django_imported_by_kombu_loads_no_django_integration(stream: RedisHandle) -> None:
    """kombu imports `django` for one class wherever it is installed: every Celery process then
    loaded Django's request handling and ours, 13 MB, and a worker with a memory limit per child
    replaced its children twice as often."""
    done = _run([sys.executable, "-c", CELERY_FIRST_STEPS], stream.env())
    assert (done.returncode, done.stdout, done.stderr) == (0, '["django"]\n', "")


DJANGO_PROJECT = ROOT / "tests" / "apps" / "django_docs"
DJANGO_WITHOUT_CONTRIB = (
    "tracestream: WARNING django is in use but opentelemetry-instrumentation-django is not installed: no "
    "django integration (pip install -e '.[django]' in tracestream's checkout adds it)"
)


@pytest.mark.parametrize("listed", ["tracestream", "tracestream.integrations.django.TracestreamConfig"])
def test_a_django_project_listing_tracestream_without_the_django_extra_starts_and_says_so(
    stream: RedisHandle, tmp_path: Path, listed: str
) -> None:
    """The AppConfig's module imported contrib's Django instrumentation: without it, every
    `manage.py` command of the project failed with a `ModuleNotFoundError` traceback."""
    python = environment_without(tmp_path / "venv", "opentelemetry-instrumentation-django")
    env = stream.env(
        PYTHONPATH=f"{DJANGO_PROJECT}{os.pathsep}{ROOT}",
        PROJ_DB=str(tmp_path / "db.sqlite3"),
        DJANGO_SETTINGS_MODULE="proj.settings_tracestream_listed",
        PROJ_TRACESTREAM_APPS=listed,
    )
    shell = [str(python), str(DJANGO_PROJECT / "manage.py"), "shell", "-c"]
    request = (
        "from django.test import Client\nprint(Client(HTTP_HOST='localhost').get('/orders/5/').status_code)"
    )
    done = _run([*shell, request], env)
    bare = _run([*shell, request], {**env, "DJANGO_SETTINGS_MODULE": "proj.settings_without_tracestream"})
    assert (done.returncode, done.stdout) == (0, bare.stdout), done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("tracestream:")] == [
        DJANGO_WITHOUT_CONTRIB
    ], done.stderr
    assert "Traceback" not in done.stderr and done.stdout.endswith("200\n")
    wait_for(lambda: [e for e in stream.logs() if e.body == "showing order 5"], what="the view's record")
