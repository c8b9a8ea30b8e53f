"""Apps tracestream writes no request record for: a request record stands for a server's
access line only where one is written, so these apps' requests reach the stream as the lines
their servers log, once each, in the request's trace when the launcher traced it."""

from __future__ import annotations

import httpx
import pytest

from tests.apps.servers import bin_path, http_ready, launched, serve
from tests.support import RedisHandle, wait_for
from tracestream.embedded_redis import free_port

# Starlette's README app under the launcher (which traces it with the contrib Starlette
# instrumentation that `opentelemetry-bootstrap` installs), with each server's access log on,
# and with uvicorn's level above it: the stream's level is its own.
SERVERS = {
    "uvicorn": (["uvicorn", "tests.apps.starlette_docs:app", "--port", "{port}"], "uvicorn.access"),
    "uvicorn-quiet": (
        ["uvicorn", "tests.apps.starlette_docs:app", "--port", "{port}", "--log-level", "warning"],
        "uvicorn.access",
    ),
    "hypercorn": (
        ["hypercorn", "tests.apps.starlette_docs:app", "--bind", "127.0.0.1:{port}", "--access-logfile", "-"],
        "hypercorn.access",
    ),
}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_a_starlette_apps_requests_are_its_servers_access_lines(stream: RedisHandle, server: str) -> None:
    command, access_logger = SERVERS[server]
    port = free_port()
    env = stream.env(
        OTEL_SERVICE_NAME="starlette", OTEL_LOGS_EXPORTER="redis_stream", OTEL_TRACES_EXPORTER="redis_stream"
    )
    argv = [bin_path(command[0]), *(part.format(port=port) for part in command[1:])]
    with serve(launched(*argv), env, http_ready(f"http://127.0.0.1:{port}/")) as running:
        assert httpx.get(f"http://127.0.0.1:{port}/").json() == {"hello": "world"}
        assert httpx.get(f"http://127.0.0.1:{port}/missing").status_code == 404
        lines = wait_for(
            lambda: [e for e in stream.logs() if e.scope == access_logger and "GET /missing" in e.body],
            what="the 404's access line in the stream",
        )
        running.stop()
        assert ("GET /missing" in running.output()) is (server != "uvicorn-quiet")
    root_lines = [e for e in stream.logs() if e.scope == access_logger and "GET / " in e.body]
    assert len(lines) == 1 and len(root_lines) >= 1, [e.body for e in stream.logs()]
    traced = {s.trace_id for s in stream.spans() if s.kind == "SERVER"}
    assert lines[0].trace_id in traced and all(e.trace_id in traced for e in root_lines)


def test_a_fastapi_apps_access_lines_stay_out_under_a_quieter_server(stream: RedisHandle) -> None:
    """The request record stands for the line the app's level skips: it is neither printed
    nor in the stream, and the record is."""
    port = free_port()
    env = stream.env(
        OTEL_SERVICE_NAME="api", OTEL_LOGS_EXPORTER="redis_stream", OTEL_TRACES_EXPORTER="redis_stream"
    )
    command = [
        bin_path("uvicorn"),
        "tests.apps.zero_code_api:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with serve(launched(*command), env, http_ready(f"http://127.0.0.1:{port}/missing")) as running:
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
        wait_for(
            lambda: [e for e in stream.logs() if e.body.startswith("GET / 200")], what="the request record"
        )
        running.stop()
        assert "GET / " not in running.output() and "Started server process" not in running.output()
    assert not [e for e in stream.logs() if e.scope == "uvicorn.access"]
