"""The real `opentelemetry-instrument` launcher, driven only by environment variables."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.apps.servers import LAUNCHER_ENV, bin_path, http_ready, launched, serve
from tests.support import ROOT, VENV_BIN, RedisHandle, run_python_process, wait_for
from tracestream.embedded_redis import free_port

LAUNCHER = str(VENV_BIN / "opentelemetry-instrument")


def _launch(handle: RedisHandle, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LAUNCHER, str(VENV_BIN / "python"), "-m", "tests.apps.emit_logs", *args],
        # The launcher runs the first distro it finds, in site-packages' directory order (or the
        # checkout's tracestream.egg-info, when run from it): these tests are about ours, and
        # test_launcher_matrix.py runs every combination with upstream's.
        env=handle.env(OTEL_SERVICE_NAME="launched", OTEL_PYTHON_DISTRO="tracestream", **env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_launcher_exports_correlated_logs_and_spans(stream: RedisHandle) -> None:
    done = _launch(stream, OTEL_LOGS_EXPORTER="redis_stream", OTEL_TRACES_EXPORTER="redis_stream")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # upstream's logging instrumentor is installed and loaded, yet adds no handler
    assert out["root_handlers"] == []  # nothing added to the app's handler tree

    entries = wait_for(lambda: len(stream.logs()) == 5 and stream.logs(), what="five records after exit")
    assert {e.service for e in entries} == {"launched"}
    correlated = [e for e in entries if e.trace_id == out["trace_id"]]
    assert len(correlated) == 4
    spans = wait_for(stream.spans, what="the checkout span")
    assert [(s.name, s.trace_id) for s in spans] == [("checkout", out["trace_id"])]
    assert correlated[0].span_id == spans[0].span_id

    with stream.client() as client:
        members = client.lrange(stream.keys.trace_index(out["trace_id"]), 0, -1)
    assert len(members) == 5  # four log records and one span, found without scanning


def test_launcher_defaults_to_redis_stream_without_any_otlp_exporter(stream: RedisHandle) -> None:
    """No OTEL_*_EXPORTER set: upstream would pick otlp; our distro picks redis_stream."""
    done = _launch(stream)
    assert done.returncode == 0, done.stderr
    assert "Failed to auto initialize" not in done.stderr
    wait_for(lambda: len(stream.logs()) == 5, what="records with default exporters")


def test_launcher_rejects_a_bad_setting_loudly(stream: RedisHandle) -> None:
    done = _launch(stream, TRACESTREAM_MAX_ENTRIES="plenty")
    assert done.returncode == 2
    assert "TRACESTREAM_MAX_ENTRIES='plenty'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_misspelt_variable_is_said_in_one_line_and_the_app_runs_as_before(stream: RedisHandle) -> None:
    done = _launch(stream, TRACESTREAM_MAX_ENTIRES="500")
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert said == [
        "tracestream: WARNING TRACESTREAM_MAX_ENTIRES is not a tracestream setting and is ignored; "
        "did you mean TRACESTREAM_MAX_ENTRIES?"
    ]
    wait_for(lambda: len(stream.logs()) == 5, what="records written with the settings it had")


ZERO_CODE_API = "tests.apps.zero_code_api:app"
CALLER = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"  # a caller's trace and span ids


@pytest.mark.parametrize(
    "command",
    [
        ["uvicorn", ZERO_CODE_API],
        ["python", "-m", "uvicorn", ZERO_CODE_API],
        ["granian", "--interface", "asgi", ZERO_CODE_API],
        ["python", "-m", "granian", "--interface", "asgi", ZERO_CODE_API],
    ],
    ids=["uvicorn", "python-m-uvicorn", "granian", "python-m-granian"],
)
def test_each_request_is_its_own_trace_however_the_server_is_started(
    stream: RedisHandle, command: list[str]
) -> None:
    """The click instrumentation (which `opentelemetry-bootstrap` installs) opens a span around a
    click command and leaves servers out by their name, which `python -m` changes: without care
    every request became a child of one span that never ends, and a caller's trace was dropped."""
    port = free_port()
    env = stream.env(
        OTEL_SERVICE_NAME="api", OTEL_TRACES_EXPORTER="redis_stream", OTEL_LOGS_EXPORTER="redis_stream"
    )
    argv = launched(bin_path(command[0]), *command[1:], "--port", str(port))
    with serve(argv, env, http_ready(f"http://127.0.0.1:{port}/openapi.json")):
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
        traceparent = "00-{}-{}-01".format(*CALLER)
        assert httpx.get(f"http://127.0.0.1:{port}/", headers={"traceparent": traceparent}).status_code == 200
        servers = wait_for(
            lambda: (spans := [s for s in stream.spans() if s.name == "GET /"]) and len(spans) == 2 and spans,
            what="the two requests' spans",
        )
    assert [s.kind for s in servers] == ["SERVER", "SERVER"], servers
    own, called = sorted(servers, key=lambda s: s.trace_id == CALLER[0])
    assert own.trace_id != CALLER[0] and not own.parent_span_id, servers
    assert (called.trace_id, called.parent_span_id) == CALLER, servers


# A third-party instrumentation that fails as it instruments (one for a version of its library
# it does not support, or upstream's aiohttp-server under `PYTHONWARNINGS=error`).
BROKEN_INSTRUMENTATION = """
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor


class BrokenInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return ()

    def _instrument(self, **kwargs):
        raise RuntimeError("this version of the library is not supported")

    def _uninstrument(self, **kwargs):
        pass
"""

IS_REQUESTS_INSTRUMENTED = """
import logging
from opentelemetry.instrumentation.requests import RequestsInstrumentor
instrumented = RequestsInstrumentor().is_instrumented_by_opentelemetry
logging.getLogger("app").warning("requests instrumented: %s", instrumented)
"""


def test_an_instrumentation_that_fails_leaves_the_others_loaded(stream: RedisHandle, tmp_path: Path) -> None:
    """The launcher stops at an instrumentation that raises: every one after it, and our
    integrations' completion, were left out, behind upstream's traceback."""
    (tmp_path / "broken_instrumentation.py").write_text(BROKEN_INSTRUMENTATION)
    metadata = tmp_path / "broken_instrumentation-1.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-instrumentation\nVersion: 1.0\n")
    (metadata / "entry_points.txt").write_text(
        "[opentelemetry_instrumentor]\nbroken = broken_instrumentation:BrokenInstrumentor\n"
    )
    env = stream.env(PYTHONPATH=f"{tmp_path}:{ROOT}", OTEL_SERVICE_NAME="broken", **LAUNCHER_ENV)
    done = subprocess.run(
        [LAUNCHER, str(VENV_BIN / "python"), "-c", IS_REQUESTS_INSTRUMENTED],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "broken" in line or "Failed" in line]
    assert said == [
        "tracestream: WARNING the broken instrumentation failed, the others are loaded: "
        "RuntimeError: this version of the library is not supported"
    ]
    assert [e.body for e in wait_for(stream.logs, what="the app's line")] == ["requests instrumented: True"]


CONFIGURED_API = """
import sys
import tracestream
import uvicorn
tracestream.configure()
uvicorn.run("tests.apps.zero_code_api:app", port=int(sys.argv[1]))
"""


@pytest.mark.parametrize("launcher", [False, True], ids=["configure", "launcher"])
def test_propagators_none_serves_requests_and_continues_no_callers_trace(
    stream: RedisHandle, launcher: bool
) -> None:
    """The OTel API reads `OTEL_PROPAGATORS=none` as a propagator that extracts `None`, which
    contrib's middleware attaches: every request was a 500 (under upstream's launcher too), and
    its error record was lost with it."""
    port = free_port()
    env = stream.env(OTEL_SERVICE_NAME="api", OTEL_PROPAGATORS="none", **LAUNCHER_ENV)
    if launcher:
        command = launched(bin_path("uvicorn"), ZERO_CODE_API, "--port", str(port))
    else:
        command = [bin_path("python"), "-c", CONFIGURED_API, str(port)]
    with serve(command, env, http_ready(f"http://127.0.0.1:{port}/openapi.json")) as server:
        traceparent = "00-{}-{}-01".format(*CALLER)
        response = httpx.get(f"http://127.0.0.1:{port}/", headers={"traceparent": traceparent})
        assert response.status_code == 200, server.output()
        spans = wait_for(lambda: [s for s in stream.spans() if s.name == "GET /"], what="the request's span")
    assert spans[0].trace_id != CALLER[0] and not spans[0].parent_span_id, spans


# eventlet's docs: patch first thing, then green threads. `configure()` above the patch (or the
# launcher, which always sets up before the app) has imported redis-py by then.
EVENTLET_APP = """
import logging, os
if os.environ.get("CONFIGURE_FIRST"):
    import tracestream
    tracestream.configure()
import eventlet
eventlet.monkey_patch()


def work(number):
    logging.getLogger("app").warning("green thread %d", number)


pool = eventlet.GreenPool()
for number in range(3):
    pool.spawn(work, number)
pool.waitall()
"""


@pytest.mark.parametrize("launcher", [False, True], ids=["configure", "launcher"])
def test_eventlet_patched_after_redis_py_was_imported_loses_nothing(
    stream: RedisHandle, launcher: bool
) -> None:
    """`monkey_patch()` takes `select.poll` away, which redis-py's parser chose as it loaded:
    every record went to the dead-letter file, and the app ran 2-4 times slower."""
    env = stream.env(OTEL_SERVICE_NAME="green", PYTHONWARNINGS="ignore::DeprecationWarning", **LAUNCHER_ENV)
    if not launcher:
        env["CONFIGURE_FIRST"] = "1"
    done = run_python_process(EVENTLET_APP, env, launcher=launcher)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("tracestream:")] == [], done.stderr

    def green() -> list[str]:  # under the launcher eventlet also logs of the locks it could not green
        return sorted(e.body for e in stream.logs() if e.body.startswith("green thread"))

    assert wait_for(lambda: len(green()) == 3 and green()) == [
        f"green thread {number}" for number in range(3)
    ]


FAILING_TASK = """
import asyncio, traceback
async def fail():
    raise ValueError("boom")
async def main():
    try:
        await asyncio.create_task(fail())
    except ValueError:
        traceback.print_exc()
asyncio.run(main())
"""


@pytest.mark.parametrize("named", [False, True], ids=["no-coroutine-named", "a-coroutine-named"])
def test_upstreams_asyncio_instrumentation_runs_only_where_it_records(
    stream: RedisHandle, named: bool
) -> None:
    """`opentelemetry-bootstrap` installs it everywhere. It wrapped every task's coroutine, a frame
    more in each traceback a task printed, to record nothing: metrics go nowhere under our
    distro, and it traces only the coroutines named in its settings."""
    env = stream.env(OTEL_SERVICE_NAME="tasks", OTEL_PYTHON_DISTRO="tracestream")
    if named:
        env["OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE"] = "fail"
    done = run_python_process(FAILING_TASK, env, launcher=True)
    bare = run_python_process(FAILING_TASK, {"PATH": "/usr/bin:/bin"})
    assert done.returncode == bare.returncode == 0, done.stderr
    printed = done.stderr[done.stderr.index("Traceback") :]
    if named:
        assert "trace_coroutine" in printed
        wait_for(
            lambda: [s.name for s in stream.spans()] == ["asyncio coro-fail"], what="the coroutine's span"
        )
    else:
        assert printed == bare.stderr


BELOW_THE_APPS_LEVEL = """
import logging
logging.basicConfig(level=logging.WARNING)
logging.getLogger("shop").info("below the app's level")
print(logging.getLogRecordFactory().__module__)
"""


def test_records_below_the_apps_level_reach_the_stream_through_otels_record_factory(
    stream: RedisHandle,
) -> None:
    """The launcher's logging instrumentation sets a record factory of its own: an app's factory
    keeps records from being made for us alone, OTel's, which adds trace fields, does not."""
    done = run_python_process(
        BELOW_THE_APPS_LEVEL, stream.env(OTEL_PYTHON_DISTRO="tracestream"), launcher=True
    )
    assert (done.returncode, done.stdout) == (0, "opentelemetry.instrumentation.logging\n"), done.stderr
    wait_for(lambda: [e.body for e in stream.logs()] == ["below the app's level"], what="the INFO record")
