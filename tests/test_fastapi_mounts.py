"""A FastAPI app with another mounted in it, static files and streams, under uvicorn: one request
record, one span and one set of trace headers per request, whichever app served it, named by the
full route."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.apps.http_checks import HTTP_SCOPE, request_record
from tests.apps.servers import bin_path, http_ready, serve
from tests.support import RedisHandle, run_python_process, wait_for
from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.schema import SpanEntry


@pytest.fixture(scope="module")
def stream(redis_server: EmbeddedRedis) -> RedisHandle:
    return RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def base(stream: RedisHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    static = tmp_path_factory.mktemp("static")
    (static / "hello.txt").write_text("hello")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [bin_path("uvicorn"), "tests.apps.fastapi_mounts:app", "--port", str(port)]
    env = stream.env(OTEL_SERVICE_NAME="mounts", STATIC_DIR=str(static))
    with serve(command, env, http_ready(f"{base}/app")):
        yield base


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/app", "/app"),
        ("/subapi/sub", "/subapi/sub"),
        ("/static/hello.txt", "/static"),
        ("/stream", "/stream"),
        ("/legacy/users/ann", "/legacy/users/{username}"),
    ],
)
def test_one_record_and_one_trace_header_per_request(
    base: str, stream: RedisHandle, path: str, route: str
) -> None:
    response = httpx.get(base + path)
    assert response.status_code == 200
    assert "x-process-time" in response.headers  # the app's own middleware still runs
    assert [len(response.headers.get_list(name)) for name in ("traceparent", "x-trace-id")] == [1, 1]
    record = request_record(stream, response)  # exactly one in the trace
    assert record.attributes["http.route"] == route
    assert record.attributes["url.path"] == path
    # The server span is named as the record names the route: contrib names a mount by its path.
    server = wait_for(lambda: _server_span(stream, record.trace_id), what="the server span")
    assert (server.name, server.attributes["http.route"]) == (f"GET {route}", route)


@pytest.mark.parametrize("path", ["/legacy/users/ann", "/subapi/sub"])
def test_a_mounted_app_adds_no_span(base: str, stream: RedisHandle, path: str) -> None:
    """Its own span would be a second one, inside the first (contrib instruments every FastAPI
    app, a mounted one too), and the app's lines would carry it: the app it is mounted in traced
    the request."""
    response = httpx.get(base + path)
    assert response.status_code == 200
    record = request_record(stream, response)
    server = wait_for(lambda: _server_span(stream, record.trace_id), what="the server span")
    assert [s.kind for s in stream.spans() if s.trace_id == record.trace_id] == ["SERVER"]
    assert record.span_id == server.span_id


def _server_span(stream: RedisHandle, trace_id: str) -> SpanEntry | None:
    found = [s for s in stream.spans() if s.trace_id == trace_id and s.kind == "SERVER"]
    assert len(found) <= 1
    return found[0] if found else None


def test_a_mounted_apps_exception_is_on_its_one_record(base: str, stream: RedisHandle) -> None:
    response = httpx.get(f"{base}/subapi/restock")
    assert response.status_code == 500
    record = request_record(stream, response)
    assert record.severity == "ERROR"
    # as raised: under Starlette 0.27 the app's middleware raises it inside an ExceptionGroup
    assert "RuntimeError: warehouse unreachable" in record.exception_stacktrace
    assert record.attributes["http.route"] == "/subapi/restock"
    in_trace = wait_for(
        lambda: [e for e in stream.logs() if e.trace_id == record.trace_id and e.scope == HTTP_SCOPE],
        what="the trace's records",
    )
    assert in_trace == [record]
    server = wait_for(lambda: _server_span(stream, record.trace_id), what="the server span")
    assert [s.kind for s in stream.spans() if s.trace_id == record.trace_id] == ["SERVER"]
    assert server.status == "ERROR"
    # the app's exception, on the request's span (Starlette 0.27 adds the ExceptionGroup it
    # raises it in, recorded by each layer, as without us)
    assert "RuntimeError" in [event["attributes"]["exception.type"] for event in server.events]


# FastAPI's "Bigger Applications" tutorial, its routers cut to one route each: one with a prefix
# of its own, one included under a prefix.
TUTORIAL_REQUESTS = """
from fastapi import APIRouter, FastAPI
from starlette.testclient import TestClient
import tracestream

items = APIRouter(prefix="/items")


@items.get("/{item_id}")
async def read_item(item_id: str) -> dict:
    return {"name": item_id, "item_id": item_id}


admin = APIRouter()


@admin.post("/")
async def update_admin() -> dict:
    return {"message": "Admin getting schwifty"}


app = FastAPI()
app.include_router(items)
app.include_router(admin, prefix="/admin")
telemetry = tracestream.configure()
client = TestClient(app)
assert client.post("/admin/").status_code == 200
assert client.get("/items/plumbus").status_code == 200
telemetry.force_flush()
"""


def test_an_included_routers_record_names_the_route_with_its_prefix(stream: RedisHandle) -> None:
    """FastAPI 0.137+ keeps an included router's routes as declared: the prefix
    `include_router(prefix="/admin")` adds is only in the route FastAPI notes as selected."""
    done = run_python_process(TUTORIAL_REQUESTS, stream.env(OTEL_SERVICE_NAME="tutorial"))
    assert done.returncode == 0, done.stderr
    records = wait_for(
        lambda: (
            len(found := [r for r in stream.logs() if r.service == "tutorial" and r.scope == HTTP_SCOPE]) == 2
            and found
        ),
        what="both request records",
    )
    spans = [s for s in stream.spans() if s.service == "tutorial" and s.kind == "SERVER"]
    assert sorted(r.attributes["http.route"] for r in records) == ["/admin/", "/items/{item_id}"]
    assert sorted(s.attributes["http.route"] for s in spans) == ["/admin/", "/items/{item_id}"]
