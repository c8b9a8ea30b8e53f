"""FastAPI end to end: uvicorn (--workers 2 for the main app) in a subprocess, records read back
from Redis; apps that call configure() as they start, CORS, and FastAPI's own telemetry settings."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.util import find_spec

import httpx
import pytest
from fastapi import HTTPException

from tests.apps.http_checks import HTTP_SCOPE, check_ok_record, is_request_record, request_record
from tests.apps.servers import Server, bin_path, http_ready, launched, printed, serve
from tests.support import RedisHandle, run_python, run_python_process, wait_for
from tests.test_servers import assert_prints_as_bare
from tracestream.embedded_redis import EmbeddedRedis, free_port


@pytest.fixture(scope="module")
def api_stream(redis_server: EmbeddedRedis) -> RedisHandle:
    return RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def api(api_stream: RedisHandle) -> Iterator[tuple[str, Server]]:
    """configure() runs at import, after the app exists, in each of two spawned workers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [bin_path("uvicorn"), "tests.apps.fastapi_app:app", "--port", str(port), "--workers", "2"]
    with serve(command, api_stream.env(OTEL_SERVICE_NAME="api"), http_ready(f"{base}/items/0")) as server:
        yield base, server


def test_request_record_fields_inside_the_request_trace(
    api: tuple[str, Server], api_stream: RedisHandle
) -> None:
    base, _ = api
    response = httpx.get(f"{base}/items/7", headers={"user-agent": "e2e-agent/1.0"})
    assert response.status_code == 200
    record = request_record(api_stream, response)
    assert record.service == "api"
    span = check_ok_record(api_stream, record, response, "/items/{item_id}", "e2e-agent/1.0")
    assert span.name == "GET /items/{item_id}"
    # the app's own log line sits in the same span
    app_lines = [e for e in api_stream.logs() if e.trace_id == record.trace_id and e.scope == "shop.items"]
    assert [(e.body, e.span_id) for e in app_lines] == [("reading item 7", record.span_id)]


def test_levels_follow_status_and_500_carries_the_exception(
    api: tuple[str, Server], api_stream: RedisHandle
) -> None:
    base, server = api
    not_found = httpx.get(f"{base}/items/404")
    assert not_found.status_code == 404
    assert request_record(api_stream, not_found).severity == "WARN"

    boom = httpx.get(f"{base}/boom")
    assert boom.status_code == 500
    record = request_record(api_stream, boom)
    assert record.severity == "ERROR"
    assert record.attributes["http.response.status_code"] == 500
    assert (record.exception_type, record.exception_message) == ("RuntimeError", "kaboom")
    assert "in boom" in record.exception_stacktrace
    # one ERROR record for the failure: uvicorn's "Exception in ASGI application" is not added
    errors = [e for e in api_stream.logs() if e.trace_id == record.trace_id and e.severity == "ERROR"]
    assert errors == [record]
    # the exception goes on as without tracestream: onto the span, and uvicorn prints it
    spans = wait_for(
        lambda: [s for s in api_stream.spans() if s.trace_id == record.trace_id and s.kind == "SERVER"],
        what="the failed request's server span",
    )
    events = [(e["name"], e["attributes"]) for e in spans[0].events]
    assert [(name, a["exception.type"], a["exception.message"]) for name, a in events] == [
        ("exception", "RuntimeError", "kaboom")
    ]
    assert spans[0].status == "ERROR" and "in boom" in events[0][1]["exception.stacktrace"]
    wait_for(lambda: printed(server, "RuntimeError: kaboom"), what="uvicorn's traceback")
    assert "Exception in ASGI application" in server.output()


def test_a_5xx_the_app_answered_itself_carries_the_exception_it_logged(
    api: tuple[str, Server], api_stream: RedisHandle
) -> None:
    """One failure, one error issue with its route: the app's handler logged the exception and
    answered 502, and the request record carries what it logged."""
    base, _ = api
    response = httpx.get(f"{base}/pay/3")
    assert response.status_code == 502
    record = request_record(api_stream, response)
    assert (record.severity, record.exception_message) == ("ERROR", "order 3: the provider timed out")
    assert record.exception_type.endswith("PaymentDeclined")
    logged = wait_for(
        lambda: [e for e in api_stream.logs() if e.trace_id == record.trace_id and e.scope == "shop.items"],
        what="the app's own line",
    )
    assert [(e.body, e.fingerprint) for e in logged] == [("payment failed", record.fingerprint)]


def test_a_5xx_an_exception_handler_answered_carries_its_exception(
    api: tuple[str, Server], api_stream: RedisHandle
) -> None:
    """`HTTPException(503)` is answered by FastAPI's handler and logged by no one: the record
    says why, and the failure is one issue whatever the path's SKU."""
    base, server = api
    records = []
    for sku in ("BOOK-1", "PEN-2"):
        response = httpx.get(f"{base}/stock/{sku}")
        assert response.status_code == 503
        records.append(request_record(api_stream, response))
    said = str(HTTPException(status_code=503, detail="the warehouse is unreachable"))  # "" on Starlette 0.27
    assert [(r.severity, r.exception_message) for r in records] == [("ERROR", said)] * 2
    assert (
        records[0].exception_type.endswith("HTTPException") and "in stock" in records[0].exception_stacktrace
    )
    assert records[0].fingerprint == records[1].fingerprint
    assert "HTTPException" not in server.output()  # nothing printed for it, as without tracestream


# FastAPI's "Middleware" page's X-Process-Time function, and "Handling Errors": a custom
# exception with a handler of its own (answering a 5xx here) and `HTTPException`.
TIMED_ERRORS = """
import time, tracestream
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
telemetry = tracestream.configure()
app = FastAPI()

@app.middleware("http")
async def add_process_time_header(request: Request, call_next):
    start_time = time.perf_counter()
    response = await call_next(request)
    process_time = time.perf_counter() - start_time
    response.headers["X-Process-Time"] = str(process_time)
    return response

class UnicornException(Exception):
    def __init__(self, name: str):
        self.name = name

@app.exception_handler(UnicornException)
async def unicorn_exception_handler(request: Request, exc: UnicornException):
    return JSONResponse(status_code=500, content={"message": f"Oops! {exc.name} did something."})

@app.get("/unicorns/{name}")
async def read_unicorn(name: str):
    raise UnicornException(name=name)

@app.get("/stock")
async def stock():
    raise HTTPException(status_code=503, detail="the warehouse is unreachable")

client = TestClient(app)
print([client.get(path).status_code for path in ("/unicorns/yolo", "/stock")])
telemetry.force_flush()
"""


def test_a_5xx_an_exception_handler_answered_behind_a_function_middleware_carries_its_exception(
    stream: RedisHandle,
) -> None:
    """`@app.middleware("http")` hands the handler's answer on from another task, where the
    exception was over: the ERROR records had no exception, and their issue no type."""
    done = run_python_process(TIMED_ERRORS, stream.env(OTEL_SERVICE_NAME="timed"))
    assert (done.returncode, done.stdout) == (0, "[500, 503]\n"), done.stderr
    records = [e for e in stream.logs() if is_request_record(e)]  # flushed before the process ended
    assert [(r.severity, r.exception_type.rpartition(".")[2]) for r in records] == [
        ("ERROR", "UnicornException"),
        ("ERROR", "HTTPException"),
    ]


def test_a_stream_that_fails_after_its_200_is_an_error(
    api: tuple[str, Server], api_stream: RedisHandle
) -> None:
    """The server's own error line is kept out of the stream, so the record must be the error."""
    base, _ = api
    with httpx.stream("GET", f"{base}/broken-stream") as response:
        assert response.status_code == 200
        with contextlib.suppress(httpx.TransportError):  # the body ends early
            response.read()
    record = request_record(api_stream, response)
    assert (record.severity, record.attributes["http.response.status_code"]) == ("ERROR", 200)
    # as raised: Starlette 0.27 streams in a task group, which raises it inside an ExceptionGroup
    assert "RuntimeError: camera disconnected" in record.exception_stacktrace


def test_every_response_returns_the_trace_id(api: tuple[str, Server]) -> None:
    base, _ = api
    for path, status in (("/items/1", 200), ("/items/404", 404), ("/nowhere", 404), ("/boom", 500)):
        response = httpx.get(f"{base}{path}")
        assert response.status_code == status
        version, trace_id, span_id, flags = response.headers["traceparent"].split("-")
        assert (version, len(span_id), int(flags, 16) & 1) == ("00", 16, 1)  # sampled
        assert trace_id == response.headers["x-trace-id"] and len(trace_id) == 32


def test_a_header_the_app_sets_itself_stays_its_own(api: tuple[str, Server]) -> None:
    base, _ = api
    response = httpx.get(f"{base}/traced-elsewhere")
    assert response.headers.get_list("x-trace-id") == ["the app's own"]
    assert len(response.headers.get_list("traceparent")) == 1


@pytest.mark.parametrize(("path", "route"), [("/plain/bob", "/plain/{name}"), ("/docs", "/docs")])
def test_routes_fastapi_does_not_name_still_have_their_template(
    api: tuple[str, Server], api_stream: RedisHandle, path: str, route: str
) -> None:
    base, _ = api
    response = httpx.get(f"{base}{path}")
    assert response.status_code == 200
    assert request_record(api_stream, response).attributes["http.route"] == route


def test_both_workers_report_and_uvicorn_access_is_not_duplicated(
    api: tuple[str, Server], api_stream: RedisHandle
) -> None:
    base, _ = api

    def two_worker_pids() -> set[object]:
        httpx.get(f"{base}/items/2")
        pids = {e.resource.get("process.pid") for e in api_stream.logs() if e.scope == HTTP_SCOPE}
        return pids if len(pids) >= 2 else set()

    wait_for(two_worker_pids, timeout=15, what="request records from both uvicorn workers")
    entries = api_stream.logs()
    # uvicorn's loggers do not propagate; its startup lines still arrive, once per worker
    startups = [
        e for e in entries if e.scope == "uvicorn.error" and e.body == "Application startup complete."
    ]
    assert len(startups) == 2
    assert not [e for e in entries if e.scope == "uvicorn.access"]
    assert not [e for e in entries if "Exception in ASGI application" in e.body]
    record_ids = [e.record_id for e in entries]
    assert len(record_ids) == len(set(record_ids))


@pytest.mark.parametrize("order", ["configure-then-app", "app-then-configure"])
def test_configure_before_or_after_the_app_is_created(stream: RedisHandle, order: str) -> None:
    make_app = "app = FastAPI()\n@app.get('/hello/{name}')\ndef hello(name: str) -> str:\n    return name\n"
    setup = "telemetry = tracestream.configure()\n"
    body = setup + make_app if order == "configure-then-app" else make_app + setup
    code = (
        "import tracestream\nfrom fastapi import FastAPI\nfrom starlette.testclient import TestClient\n"
        + body
        + "response = TestClient(app).get('/hello/x')\n"
        + "telemetry.force_flush()\nprint(response.headers['x-trace-id'])\n"
    )
    run_python(code, stream.env(OTEL_SERVICE_NAME="ordered"))
    records = wait_for(lambda: [e for e in stream.logs() if e.scope == HTTP_SCOPE], what="the request record")
    assert [e.attributes["http.route"] for e in records] == ["/hello/{name}"]
    spans = wait_for(stream.spans, what="the server span")
    assert [(s.name, s.trace_id) for s in spans] == [("GET /hello/{name}", records[0].trace_id)]


# FastAPI's "Behind a Proxy" example, whose `root_path=` FastAPI 0.16x warns about.
BEHIND_A_PROXY = """
import warnings
warnings.simplefilter("default")
{setup}from fastapi import FastAPI

app = FastAPI(root_path="/api/v1")
print(type(app).__name__)
"""


def test_configure_before_the_app_changes_nothing_fastapi_says_of_it(stream: RedisHandle) -> None:
    """contrib's `instrument()` makes every app of its subclass of FastAPI, whose `__init__` the
    warnings FastAPI gives about the app's own line pointed at."""
    env = stream.env(OTEL_SERVICE_NAME="proxied")
    bare = run_python_process(BEHIND_A_PROXY.format(setup=""), env)
    setup = "import tracestream; tracestream.configure()\n"
    traced = run_python_process(BEHIND_A_PROXY.format(setup=setup), env)
    assert bare.returncode == traced.returncode == 0, traced.stderr
    assert traced.stdout == bare.stdout == "FastAPI\n"
    assert traced.stderr == bare.stderr.replace("<string>:6:", "<string>:7:")  # one line further down
    if "FastAPIDeprecationWarning" in bare.stderr:  # FastAPI 0.16x; the lowest we test does not warn
        assert "<string>:7: FastAPIDeprecationWarning: The `root_path` parameter" in traced.stderr


def test_an_httpx_call_continues_the_callers_trace(
    api: tuple[str, Server], api_stream: RedisHandle, stream: RedisHandle
) -> None:
    """The caller (configured, its own stream) and the service share one trace_id."""
    base, _ = api
    code = (
        "import httpx, tracestream\nfrom opentelemetry import trace\n"
        "telemetry = tracestream.configure()\n"
        "with trace.get_tracer('caller').start_as_current_span('caller') as span:\n"
        f"    httpx.get('{base}/items/5')\n"
        "telemetry.force_flush()\n"
        "print(format(span.get_span_context().trace_id, '032x'))\n"
    )
    run_python(code, stream.env(OTEL_SERVICE_NAME="caller"))
    client_spans = wait_for(lambda: [s for s in stream.spans() if s.kind == "CLIENT"], what="the httpx span")
    trace_id = client_spans[0].trace_id
    served = wait_for(
        lambda: [s for s in api_stream.spans() if s.trace_id == trace_id and s.kind == "SERVER"],
        what="the service's span in the caller's trace",
    )
    assert served[0].parent_span_id == client_spans[0].span_id


def _launched_uvicorn(
    stream: RedisHandle, *options: str
) -> tuple[int, contextlib.AbstractContextManager[Server]]:
    port = free_port()
    command = launched(bin_path("uvicorn"), "tests.apps.fastapi_long_poll:app", "--port", str(port), *options)
    env = stream.env(
        OTEL_SERVICE_NAME="poll", OTEL_LOGS_EXPORTER="redis_stream", OTEL_TRACES_EXPORTER="redis_stream"
    )
    return port, serve(command, env, http_ready(f"http://127.0.0.1:{port}/"))


def test_a_request_the_servers_shutdown_cancels_keeps_its_record(stream: RedisHandle) -> None:
    """uvicorn's graceful shutdown ran out of time and cancelled the request: the client got a
    500, and the record carries the cancellation, as the server's own line does."""
    port, running = _launched_uvicorn(stream, "--timeout-graceful-shutdown", "1")
    with running as server, ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(httpx.get, f"http://127.0.0.1:{port}/updates", timeout=30)
        wait_for(lambda: printed(server, "waiting for updates"), what="the long poll to start")
        server.stop()
        assert waiting.result().status_code == 500
        assert "CancelledError" in server.output()
    [record] = [e for e in stream.logs() if e.scope == HTTP_SCOPE and e.attributes["url.path"] == "/updates"]
    assert (record.severity, record.exception_type) == ("ERROR", "asyncio.exceptions.CancelledError")
    assert not [e for e in stream.logs() if e.body.startswith("Exception in ASGI application")]


UNFINISHED = "tracestream.integrations.http_records.UnfinishedAtExit"
UNFINISHED_WHY = "the process ended while the request was being served"


def _watch(url: str, seen: list[bytes]) -> None:
    """A viewer reading the stream as it comes, until the server goes."""
    with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", url, timeout=30) as response:
        seen.extend(response.iter_raw())


def test_a_stream_the_server_stops_without_waiting_for_keeps_its_record(stream: RedisHandle) -> None:
    """uvicorn cancels the stream as its graceful shutdown runs out, then (from 0.29) dies of the
    SIGTERM before the body ends: the access line is kept out, so the record is all the stream has."""
    port, running = _launched_uvicorn(stream, "--timeout-graceful-shutdown", "1")
    with running as server, ThreadPoolExecutor(1) as pool:
        seen: list[bytes] = []
        watching = pool.submit(_watch, f"http://127.0.0.1:{port}/video", seen)
        wait_for(lambda: seen, what="the video's first bytes")
        server.stop()
        # uvicorn from 0.29 dies of the signal (it has the record written as the process ends);
        # older ones end normally, once asyncio has cancelled the body
        assert server.process.returncode in (-signal.SIGTERM, 0)
        watching.result()
    records = [e for e in stream.logs() if e.scope == HTTP_SCOPE and e.attributes["url.path"] == "/video"]
    assert [(e.severity, e.attributes["http.response.status_code"]) for e in records] == [("ERROR", 200)]
    assert records[0].attributes["http.response.body.size"] >= len(seen[0]) > 0 and records[0].trace_id != ""
    # the cancellation may reach the body before the process dies, or not
    assert records[0].exception_type in (UNFINISHED, "asyncio.exceptions.CancelledError")
    # and its span is written either way: contrib's, ended by the cancellation or, where that
    # never reached it, as the process ends, as an error (`traces --errors` finds it)
    trace_id = records[0].trace_id
    [span] = wait_for(lambda: [s for s in stream.spans() if s.trace_id == trace_id], what="its span")
    assert (span.kind, span.name) == ("SERVER", "GET /video")
    if records[0].exception_type == UNFINISHED:
        assert (span.status, span.status_message) == ("ERROR", "UnfinishedAtExit: " + UNFINISHED_WHY)


def test_pipelined_requests_each_get_their_record_and_headers(stream: RedisHandle) -> None:
    """uvicorn starts a pipelined request inside the last one's context. (So contrib opens its
    span as a child of the last request's, in that trace, as without us: uvicorn's
    `--reset-contextvars` gives each its own.)"""
    port, running = _launched_uvicorn(stream)
    with running, socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: pipelined\r\n\r\n" * 3)
        answers = b""
        while answers.count(b"Hello World") < 3:
            answers += client.recv(65536)
        span_ids = {
            found.decode() for found in re.findall(rb"traceparent: 00-[0-9a-f]{32}-([0-9a-f]{16})", answers)
        }
        assert len(span_ids) == 3, answers
        wait_for(
            lambda: span_ids <= {e.span_id for e in stream.logs() if e.scope == HTTP_SCOPE},
            what="the three requests' records",
        )


@dataclass(frozen=True)
class StartupApp:
    """A docs app that calls configure() as it starts, when FASTAPI_DOCS_TRACESTREAM is set."""

    target: str
    ok: str  # a path it serves
    failing: str  # a path whose handler raises
    failure: str  # the exception's last traceback line
    failing_function: str


STARTUP_APPS = {
    "lifespan": StartupApp(
        "tests.apps.fastapi_lifespan:app", "/predict?x=2", "/forecast?x=2", "KeyError: 'forecast'", "forecast"
    ),
    "on_event": StartupApp(
        "tests.apps.fastapi_startup:app", "/items/foo", "/items/baz", "KeyError: 'baz'", "read_items"
    ),
}


@dataclass(frozen=True)
class StartupRun:
    output: str  # everything uvicorn printed, through its exit
    ok: httpx.Response
    failed: httpx.Response


def run_startup_app(app: StartupApp, stream: RedisHandle, traced: bool) -> StartupRun:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    switch = {"FASTAPI_DOCS_TRACESTREAM": "1"} if traced else {}
    env = stream.env(PYTHONUNBUFFERED="1", OTEL_SERVICE_NAME="startup", **switch)
    command = [bin_path("uvicorn"), app.target, "--port", str(port)]
    with serve(command, env, lambda server: printed(server, "Uvicorn running on")) as server:
        # a connection each: a server may close one after an unhandled exception
        ok = httpx.get(base + app.ok)
        failed = httpx.get(base + app.failing)
        wait_for(lambda: printed(server, f'"GET {app.failing}'), what="the last request's access line")
        server.stop()
        output = server.output()
    assert (ok.status_code, failed.status_code) == (200, 500)
    return StartupRun(output, ok, failed)


@dataclass(frozen=True)
class StartupRuns:
    app: StartupApp
    stream: RedisHandle
    bare: StartupRun
    traced: StartupRun


@pytest.fixture(scope="module", params=sorted(STARTUP_APPS))
def startup_runs(request: pytest.FixtureRequest, redis_server: EmbeddedRedis) -> StartupRuns:
    """Under uvicorn, whose lifespan call builds the app's middleware stack before configure() runs."""
    app = STARTUP_APPS[request.param]
    stream = RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    bare = run_startup_app(app, stream, traced=False)
    return StartupRuns(app, stream, bare, run_startup_app(app, stream, traced=True))


def test_configure_as_the_app_starts_instruments_it(startup_runs: StartupRuns) -> None:
    ok = startup_runs.traced.ok
    record = request_record(startup_runs.stream, ok)
    assert (record.severity, record.attributes["url.path"]) == ("INFO", ok.request.url.path)
    assert ok.headers["traceparent"].split("-")[1] == record.trace_id
    spans = wait_for(
        lambda: [s for s in startup_runs.stream.spans() if s.trace_id == record.trace_id],
        what="the request's server span",
    )
    route = record.attributes["http.route"]
    assert [(s.kind, s.name, s.span_id) for s in spans] == [("SERVER", f"GET {route}", record.span_id)]


def test_configure_as_the_app_starts_records_a_500_once(startup_runs: StartupRuns) -> None:
    failed = startup_runs.traced.failed
    record = request_record(startup_runs.stream, failed)
    assert (record.severity, record.attributes["http.response.status_code"]) == ("ERROR", 500)
    assert f"{record.exception_type}: {record.exception_message}" == startup_runs.app.failure
    assert f"in {startup_runs.app.failing_function}" in record.exception_stacktrace
    errors = [
        e for e in startup_runs.stream.logs() if e.trace_id == record.trace_id and e.severity == "ERROR"
    ]
    assert errors == [record]  # uvicorn's "Exception in ASGI application" is not added
    assert not [e for e in startup_runs.stream.logs() if e.scope == "uvicorn.access"]


def test_configure_as_the_app_starts_changes_nothing_it_prints(startup_runs: StartupRuns) -> None:
    assert startup_runs.app.failure in startup_runs.traced.output.splitlines()
    assert_prints_as_bare(startup_runs.traced.output, startup_runs.bare.output)


def test_configure_in_the_lifespan_keeps_the_middleware_the_app_built(stream: RedisHandle) -> None:
    """The app's middleware is made once, as without tracestream, and still runs in every request."""
    code = (
        "from contextlib import asynccontextmanager\n"
        "import tracestream\n"
        "from fastapi import FastAPI\n"
        "from starlette.datastructures import MutableHeaders\n"
        "from starlette.testclient import TestClient\n"
        "made = []\n"
        "class ServedBy:\n"
        "    def __init__(self, app):\n"
        "        self.app = app\n"
        "        made.append(self)\n"
        "    async def __call__(self, scope, receive, send):\n"
        "        async def send_marked(message):\n"
        "            if message['type'] == 'http.response.start':\n"
        "                MutableHeaders(scope=message).append('x-served-by', 'inventory')\n"
        "            await send(message)\n"
        "        await self.app(scope, receive, send_marked)\n"
        "@asynccontextmanager\n"
        "async def lifespan(app):\n"
        "    tracestream.configure()\n"
        "    yield\n"
        "app = FastAPI(lifespan=lifespan)\n"
        "app.add_middleware(ServedBy)\n"
        "@app.get('/')\n"
        "def root() -> str:\n"
        "    return 'ok'\n"
        "with TestClient(app) as client:\n"
        "    headers = [client.get('/').headers for _ in range(2)]\n"
        "assert len(made) == 1, made\n"
        "assert [(h['x-served-by'], len(h['x-trace-id'])) for h in headers] == [('inventory', 32)] * 2\n"
    )
    said = run_python(code, stream.env())
    assert not [line for line in said.splitlines() if line.startswith("tracestream:")]


INSTRUMENTED_BY_CONTRIB = (
    "tracestream: WARNING the FastAPI app 'Inventory' was instrumented by "
    "FastAPIInstrumentor.instrument_app() before configure() ran: its requests get spans but no "
    "request records or trace headers; call configure() first (it instruments every FastAPI app itself)"
)


@pytest.mark.parametrize("configure_at", ["lifespan", "import"])
def test_an_app_contrib_instrumented_before_configure_says_what_it_lacks(
    stream: RedisHandle, configure_at: str
) -> None:
    """The OpenTelemetry docs' `FastAPIInstrumentor.instrument_app(app)`, then configure() at
    import or in the lifespan: contrib's wrapper holds FastAPI's own builder, and the app's
    stack cannot take ours without building its middleware again."""
    code = (
        "from contextlib import asynccontextmanager\n"
        "import tracestream\n"
        "from fastapi import FastAPI\n"
        "from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor\n"
        "from starlette.testclient import TestClient\n"
        "@asynccontextmanager\n"
        "async def lifespan(app):\n"
        f"    {'tracestream.configure()' if configure_at == 'lifespan' else 'pass'}\n"
        "    yield\n"
        "app = FastAPI(title='Inventory', lifespan=lifespan)\n"
        "FastAPIInstrumentor.instrument_app(app)\n"
        f"{'tracestream.configure()' if configure_at == 'import' else ''}\n"
        "@app.get('/')\n"
        "def root() -> str:\n"
        "    return 'ok'\n"
        "with TestClient(app) as client:\n"
        "    assert client.get('/').text == '\"ok\"'\n"
    )
    said = [line for line in run_python(code, stream.env()).splitlines() if line.startswith("tracestream:")]
    assert said == [INSTRUMENTED_BY_CONTRIB]


@pytest.fixture(scope="module")
def cors_base(api_stream: RedisHandle) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [bin_path("uvicorn"), "tests.apps.fastapi_cors:app", "--port", str(port)]
    with serve(command, api_stream.env(OTEL_SERVICE_NAME="cors"), http_ready(f"{base}/")):
        yield base


def test_a_cors_preflight_record_names_the_route_its_span_names(
    cors_base: str, api_stream: RedisHandle
) -> None:
    """CORSMiddleware answers the preflight before routing: the route takes GET, not OPTIONS."""
    headers = {"origin": "http://localhost:8080", "access-control-request-method": "GET"}
    response = httpx.options(f"{cors_base}/", headers=headers)
    assert response.headers["access-control-allow-origin"] == "http://localhost:8080"
    record = request_record(api_stream, response)
    spans = wait_for(
        lambda: [s for s in api_stream.spans() if s.trace_id == record.trace_id and s.kind == "SERVER"],
        what="the preflight's server span",
    )
    assert [(s.name, s.attributes.get("http.route")) for s in spans] == [("OPTIONS /", "/")]
    assert record.attributes["http.route"] == "/"


# FastAPI's own telemetry, `FastAPI(telemetry=...)`, came in 0.142; before it the keyword is
# only kept in `app.extra`, and nothing of it may be acted on.
FASTAPI_HAS_TELEMETRY = find_spec("fastapi.telemetry") is not None


@pytest.fixture(scope="module")
def excluding(api_stream: RedisHandle) -> Iterator[tuple[str, Server]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [bin_path("uvicorn"), "tests.apps.fastapi_telemetry:app", "--port", str(port)]
    env = api_stream.env(OTEL_SERVICE_NAME="excluding", PYTHONUNBUFFERED="1")
    with serve(command, env, lambda server: printed(server, "Uvicorn running on")) as server:
        yield base, server


def test_what_the_apps_telemetry_excludes_gets_no_span_record_or_headers(
    excluding: tuple[str, Server], api_stream: RedisHandle
) -> None:
    """Before FastAPI 0.142 the health check is a route like any other, traced."""
    base, server = excluding
    health = httpx.get(f"{base}/health")
    assert health.status_code == 200 and ("traceparent" in health.headers) is not FASTAPI_HAS_TELEMETRY
    # traced, and written after what the health check would have had
    item = httpx.get(f"{base}/items/3")
    record = request_record(api_stream, item)
    [span] = wait_for(
        lambda: [s for s in api_stream.spans() if s.trace_id == record.trace_id], what="the item's span"
    )
    assert span.attributes["url.path"] == "/items/3"
    wait_for(lambda: printed(server, '"GET /health'), what="the health check's access line, printed")
    health_records = [e.body for e in api_stream.logs() if "/health" in e.body]
    health_spans = [s.name for s in api_stream.spans() if s.attributes.get("url.path") == "/health"]
    if FASTAPI_HAS_TELEMETRY:
        assert health_records == [] and health_spans == []
    else:
        assert len(health_records) == 1 and health_spans == ["GET /health"]


def test_telemetry_providers_the_app_names_for_fastapi_are_named_in_one_line(stream: RedisHandle) -> None:
    """FastAPI's own `__call__` is wrapped only once an app with an `exclude` builds its stack,
    and only where FastAPI has telemetry to exclude from."""
    code = (
        "import tracestream\n"
        "from fastapi import FastAPI\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from starlette.testclient import TestClient\n"
        "tracestream.configure()\n"
        "named = FastAPI(title='Inventory', telemetry={'tracer_provider': TracerProvider()})\n"
        "native_off = FastAPI(telemetry={'tracing': False, 'metrics': False, 'logs': False})\n"
        "excluding = FastAPI(telemetry={'exclude': lambda scope: False})\n"
        "for app in (named, native_off):\n"
        "    client = TestClient(app)\n"
        "    for _ in range(2):\n"
        "        assert 'traceparent' in client.get('/').headers\n"
        "print('wrapped before:', FastAPI.__call__.__module__)\n"
        "assert 'traceparent' in TestClient(excluding).get('/').headers\n"
        "print('wrapped after:', FastAPI.__call__.__module__)\n"
    )
    done = run_python_process(code, stream.env())
    assert done.returncode == 0, done.stderr
    wrapper = "tracestream.integrations.fastapi" if FASTAPI_HAS_TELEMETRY else "fastapi.applications"
    assert done.stdout.splitlines() == ["wrapped before: fastapi.applications", f"wrapped after: {wrapper}"]
    said = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert said == (
        [
            "tracestream: WARNING the FastAPI app 'Inventory' names its own tracer_provider in telemetry=, "
            "which tracestream does not use: the contrib instrumentation traces its requests instead of "
            "FastAPI's telemetry, into the global providers configure() set; add your processors and "
            "readers to those instead"
        ]
        if FASTAPI_HAS_TELEMETRY
        else []
    )
