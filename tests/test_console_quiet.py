"""A console mounted into an instrumented app keeps its own requests out of the stream it shows.

A real FastAPI app configured with `configure()`, under uvicorn, also serving a route of its own
whose span and request record prove the app is traced (Django's: tests/test_console_mount.py).
"""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest

from tests.support import ROOT, RedisHandle, wait_for
from tracestream.embedded_redis import free_port

PREFIX = "/monitoring/realtime-logs"
# `configure()` before or after FastAPI is imported: the app class is then contrib's subclass, or ours.
FASTAPI_APP = """
import sys
import uvicorn
from tracestream import configure

if sys.argv[2] == "configure-first":
    configure(service_name="fastapi-host")
from fastapi import FastAPI
from tracestream.console.fastapi_mount import mount

configure(service_name="fastapi-host")  # returns the first call's, if any
app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "world"}


mount(app, dependencies=[])  # an app only its operators reach
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
# The console's pages, assets and API (a record it does not have among them), as (path, status).
CONSOLE_REQUESTS = {
    "/": 200,
    "/search": 200,
    "/static/console.js": 200,
    "/api/search?text=x": 200,
    "/api/services": 200,
    "/api/record/1-0": 404,
}


def telemetry_of(stream: RedisHandle) -> str:
    """Every span and record in the stream, as one text to search."""
    spans = [f"{span.name} {span.attributes}" for span in stream.spans()]
    logs = [f"{entry.body} {entry.attributes}" for entry in stream.logs()]
    return "\n".join(spans + logs)


@pytest.mark.parametrize("order", ["configure-first", "fastapi-first"])
def test_fastapi_mounted_console_requests_leave_no_span_or_record(stream: RedisHandle, order: str) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", FASTAPI_APP, str(port), order],
        env=stream.env(),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            assert server.poll() is None, server.stderr and server.stderr.read()
            try:
                return httpx.get(base + "/hello").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, timeout=20, what="the FastAPI app")
        with httpx.Client(base_url=base + PREFIX) as client:
            assert {path: client.get(path).status_code for path in CONSOLE_REQUESTS} == CONSOLE_REQUESTS
            assert httpx.get(base + PREFIX).status_code == 308
            with client.stream("GET", "/api/live") as live:
                assert next(live.iter_text()).startswith("retry:")
    finally:
        server.send_signal(signal.SIGTERM)  # flushes what the app wrote, then ends by the signal
        server.wait(20)
    assert server.returncode in (0, -signal.SIGTERM), server.stderr and server.stderr.read()
    written = telemetry_of(stream)
    assert "GET /hello" in written and "/hello 200" in written, "the app's own request is traced"
    assert PREFIX not in written
