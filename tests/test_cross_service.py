"""The demo stack end to end: Django (gunicorn -w 2) -> FastAPI (uvicorn) -> Celery (prefork) + beat,
all under the real launcher; one checkout is one trace across the three services."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import ROOT, RedisHandle, wait_for
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.query import TraceRecords, fetch_trace


@pytest.fixture(scope="module")
def demo_run(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, RedisHandle]]:
    """`examples/demo.py --once` on the session's private Redis (broker in db 2)."""
    stream = RedisHandle(url=redis_server.url, stream=f"test:demo:{tmp_path_factory.mktemp('d').name}")
    done = subprocess.run(
        [sys.executable, "examples/demo.py", "--once", "--web-port", "0", "--api-port", "0"],
        env=stream.env(CELERY_BROKER_URL=f"redis://127.0.0.1:{redis_server.port}/2", COLUMNS="200"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("trace_id=")]
    assert lines, done.stdout
    yield lines[-1].removeprefix("trace_id="), stream


def _trace(stream: RedisHandle, trace_id: str) -> TraceRecords:
    with stream.client() as client:
        return fetch_trace(client, stream.stream, trace_id)


def test_one_trace_spans_django_fastapi_and_celery(demo_run: tuple[str, RedisHandle]) -> None:
    trace_id, stream = demo_run
    records = _trace(stream, trace_id)
    spans = {(s.service, s.kind): s for s in records.spans}
    web, client = spans[("shop-web", "SERVER")], spans[("shop-web", "CLIENT")]
    api, producer = spans[("inventory-api", "SERVER")], spans[("inventory-api", "PRODUCER")]
    task = spans[("shop-worker", "CONSUMER")]
    # one chain of parents: Django view -> requests call -> FastAPI route -> enqueue -> task run
    assert client.parent_span_id == web.span_id
    assert api.parent_span_id == client.span_id
    assert producer.parent_span_id == api.span_id
    assert task.parent_span_id == producer.span_id
    assert web.name == "GET checkout/<int:order_id>/" and api.name == "POST /reservations/{order_id}"
    assert task.name == "run/tasks.reserve_stock"

    bodies = {(e.service, e.body) for e in records.logs}
    assert ("shop-web", "checkout of order 1042 started") in bodies
    assert ("inventory-api", "reserving BOOK-1 for order 1042") in bodies
    assert ("shop-worker", "reserving BOOK-1 for order 1042 in the warehouse") in bodies
    requests_seen = [e for e in records.logs if e.scope == "tracestream.http"]
    assert sorted((e.service, e.attributes["http.response.status_code"]) for e in requests_seen) == [
        ("inventory-api", 200),
        ("shop-web", 200),
    ]
    states = [e.attributes["celery.task.state"] for e in records.logs if e.scope == "tracestream.celery"]
    assert states == ["received", "started", "succeeded"]


def test_demo_traffic_includes_a_404_and_a_500(demo_run: tuple[str, RedisHandle]) -> None:
    _, stream = demo_run
    records = wait_for(
        lambda: [e for e in stream.logs() if e.scope == "tracestream.http" and e.service == "shop-web"],
        what="the shop's request records",
    )
    levels = {
        e.attributes["url.path"]: (e.attributes["http.response.status_code"], e.severity) for e in records
    }
    assert levels["/no-such-page/"] == (404, "WARN")
    assert levels["/broken/"] == (500, "ERROR")
    beat = [e for e in stream.logs() if e.service == "shop-beat"]
    assert beat, "beat's own log lines reach the stream"
