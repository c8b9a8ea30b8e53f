"""Other OpenTelemetry users in the same process: Pydantic Logfire, whose global providers wrap the
SDK's, and an app that seeds `random`, which the SDK's default ids are drawn from."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.apps.servers import LAUNCHER_ENV, Server, launched, printed, serve
from tests.support import ROOT, VENV_BIN, RedisHandle, run_python_process, wait_for
from tests.test_app_otel_setup import UPSTREAM_FIRST
from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.schema import SpanEntry

LOGFIRE_APP = [sys.executable, "-m", "uvicorn", "tests.apps.logfire_fastapi:app"]
LOGFIRE_DIR = VENV_BIN.parent / "peers"
EXPORTERS = {"OTEL_LOGS_EXPORTER": "redis_stream", "OTEL_TRACES_EXPORTER": "redis_stream"}
LATER_LOGFIRE = (
    "tracestream: WARNING the app set a TracerProvider after tracestream's (ProxyTracerProvider, whose "
    "span processors tracestream cannot reach), and OpenTelemetry keeps the first: what its tracers "
    "record reaches tracestream as well, but spans started through the global provider (trace.get_tracer(), "
    "instrumentations not given that provider) do not reach its own processors"
)
LATER_LOGFIRE_LOGS = (
    "tracestream: WARNING the app set a LoggerProvider after tracestream's (ProxyLoggerProvider, whose "
    "log record processors tracestream cannot reach), and OpenTelemetry keeps the first: what is emitted "
    "through it reaches tracestream as well, but records emitted through the global provider (an "
    "OpenTelemetry LoggingHandler(), get_logger()) do not reach its own processors"
)
# Logfire's console: `12:04:51.622 GET /hello ? name='world'`, its children indented.
LOGFIRE_CONSOLE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ (.*)$")


def _serve_logfire(env: dict[str, str], launcher: bool) -> str:
    """Logfire's FastAPI app asked for one greeting; all it printed, stdout and stderr. Logfire
    lies beside the venv (the Makefile's PEERS), where only these apps find it."""
    port = str(free_port())
    command = [*LOGFIRE_APP, "--port", port]
    env = {**env, "PYTHONPATH": str(LOGFIRE_DIR)}
    with serve(launched(*command) if launcher else command, env, _started) as server:
        assert httpx.get(f"http://127.0.0.1:{port}/hello", params={"name": "world"}).status_code == 200
        server.stop()
        return server.output()


def _started(server: Server) -> bool:
    return printed(server, "Application startup complete")


def _logfires_console(output: str) -> list[str]:
    return [match[1] for line in output.splitlines() if (match := LOGFIRE_CONSOLE.match(line))]


@pytest.fixture(scope="module")
def logfire_alone(redis_server: EmbeddedRedis) -> Iterator[list[str]]:
    """What Logfire prints in the app without tracestream."""
    env = RedisHandle(redis_server.url, "unused").env()
    yield _logfires_console(_serve_logfire(env, launcher=False))


@pytest.mark.parametrize("order", ["launcher", "before", "after"])
def test_logfires_spans_reach_the_stream_and_its_console_is_unchanged(
    stream: RedisHandle, logfire_alone: list[str], order: str
) -> None:
    """Logfire's providers wrap the SDK's, and its FastAPI instrumentation and `logfire.span` use
    them, not the global one: the stream got no span at all, and `configure()` after Logfire had
    OpenTelemetry print its refusals through Logfire's console."""
    launcher = order == "launcher"
    env = stream.env(OTEL_SERVICE_NAME="lfapp", **EXPORTERS, **(LAUNCHER_ENV if launcher else {}))
    if not launcher:
        env["LOGFIRE_APP_CONFIGURE"] = order
    output = _serve_logfire(env, launcher)
    assert logfire_alone[0] == "GET /hello ? name='world'", logfire_alone
    assert _logfires_console(output) == logfire_alone, output
    assert "Overriding of current" not in output, output
    spans = wait_for(lambda: _named(stream, "GET /hello", "Greeting {name}"), what="Logfire's spans")
    request, greeting = spans["GET /hello"], spans["Greeting {name}"]
    assert greeting.trace_id == request.trace_id and request.service == "lfapp"
    [record] = wait_for(
        lambda: [e for e in stream.logs() if e.body == "stdlib warning in request for world"],
        what="the stdlib record",
    )
    assert record.trace_id == greeting.trace_id
    said = [line for line in output.splitlines() if line.startswith("tracestream:")]
    if order == "after":  # the one line: the FastAPI app Logfire instrumented gets no request records
        assert len(said) == 1 and said[0].startswith("tracestream: WARNING the FastAPI app 'FastAPI'"), said
    else:  # the tracer line goes on about the HTTP names, as the SDK provider's does
        assert len(said) == 2 and said[0].startswith(LATER_LOGFIRE) and said[1] == LATER_LOGFIRE_LOGS, said


def _named(stream: RedisHandle, *names: str) -> dict[str, SpanEntry] | None:
    """The stream's spans by name, once it holds each of `names`."""
    spans = {span.name: span for span in stream.spans()}
    return spans if set(names) <= spans.keys() else None


def _seeded_jobs(env: dict[str, str], *args: str, launcher: bool = False) -> list[dict[str, Any]]:
    done = run_python_process(ROOT / "tests" / "apps" / "seeded_jobs.py", env, launcher=launcher, args=args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _numbers(jobs: list[dict[str, Any]]) -> list[tuple[str, str, list[int]]]:
    return sorted((job["role"], job["job"], job["numbers"]) for job in jobs)


def _ids(jobs: list[dict[str, Any]], key: str = "trace_id") -> set[str]:
    return {job[key] for job in jobs}


@pytest.mark.parametrize("setup", ["configure", "launcher", "launcher-after-upstreams-configurator"])
def test_an_app_that_seeds_random_draws_its_own_numbers_and_gets_distinct_trace_ids(
    stream: RedisHandle, setup: str
) -> None:
    """The SDK's default ids come from the global `random`: each job of an app that seeds it made
    the same trace and span ids (one merged trace in the stream), and its own numbers changed as
    each span drew from its sequence. Forked, parent and child each get ids of their own."""
    bare = _seeded_jobs(RedisHandle(stream.url, "unused").env(), "--fork")
    launcher = setup != "configure"
    extra = UPSTREAM_FIRST if setup.endswith("configurator") else LAUNCHER_ENV if launcher else {}
    env = stream.env(OTEL_SERVICE_NAME="seeded", **EXPORTERS, **extra)
    args = ("--fork",) if launcher else ("--fork", "--configure")
    first, second = (_seeded_jobs(env, *args, launcher=launcher) for _ in range(2))
    assert _numbers(first) == _numbers(bare) == _numbers(second)
    for run in first, second:
        assert len(_ids(run)) == len(_ids(run, "span_id")) == len(run) == 5, run
    assert not _ids(first) & _ids(second)
    parents = {job["trace_id"] for job in first + second if job["role"] == "parent"}
    wait_for(lambda: {span.trace_id for span in stream.spans()} >= parents, what="a trace for each job")
