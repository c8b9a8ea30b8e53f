"""The launcher in an environment set up as the OpenTelemetry docs say: upstream's
opentelemetry-distro and everything `opentelemetry-bootstrap -a install` adds, beside ours.

Which distro and configurator the launcher picks depends on install order; the four
combinations are picked here with OTEL_PYTHON_DISTRO / OTEL_PYTHON_CONFIGURATOR. The apps
carry no tracestream code, and the environment holds only the variables the README shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import httpx
import pytest
from opentelemetry.instrumentation.version import __version__ as launcher_version

from tests.apps.servers import bin_path, http_ready, launched, serve
from tests.support import ROOT, VENV_BIN, RedisHandle, run_python_process, wait_for
from tracestream.embedded_redis import free_port

COMBINATIONS = [
    ("tracestream", "tracestream"),
    ("distro", "configurator"),  # upstream's distro and configurator both first in install order
    ("tracestream", "configurator"),
    ("distro", "tracestream"),
]


def _env(stream: RedisHandle, service: str, distro: str, configurator: str) -> dict[str, str]:
    return stream.env(
        OTEL_SERVICE_NAME=service,
        OTEL_LOGS_EXPORTER="redis_stream",
        OTEL_TRACES_EXPORTER="redis_stream",
        OTEL_PYTHON_DISTRO=distro,
        OTEL_PYTHON_CONFIGURATOR=configurator,
        # Upstream's distro sends metrics over OTLP by default; no collector listens here.
        OTEL_METRICS_EXPORTER="none",
        # The OpenTelemetry docs' switch for logs: upstream's configurator then puts its own
        # handler on root, and no record may reach the stream twice.
        OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED="true",
    )


def _clean(output: str) -> None:
    """Nothing but the launcher's own note on which configurator it skipped. Not the logging
    instrumentation's note that the SDK's handler is on root, either: without tracestream that
    handler exports it as a record, and with tracestream's capture in its place it is untrue."""
    lines = [line for line in output.splitlines() if not line.startswith("Configuration of ")]
    assert not [line for line in lines if "Traceback" in line or "ERROR" in line or "rror" in line], output
    assert "Skipping installation of LoggingHandler" not in output


@pytest.mark.parametrize(("distro", "configurator"), COMBINATIONS)
def test_any_distro_and_configurator_give_the_full_setup(
    stream: RedisHandle, distro: str, configurator: str
) -> None:
    port = free_port()
    server_env = _env(stream, "api", distro, configurator)
    command = launched(bin_path("uvicorn"), "tests.apps.zero_code_api:app", "--port", str(port))
    with serve(command, server_env, http_ready(f"http://127.0.0.1:{port}/openapi.json")) as server:
        client = subprocess.run(
            launched(bin_path("python"), "-m", "tests.apps.zero_code_client", f"http://127.0.0.1:{port}/"),
            env=_env(stream, "client", distro, configurator),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert client.returncode == 0, client.stderr
        _clean(client.stderr)
        # The app's own warning still prints through logging.lastResort.
        assert "called the api: 200" in client.stderr
        out = json.loads(client.stdout.strip().splitlines()[-1])
        assert out["status"] == 200 and out["trace_id"], out  # our trace header: integrations are in

        trace_id = out["trace_id"]
        in_trace = wait_for(
            lambda: (
                len([e for e in stream.logs() if e.trace_id == trace_id]) >= 2
                and [e for e in stream.logs() if e.trace_id == trace_id]
            ),
            what="the request record and the api's log line",
        )
        wait_for(lambda: "hello from the api" in server.output(), what="the api's own line on its terminal")
        _clean(server.output())

    assert Counter((e.service, e.scope) for e in in_trace) == {
        ("api", "tracestream.http"): 1,
        ("api", "tests.apps.zero_code_api"): 1,
    }
    client_spans = wait_for(
        lambda: [s for s in stream.spans() if s.service == "client" and s.kind == "CLIENT"],
        what="the client's httpx span",
    )
    assert [s.trace_id for s in client_spans] == [trace_id]  # the api continued the client's trace
    # The contrib options tracestream makes its defaults, whichever distro instrumented FastAPI:
    # no per-message `http send`/`http receive` spans.
    api_spans = wait_for(
        lambda: [s for s in stream.spans() if s.service == "api" and s.trace_id == trace_id],
        what="the api's span",
    )
    assert [s.kind for s in api_spans] == ["SERVER"], [s.name for s in api_spans]
    bodies = Counter(e.body for e in stream.logs())
    assert bodies["hello from the api"] == 1 and bodies["called the api: 200"] == 1
    assert all(count == 1 for count in bodies.values()), bodies
    assert all(isinstance(e.resource.get("process.pid"), int) for e in stream.logs())
    # as upstream's configurator has it, which ours takes the place of
    assert {e.resource.get("telemetry.auto.version") for e in stream.logs()} == {launcher_version}


def test_our_settings_without_our_exporters_say_why_in_one_line(stream: RedisHandle) -> None:
    """Upstream's distro won and defaulted the exporters to otlp: nothing reaches Redis, and we say so."""
    env = stream.env(
        OTEL_SERVICE_NAME="api", OTEL_PYTHON_DISTRO="distro", OTEL_PYTHON_CONFIGURATOR="configurator"
    )
    env.update(OTEL_TRACES_EXPORTER="console", OTEL_LOGS_EXPORTER="console", OTEL_METRICS_EXPORTER="none")
    done = subprocess.run(
        launched(bin_path("python"), "-c", "print('app ran')"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0 and done.stdout == "app ran\n", done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert notes == [
        "tracestream: not set up: TRACESTREAM_* is set, but OTEL_TRACES_EXPORTER='console' and "
        "OTEL_LOGS_EXPORTER='console' name no redis_stream exporter"
    ]


# The OpenTelemetry docs' Getting Started counter, exported as `--metrics_exporter console` asks.
COUNTER = """
from opentelemetry import metrics
meter = metrics.get_meter("diceroller.meter")
roll_counter = meter.create_counter("dice.rolls", description="The number of rolls by roll value")
roll_counter.add(1, {"roll.value": "4"})
"""


@pytest.mark.parametrize(("distro", "configurator"), COMBINATIONS)
def test_metrics_go_where_otel_metrics_exporter_says_whichever_configurator_runs(
    stream: RedisHandle, distro: str, configurator: str
) -> None:
    env = {**_env(stream, "dice", distro, configurator), "OTEL_METRICS_EXPORTER": "console"}
    done = run_python_process(COUNTER, env, launcher=True)
    assert done.returncode == 0, done.stderr
    assert '"name": "dice.rolls"' in done.stdout, (done.stdout, done.stderr)


def test_a_metrics_exporter_that_is_not_installed_is_said_in_one_line(stream: RedisHandle) -> None:
    env = {**_env(stream, "dice", "tracestream", "tracestream"), "OTEL_METRICS_EXPORTER": "nonesuch"}
    done = run_python_process(COUNTER, env, launcher=True)
    assert done.returncode == 2
    assert done.stderr.startswith(
        "tracestream: invalid configuration: OTEL_METRICS_EXPORTER: no exporter named 'nonesuch' is installed"
    ), done.stderr


# An app with a line of its own and no tracestream code.
APP_LINE = "import logging; logging.getLogger('shop').warning('app line'); print('app ran')"


def _with_metrics_unset(stream: RedisHandle, configurator: str) -> dict[str, str]:
    """Upstream's distro won, and OTEL_METRICS_EXPORTER is unset, as the OpenTelemetry docs leave
    it: the distro sets it to otlp over gRPC, whose exporter `opentelemetry-bootstrap` does not
    install."""
    env = _env(stream, "shop", "distro", configurator)
    del env["OTEL_METRICS_EXPORTER"], env["OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED"]
    return env


def test_upstreams_metrics_default_under_our_configurator_leaves_metrics_off_and_says_so(
    stream: RedisHandle,
) -> None:
    """It stopped the app at start (exit 2), where upstream's configurator lets it run."""
    done = run_python_process(APP_LINE, _with_metrics_unset(stream, "tracestream"), launcher=True)
    assert (done.returncode, done.stdout) == (0, "app ran\n"), done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert ours == [
        "tracestream: WARNING metrics are off, traces and logs are set up: OTEL_METRICS_EXPORTER=otlp with "
        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: no exporter named 'otlp_proto_grpc' is installed (installed: "
        + ours[0].split("(installed: ")[1]
    ]
    assert "set OTEL_METRICS_EXPORTER=none, or OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in ours[0]
    [line] = wait_for(lambda: stream.logs(), what="the app's line")
    assert (line.body, line.service) == ("app line", "shop")


def test_upstreams_metrics_default_under_its_configurator_is_said_in_one_line(stream: RedisHandle) -> None:
    """Upstream's configurator fails on it after it imported our exporters, and the launcher
    runs the app with nothing set up, printing upstream's tracebacks: the line says what it
    means here and the way out."""
    done = run_python_process(APP_LINE, _with_metrics_unset(stream, "configurator"), launcher=True)
    assert (done.returncode, done.stdout) == (0, "app ran\n"), done.stderr
    assert "Failed to auto initialize OpenTelemetry" in done.stderr  # upstream's own, as without us
    ours = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert ours == [
        "tracestream: WARNING nothing reaches Redis: the launcher stopped before it set anything up "
        "(RuntimeError(\"Requested component 'otlp_proto_grpc' not found in entry point "
        "'opentelemetry_metrics_exporter'\")); upstream's opentelemetry-distro sets "
        "OTEL_METRICS_EXPORTER=otlp over gRPC where it is unset: set OTEL_METRICS_EXPORTER=none, "
        "or OTEL_PYTHON_DISTRO=tracestream"
    ], done.stderr
    assert stream.logs() == []


def test_otlp_for_traces_under_upstreams_configurator_without_grpc_says_the_way_out(
    stream: RedisHandle,
) -> None:
    """Both distros installed, neither chosen (the launcher may pick upstream's), and OTLP beside
    Redis as scale-out.md shows: upstream's configurator sends `otlp` over gRPC, whose exporter
    `opentelemetry-bootstrap` does not install, and the app runs with nothing set up."""
    env = {**_env(stream, "shop", "distro", "configurator"), "OTEL_TRACES_EXPORTER": "redis_stream,otlp"}
    done = run_python_process(APP_LINE, env, launcher=True)
    assert (done.returncode, done.stdout) == (0, "app ran\n"), done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert len(ours) == 1 and ours[0].endswith(
        "OTEL_TRACES_EXPORTER names otlp, which upstream's configurator sends over gRPC, and "
        "opentelemetry-exporter-otlp-proto-grpc is not installed: install it, or set "
        "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
    ), done.stderr


@pytest.mark.parametrize(("distro", "configurator"), COMBINATIONS)
def test_a_bad_setting_is_one_line_and_exit_2_whichever_configurator_runs(
    stream: RedisHandle, distro: str, configurator: str
) -> None:
    """Upstream's configurator builds our exporters itself, and would log their error as a
    traceback and run the app with nothing exported."""
    env = {**_env(stream, "dice", distro, configurator), "TRACESTREAM_MAX_AGE": "a week"}
    done = run_python_process("print('app ran')", env, launcher=True)
    assert (done.returncode, done.stdout) == (2, "")
    ours = [line for line in done.stderr.splitlines() if not line.startswith("Configuration of ")]
    assert ours == [
        "tracestream: invalid configuration: TRACESTREAM_MAX_AGE='a week' is invalid: "
        "expected a duration such as 250ms, 30s, 15m, 2h or 7d"
    ], done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (
            "OTEL_ATTRIBUTE_COUNT_LIMIT",
            "-1",
            "OTEL_ATTRIBUTE_COUNT_LIMIT must be a non-negative integer but got -1",
        ),
        (
            "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT",
            "ten",
            "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT must be a non-negative integer but got ten",
        ),
        (
            "OTEL_ATTRIBUTE_COUNT_LIMIT",
            "ten\ntracestream: a line of its own \x1b[0m",
            "OTEL_ATTRIBUTE_COUNT_LIMIT must be a non-negative integer but got "
            "ten\\ntracestream: a line of its own \\x1b[0m",
        ),
        (
            "OTEL_CONFIG_FILE",
            "otel.yaml",
            "OTEL_CONFIG_FILE is set, but tracestream sets up from OTEL_* and TRACESTREAM_* variables and"
            " would not read the file: unset it (docs/configuration.md lists the variables)",
        ),
    ],
    ids=["count-limit", "log-record-length-limit", "a-value-that-would-print-lines", "config-file"],
)
@pytest.mark.parametrize("setup", ["launcher", "configure"])
def test_otel_settings_we_cannot_honour_are_one_line(
    stream: RedisHandle, setup: str, variable: str, value: str, said: str
) -> None:
    """The SDK raised a bad limit from inside our setup (two tracebacks under the launcher, then
    the app ran with nothing exported), and a declarative config file was ignored without a word."""
    env = {**_env(stream, "limits", "tracestream", "tracestream"), variable: value}
    if setup == "launcher":
        done = run_python_process("print('app ran')", env, launcher=True)
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        ours = [line for line in done.stderr.splitlines() if not line.startswith("Configuration of ")]
        assert ours == [f"tracestream: invalid configuration: {said}"], done.stderr
    else:
        done = run_python_process("import tracestream\ntracestream.configure()", env)
        assert done.returncode == 1
        assert done.stderr.splitlines()[-1] == f"tracestream.settings.ConfigError: {said}", done.stderr
    assert stream.logs() == []


@pytest.mark.parametrize("stderr", ["full", "closed"])
def test_a_bad_setting_stops_the_launch_whatever_stderr_is(stream: RedisHandle, stderr: str) -> None:
    """The line could not be printed (a full disk, a closed descriptor): the exit that follows it
    never ran, and the launcher ran the app with nothing set up. Where stderr is closed, the line
    went to stdout instead."""
    env = {**_env(stream, "dice", "tracestream", "tracestream"), "TRACESTREAM_MAX_AGE": "a week"}
    command = [str(VENV_BIN / "opentelemetry-instrument"), sys.executable, "-c", "print('app ran')"]
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            command if stderr == "full" else ["sh", "-c", 'exec "$@" 2>&-', "sh", *command],
            env=env, stdout=subprocess.PIPE, stderr=full, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, "")


SENTRY_TRANSACTION = "sentry transaction: /\n"


@pytest.mark.parametrize(
    "distro", ["none", "distro", "tracestream"], ids=["sentry-alone", "upstream-distro", "our-distro"]
)
def test_sentrys_fastapi_integration_keeps_its_transactions_whichever_distro(
    stream: RedisHandle, distro: str
) -> None:
    """Upstream's Starlette instrumentation, which another distro loads, swapped Starlette for a
    subclass that Sentry's integration then patched, and no FastAPI app's request was a Sentry
    transaction any more."""
    port = free_port()
    command = [bin_path("uvicorn"), "tests.apps.sentry_fastapi:app", "--port", str(port)]
    env = _env(stream, "api", distro, "configurator" if distro == "distro" else "tracestream")
    if distro == "none":
        env = stream.env()
    else:
        command = launched(*command)
    env["SENTRY_DSN"] = f"http://public@127.0.0.1:{free_port()}/1"
    with serve(command, env, http_ready(f"http://127.0.0.1:{port}/docs")) as server:
        for _ in range(2):
            assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
        wait_for(lambda: server.output().count(SENTRY_TRANSACTION) == 2, what="Sentry's two transactions")
