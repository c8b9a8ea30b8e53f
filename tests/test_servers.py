"""FastAPI's own tutorial apps under uvicorn, gunicorn (`UvicornWorker`), hypercorn and granian.

Each server runs an app twice with the same requests: bare, then with `configure()`
called from the app module (tests/apps/fastapi_docs/main.py, the Bigger Applications
tutorial; tests/apps/fastapi_background.py, the Background Tasks one;
tests/apps/fastapi_websockets.py, the WebSockets one). What the server prints must not
change; what reaches the private Redis is read back and checked.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import pytest

from tests.apps.http_checks import HTTP_SCOPE, request_record
from tests.apps.servers import Server, bin_path, http_ready, printed, run_json, serve
from tests.apps.websocket_client import Session, converse
from tests.support import RedisHandle, wait_for
from tracestream.embedded_redis import EmbeddedRedis, free_port

APP = "tests.apps.fastapi_docs.main:app"
BACKGROUND_APP = "tests.apps.fastapi_background:app"
APP_LOGGER = "tests.apps.fastapi_docs.routers.items"
# Every route wants the query token; /items wants the header token too.
QUERY = {"token": "jessica"}
HEADERS = {"x-token": "fake-super-secret-token"}
FAILURE = "RuntimeError: warehouse unreachable while restocking plumbus"
ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access", "hypercorn.access", "granian.access")
T = TypeVar("T")


@dataclass(frozen=True)
class ServerKind:
    command: Callable[[str, int], list[str]]  # app, port
    ready_line: str  # printed once the server accepts requests
    error_line: str  # what the server logs for an exception the app raised


SERVERS = {
    "uvicorn": ServerKind(
        lambda app, port: [bin_path("uvicorn"), app, "--port", str(port)],
        "Uvicorn running on",
        "Exception in ASGI application",
    ),
    "gunicorn": ServerKind(
        # The master's control-socket line races the worker's boot lines; the rest are defaults.
        lambda app, port: [
            bin_path("gunicorn"),
            app,
            "-k",
            "uvicorn.workers.UvicornWorker",
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            "-",
            "--no-control-socket",
        ],
        "Application startup complete.",
        "Exception in ASGI application",
    ),
    "granian": ServerKind(
        lambda app, port: [
            bin_path("granian"),
            app,
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--access-log",
        ],
        "Started worker-1",
        "Application callable raised an exception",
    ),
    "hypercorn": ServerKind(
        lambda app, port: [
            bin_path("hypercorn"),
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            "-",
        ],
        "Running on",
        "Error in ASGI Framework",
    ),
}


@dataclass(frozen=True)
class Run:
    output: str  # what the server printed, through the last request's access line
    item: httpx.Response  # GET /items/plumbus: logs a line
    failure: httpx.Response  # POST /items/plumbus/restock: raises


@dataclass(frozen=True)
class Runs(Generic[T]):
    """An app's run under one server without tracestream, then with it, on one stream."""

    kind: ServerKind
    stream: RedisHandle
    bare: T
    traced: T


@contextlib.contextmanager
def serve_app(
    kind: ServerKind, app: str, stream: RedisHandle, traced: bool, **env: str
) -> Iterator[tuple[Server, str]]:
    """`app` under the server, bare or with `configure()` switched on in its module; and its URL."""
    port = free_port()
    switch = {"FASTAPI_DOCS_TRACESTREAM": "1"} if traced else {}
    environment = stream.env(PYTHONUNBUFFERED="1", **env, **switch)
    with serve(
        kind.command(app, port), environment, lambda server: printed(server, kind.ready_line)
    ) as server:
        yield server, f"http://127.0.0.1:{port}"


def run_app(kind: ServerKind, stream: RedisHandle, traced: bool) -> Run:
    with serve_app(kind, APP, stream, traced, OTEL_SERVICE_NAME="docs") as (server, base):
        # a connection each: a server may close one after an unhandled exception
        item = httpx.get(f"{base}/items/plumbus", params=QUERY, headers=HEADERS)
        failure = httpx.post(f"{base}/items/plumbus/restock", params=QUERY, headers=HEADERS)
        httpx.get(f"{base}/users/me", params=QUERY)
        output = wait_for(
            lambda: server.output() if printed(server, '"GET /users/me') else "",
            what="the access line of the last request",
        )
    assert (item.status_code, failure.status_code) == (200, 500)
    return Run(output, item, failure)


@pytest.fixture(scope="module", params=sorted(SERVERS))
def runs(request: pytest.FixtureRequest, redis_server: EmbeddedRedis) -> Iterator[Runs[Run]]:
    kind = SERVERS[request.param]
    stream = RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    yield Runs(kind, stream, run_app(kind, stream, traced=False), run_app(kind, stream, traced=True))


def test_request_record_and_app_line_in_one_trace(runs: Runs[Run]) -> None:
    assert "x-trace-id" not in runs.bare.item.headers  # the bare run really is bare
    record = request_record(runs.stream, runs.traced.item)
    assert (record.body.split(" (")[0], record.severity, record.service) == (
        "GET /items/plumbus 200",
        "INFO",
        "docs",
    )
    assert record.attributes["http.route"] == "/items/{item_id}"
    lines = [e for e in runs.stream.logs() if e.scope == APP_LOGGER]
    assert [(e.body, e.trace_id, e.span_id) for e in lines] == [
        ("looking up item plumbus", record.trace_id, record.span_id)
    ]


def test_no_duplicate_records(runs: Runs[Run]) -> None:
    for response in (runs.traced.item, runs.traced.failure):
        request_record(runs.stream, response)  # exactly one each
    entries = runs.stream.logs()
    # a line taken twice would carry two record ids but one creation time
    lines = [(e.scope, e.body, e.timestamp_ns) for e in entries]
    assert len(lines) == len(set(lines)) == len({e.record_id for e in entries})
    assert len([e for e in entries if e.scope == HTTP_SCOPE]) == 3
    errors = [(e.scope, e.body.split(" (")[0]) for e in entries if e.severity == "ERROR"]
    assert errors == [(HTTP_SCOPE, "POST /items/plumbus/restock 500")]


def test_access_line_is_printed_but_not_in_the_stream(runs: Runs[Run]) -> None:
    assert [line for line in runs.traced.output.splitlines() if '"GET /items/plumbus' in line]
    entries = runs.stream.logs()
    assert not [e for e in entries if e.scope in ACCESS_LOGGERS]
    mentions = [e.scope for e in entries if "GET /items/plumbus" in e.body]
    assert mentions == [HTTP_SCOPE]


def test_a_500_prints_what_it_prints_without_tracestream(runs: Runs[Run]) -> None:
    printed_lines = runs.traced.output.splitlines()
    assert any(runs.kind.error_line in line for line in printed_lines)
    assert FAILURE in printed_lines
    assert_prints_as_bare(runs.traced.output, runs.bare.output)
    # printed, yet kept out of the stream: the request record carries the exception
    assert not [e for e in runs.stream.logs() if runs.kind.error_line in e.body]
    record = request_record(runs.stream, runs.traced.failure)
    assert f"{record.exception_type}: {record.exception_message}" == FAILURE
    assert "in restock_item" in record.exception_stacktrace


def test_a_500_span_keeps_what_stock_otel_records(runs: Runs[Run], stock_failed_span: dict[str, Any]) -> None:
    trace_id = runs.traced.failure.headers["x-trace-id"]
    spans = wait_for(
        lambda: [s for s in runs.stream.spans() if s.trace_id == trace_id and s.kind == "SERVER"],
        what="the failed request's server span",
    )
    assert len(spans) == 1
    assert failure_view(spans[0].status, spans[0].status_message, spans[0].events) == stock_failed_span
    assert stock_failed_span["status"] == "ERROR" and len(stock_failed_span["events"]) == 1


MAIL_SERVER_DELAY = 1.0  # seconds each background task takes
BOUNCE = "ValueError: mailbox unavailable: bounce@example.com"


@dataclass(frozen=True)
class BackgroundRun:
    output: str  # what the server printed, through its exit
    bounced: httpx.Response  # its background task raises
    sent: httpx.Response  # the server is stopped while its background task runs


def run_background_app(kind: ServerKind, stream: RedisHandle, traced: bool, log: str) -> BackgroundRun:
    env = {
        "OTEL_SERVICE_NAME": "mailer",
        "MAIL_SERVER_DELAY": str(MAIL_SERVER_DELAY),
        "NOTIFICATION_LOG": log,
    }
    with serve_app(kind, BACKGROUND_APP, stream, traced, **env) as (server, base):
        bounced = httpx.post(f"{base}/send-notification/bounce@example.com")
        wait_for(lambda: printed(server, BOUNCE), what="the failed background task's traceback")
        sent = httpx.post(f"{base}/send-notification/rick@example.com")
        wait_for(lambda: printed(server, '"POST /send-notification/rick'), what="the access line")
        server.stop()  # while the task runs: uvicorn waits for it, hypercorn cancels it
        output = server.output()
    assert (bounced.status_code, sent.status_code) == (200, 200)
    return BackgroundRun(output, bounced, sent)


@pytest.fixture(scope="module", params=sorted(SERVERS))
def background_runs(
    request: pytest.FixtureRequest, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Runs[BackgroundRun]:
    kind = SERVERS[request.param]
    stream = RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    log = str(tmp_path_factory.mktemp("mail") / "log.txt")
    bare = run_background_app(kind, stream, traced=False, log=log)
    return Runs(kind, stream, bare, run_background_app(kind, stream, traced=True, log=log))


def test_the_request_record_goes_out_with_the_response(background_runs: Runs[BackgroundRun]) -> None:
    """Written before the background task runs: it times what the client waited for, and a
    server stopped right after the response cannot lose it."""
    record = request_record(background_runs.stream, background_runs.traced.sent)
    assert record.body.startswith("POST /send-notification/rick@example.com 200 (")
    assert (record.severity, record.exception_type) == ("INFO", "")
    assert record.attributes["http.server.duration_ms"] < MAIL_SERVER_DELAY * 1000


def test_a_failed_background_task_gets_an_error_record_in_the_request_trace(
    background_runs: Runs[BackgroundRun],
) -> None:
    runs = background_runs
    record = request_record(runs.stream, runs.traced.bounced)
    assert (record.severity, record.exception_type) == ("INFO", "")
    errors = [e for e in runs.stream.logs() if e.trace_id == record.trace_id and e.severity == "ERROR"]
    assert [(e.body, f"{e.exception_type}: {e.exception_message}") for e in errors] == [
        ("POST /send-notification/bounce@example.com: exception after the response was sent", BOUNCE)
    ]
    assert "in write_notification" in errors[0].exception_stacktrace
    assert errors[0].attributes["http.route"] == "/send-notification/{email}"
    # the server prints what it prints without tracestream; its line is kept out of the stream
    assert_prints_as_bare(runs.traced.output, runs.bare.output)
    assert runs.kind.error_line in runs.traced.output
    assert not [e for e in runs.stream.logs() if runs.kind.error_line in e.body]


def test_uvicorn_workers_flush_what_they_log_while_shutting_down(stream: RedisHandle) -> None:
    """Under `--workers` (and `--reload`) uvicorn loads the app, and so `configure()`, inside its
    own signal handling: after its graceful shutdown it puts the default action back and
    raises SIGTERM again, and the worker dies without `atexit`."""
    port = free_port()
    command = [bin_path("uvicorn"), APP, "--port", str(port), "--workers", "2"]
    env = stream.env(PYTHONUNBUFFERED="1", OTEL_SERVICE_NAME="docs", FASTAPI_DOCS_TRACESTREAM="1")

    def both_workers_ready(server: Server) -> bool:
        return server.output().count("Application startup complete.") == 2

    with serve(command, env, both_workers_ready) as server:
        item = httpx.get(f"http://127.0.0.1:{port}/items/plumbus", params=QUERY, headers=HEADERS)
        server.stop()
        assert server.output().count("Finished server process") == 2
    request_record(stream, item)
    bodies = [e.body for e in stream.logs()]
    for line in ("Waiting for application shutdown.", "Application shutdown complete."):
        assert bodies.count(line) == 2, bodies
    assert len([b for b in bodies if b.startswith("Finished server process")]) == 2, bodies


def test_ctrl_c_under_reload_shuts_the_app_down_as_without_tracestream(
    stream: RedisHandle, tmp_path: Path
) -> None:
    """Ctrl-C reaches uvicorn's reloader and its server process alike, and the reloader then
    sends the server SIGTERM. Our SIGINT handler flushed before it handed Ctrl-C on, the SIGTERM
    reached uvicorn first meanwhile, and uvicorn took the Ctrl-C after it for a second one: it
    quit at once, without the app's lifespan shutdown or the requests in flight (10 runs in 12)."""
    env = stream.env(
        PYTHONUNBUFFERED="1",
        OTEL_SERVICE_NAME="reload",
        FASTAPI_DOCS_TRACESTREAM="1",
        TRACESTREAM_BATCH_DELAY_MS="60000",  # what the requests logged waits for Ctrl-C's flush
    )
    for _ in range(3):
        port = free_port()
        command = [bin_path("uvicorn"), APP, "--port", str(port), "--reload", "--reload-dir", str(tmp_path)]
        with serve(command, env, http_ready(f"http://127.0.0.1:{port}/docs")) as server:
            item = httpx.get(f"http://127.0.0.1:{port}/items/plumbus", params=QUERY, headers=HEADERS)
            with ThreadPoolExecutor(30) as callers:  # records to flush as Ctrl-C comes
                for _ in range(30):
                    callers.submit(
                        httpx.get, f"http://127.0.0.1:{port}/items/plumbus", params=QUERY, headers=HEADERS
                    )
                wait_for(lambda: server.output().count("GET /items/plumbus") > 10, what="requests in flight")
                os.killpg(server.process.pid, signal.SIGINT)
            server.process.wait(15)
            output = server.output()
        assert output.count("Finished server process") == 1, output
        assert output.count("Application shutdown complete.") == 1, output
        request_record(stream, item)


SOCKET_APP = "tests.apps.fastapi_websockets:app"
SOCKET_ROUTE = "/items/{item_id}/ws"
DISCONNECT = "starlette.websockets.WebSocketDisconnect"


@dataclass(frozen=True)
class SocketRun:
    output: str  # what the server printed, through its exit
    refused: Session  # no token: the tutorial's dependency refuses the socket
    session: Session  # a message, then the client leaves: the endpoint raises WebSocketDisconnect


def run_socket_app(kind: ServerKind, stream: RedisHandle, traced: bool) -> SocketRun:
    with serve_app(kind, SOCKET_APP, stream, traced, OTEL_SERVICE_NAME="sockets") as (server, base):
        port = int(base.rsplit(":", 1)[1])
        refused = converse(port, "/items/foo/ws", [], replies_each=0)
        session = converse(port, "/items/foo/ws?token=some-token&q=3", ["hello"], replies_each=3)
        wait_for(lambda: printed(server, kind.error_line), what="the server's traceback of the ended session")
        server.stop()
        output = server.output()
    return SocketRun(output, refused, session)


@pytest.fixture(scope="module", params=sorted(SERVERS))
def socket_runs(request: pytest.FixtureRequest, redis_server: EmbeddedRedis) -> Runs[SocketRun]:
    kind = SERVERS[request.param]
    stream = RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    return Runs(kind, stream, run_socket_app(kind, stream, False), run_socket_app(kind, stream, True))


def test_a_websocket_session_that_ends_in_an_exception_is_an_error_in_its_trace(
    socket_runs: Runs[SocketRun],
) -> None:
    """The server logs the exception after the socket's span ended: without this record,
    its ERROR line would reach the stream tied to no trace."""
    runs = socket_runs
    assert runs.traced.session.replies == [
        "Session cookie or query token value is: some-token",
        "Query parameter q is: 3",
        "Message text was: hello, for item ID: foo",
    ]
    assert (runs.traced.session, runs.traced.refused) == (runs.bare.session, runs.bare.refused)
    errors = wait_for(
        lambda: [e for e in runs.stream.logs() if e.severity == "ERROR"], what="the session's ERROR record"
    )
    assert [(e.body, e.exception_type, e.attributes["event.name"]) for e in errors] == [
        ("WebSocket /items/foo/ws: the session ended in an exception", DISCONNECT, "websocket.server.error")
    ]
    assert errors[0].attributes["http.route"] == SOCKET_ROUTE
    spans = wait_for(
        lambda: [s for s in runs.stream.spans() if s.trace_id == errors[0].trace_id and s.kind == "SERVER"],
        what="the socket's server span",
    )
    assert [(s.span_id, s.status) for s in spans] == [(errors[0].span_id, "ERROR")]
    # the server prints what it prints without tracestream; its line is kept out of the stream
    assert_prints_as_bare(runs.traced.output, runs.bare.output)
    assert runs.kind.error_line in runs.traced.output
    assert not [e for e in runs.stream.logs() if runs.kind.error_line in e.body]


STOCK_OTEL = f"""
import json
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.testclient import TestClient
from tests.apps.fastapi_docs.main import app

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
response = TestClient(app, raise_server_exceptions=False).post(
    "/items/plumbus/restock", params={QUERY!r}, headers={HEADERS!r}
)
assert response.status_code == 500, response
[span] = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
events = [{{"name": e.name, "attributes": dict(e.attributes)}} for e in span.events]
print(json.dumps({{"status": span.status.status_code.name, "status_message": span.status.description or "",
                  "events": events}}))
"""


@pytest.fixture(scope="module")
def stock_failed_span() -> dict[str, Any]:
    """The failed request's span under the contrib instrumentation alone, in process."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACESTREAM_", "FASTAPI_DOCS_"))
    }
    return failure_view(**run_json(STOCK_OTEL, env))


def failure_view(status: str, status_message: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Status and events; a stacktrace as its last line, since the frames above the app differ."""
    shown = []
    for event in events:
        attributes = dict(event["attributes"])
        stacktrace = str(attributes.pop("exception.stacktrace", ""))
        shown.append({**attributes, "name": event["name"], "last line": stacktrace.strip().splitlines()[-1:]})
    return {"status": status, "status_message": status_message, "events": shown}


_PID = re.compile(r"\[(\d+)\]")
# granian's worker names itself, not its pid, as it stops; its main process says it shuts down
# at the same signal
_WORKER_STOPPING = re.compile(r"\] (Stopping worker-\d+)$")
# and says the worker's exit was unexpected where the worker, sent the group's SIGTERM too, was
# gone before it got to stopping it: a race of the two processes, bare as traced (1 run in ~10)
_WORKER_GONE_FIRST = re.compile(r"\[ERROR\] Unexpected exit from worker-\d+$")
_VOLATILE = (
    (re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\]"), "[time]"),
    (re.compile(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"), "[time]"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:port"),
    (re.compile(r"\[\d+\]|\(\d+\)|pid: ?\d+", re.IGNORECASE), "[pid]"),
    (re.compile(r'(" \d{3}) \d+\.\d{3}$'), r"\1 [ms]"),  # granian's access line ends with the duration
)


def assert_prints_as_bare(traced: str, bare: str) -> None:
    """What the server printed traced is what it printed bare; both in full if not, since a
    difference that comes once in many runs is read from CI's log alone."""
    assert terminal_text(traced) == terminal_text(bare), f"traced:\n{traced}\nbare:\n{bare}"


def terminal_text(output: str) -> list[list[str]]:
    """Each process's lines, in order: gunicorn's master and worker (granian's) print side by
    side, and which prints first at a signal sent to both is a race. Without timestamps, ports, pids,
    client addresses and the traceback frames outside the app: the middleware between server
    and app is deeper when instrumented."""
    by_process: dict[str, list[str]] = {}
    process = ""
    outside_the_app = False
    for line in output.splitlines():
        if line.startswith('  File "'):
            outside_the_app = "/tests/apps/" not in line
        elif not line.startswith("    "):
            outside_the_app = False
        if pid := _PID.search(line):
            process = pid.group(1)  # a line without one is the last named process's
        if stopping := _WORKER_STOPPING.search(line):
            by_process.setdefault(stopping.group(1), []).append(line)
        elif _WORKER_GONE_FIRST.search(line):
            continue
        elif not outside_the_app:
            for pattern, replacement in _VOLATILE:
                line = pattern.sub(replacement, line)
            by_process.setdefault(process, []).append(line)
    return sorted(by_process.values())
