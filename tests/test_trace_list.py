"""The trace list: written with the spans, read by `recent_traces`, `tracestream traces` and the API.

Filters and sorts are checked on spans with chosen times written through the real exporter; a
real FastAPI app enqueueing to a real Celery worker checks what requests and tasks list as.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from tests import test_cli as cli_tests
from tests.apps.servers import LAUNCHER_ENV, bin_path, http_ready, launched, printed, serve
from tests.seeded_records import tracer_provider
from tests.support import RedisHandle, wait_for
from tests.test_cli import Here, ndjson, run
from tests.test_console_acl import READER_ACL
from tests.test_tls_acl import PRODUCER_ACL
from tracestream.connection import connect_cluster
from tracestream.embedded_redis import EmbeddedCluster, EmbeddedRedis, free_port
from tracestream.exporters.redis_stream import ROWS_PER_CALL, RedisStreamSpanExporter
from tracestream.query import QueryError, TraceSummary, recent_traces
from tracestream.schema import TRACE_HOUR_MS, StreamKeys
from tracestream.settings import Settings

here = cli_tests.here  # the CLI's `main()` in this process
NOW_NS = time.time_ns()
MINUTE_NS = 60 * 10**9
SDK_DEFAULT_SERVICE = TracerProvider().resource.attributes["service.name"]  # "unknown_service:python"


def _root(
    provider: TracerProvider,
    name: str,
    *,
    ago_min: float,
    ms: float,
    kind: SpanKind = SpanKind.SERVER,
    attributes: dict[str, Any] | None = None,
    parent: Span | None = None,
    error: bool = False,
    exception: bool = False,
) -> Span:
    """A span that started `ago_min` minutes ago and lasted `ms`, exported on its end."""
    start = NOW_NS - int(ago_min * MINUTE_NS)
    context = set_span_in_context(parent) if parent is not None else None
    span = provider.get_tracer("tests.trace_list").start_span(
        name, context=context, kind=kind, attributes=attributes, start_time=start
    )
    if error:
        span.set_status(Status(StatusCode.ERROR, "failed"))
    if exception:
        span.record_exception(ValueError("receipt printer on fire"))
    span.end(end_time=start + int(ms * 1e6))
    return span


def _trace_id(span: Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def _remote(span: Span) -> NonRecordingSpan:
    """`span`'s context as another process receives it (a Celery message header, a traceparent)."""
    context = span.get_span_context()
    return NonRecordingSpan(SpanContext(context.trace_id, context.span_id, True, TraceFlags(1)))


@dataclass(frozen=True)
class Listed:
    """Five local roots across three hours: two requests of one trace, a failed one, a task."""

    handle: RedisHandle
    orders: str  # api, /orders/{id}, 120 ms, 10 min ago; its task (worker, 300 ms, an exception event)
    health: str  # api, /health, 5 ms, 5 min ago
    failed: str  # api, /orders/{id}, 900 ms, status ERROR, 2 min ago, with a slower child span
    old: str  # cron, no parent, 50 ms, 3 h ago

    def names(self, **filters: Any) -> list[tuple[str, str]]:
        with self.handle.client() as client:
            return [(s.trace_id, s.name) for s in recent_traces(client, self.handle.stream, **filters)]


@pytest.fixture
def listed(stream: RedisHandle) -> Listed:
    api, worker, cron = (tracer_provider(stream, name) for name in ("api", "worker", "cron"))
    orders = _root(api, "POST /orders/{id}", ago_min=10, ms=120, attributes={"http.route": "/orders/{id}"})
    _root(
        worker,
        "run/shop.send_receipt",
        ago_min=9.9,
        ms=300,
        kind=SpanKind.CONSUMER,
        attributes={"celery.task_name": "shop.send_receipt"},
        parent=_remote(orders),
        exception=True,
    )
    health = _root(api, "GET /health", ago_min=5, ms=5, attributes={"http.route": "/health"})
    failed = _root(
        api, "GET /orders/{id}", ago_min=2, ms=900, attributes={"http.route": "/orders/{id}"}, error=True
    )
    _root(api, "SELECT orders", ago_min=2, ms=800, kind=SpanKind.CLIENT, parent=failed)
    _root(api, "render", ago_min=2, ms=850, kind=SpanKind.INTERNAL, parent=failed)
    _root(worker, "BRPOP", ago_min=1, ms=1000, kind=SpanKind.CLIENT)  # a broker poll outside any task
    old = _root(cron, "nightly cleanup", ago_min=180, ms=50, kind=SpanKind.INTERNAL)
    for provider in (api, worker, cron):
        provider.shutdown()
    return Listed(stream, _trace_id(orders), _trace_id(health), _trace_id(failed), _trace_id(old))


def test_newest_first_lists_each_trace_once_by_its_newest_local_root(listed: Listed) -> None:
    assert listed.names() == [
        (listed.failed, "/orders/{id}"),
        (listed.health, "/health"),
        (listed.orders, "shop.send_receipt"),  # the task began after the request that enqueued it
        (listed.old, "nightly cleanup"),
    ]


def test_one_service_lists_its_own_requests_only(listed: Listed) -> None:
    assert listed.names(service="api") == [
        (listed.failed, "/orders/{id}"),
        (listed.health, "/health"),
        (listed.orders, "/orders/{id}"),
    ]
    assert listed.names(service="worker") == [(listed.orders, "shop.send_receipt")]
    assert listed.names(service="nobody") == []


def test_slowest_first(listed: Listed) -> None:
    assert listed.names(sort="slowest") == [
        (listed.failed, "/orders/{id}"),
        (listed.orders, "shop.send_receipt"),
        (listed.old, "nightly cleanup"),
        (listed.health, "/health"),
    ]
    with listed.handle.client() as client:
        slowest = recent_traces(client, listed.handle.stream, service="api", sort="slowest", limit=1)
    assert slowest == [TraceSummary(listed.failed, "api", "/orders/{id}", slowest[0].start_ms, 900.0, True)]
    assert slowest[0].start_ms == pytest.approx((NOW_NS - 2 * MINUTE_NS) / 1e6)


def test_errors_only_counts_a_failed_status_and_an_exception_event(listed: Listed) -> None:
    failed = [(listed.failed, "/orders/{id}"), (listed.orders, "shop.send_receipt")]
    assert listed.names(errors_only=True) == failed
    assert listed.names(errors_only=True, sort="slowest") == failed
    assert listed.names(errors_only=True, service="api") == failed[:1]


def test_a_django_route_is_listed_from_slash_as_its_record_names_it(stream: RedisHandle) -> None:
    """Contrib's Django span names `polls/<int:pk>/`; `traces --route /polls/<int:pk>/`, and the
    console's link from an error issue to its route's traces, found nothing."""
    web = tracer_provider(stream, "web")
    span = _root(web, "GET polls/<int:pk>/", ago_min=1, ms=20, attributes={"http.route": "polls/<int:pk>/"})
    web.shutdown()
    with stream.client() as client:
        found = recent_traces(client, stream.stream, name="/polls/<int:pk>/")
    assert [(s.trace_id, s.name) for s in found] == [(_trace_id(span), "/polls/<int:pk>/")]


def test_a_request_answered_with_a_4xx_is_not_a_failed_trace(stream: RedisHandle) -> None:
    """The HTTP conventions leave a server span's status unset for a 4xx; contrib's Django span
    is an error with an exception event when a view's `Http404` answered. A streamed 200 that
    failed midway is still an error."""
    web = tracer_provider(stream, "web")
    four_oh_four = {"http.route": "polls/<int:pk>/", "http.response.status_code": 404}
    _root(web, "GET polls/<int:pk>/", ago_min=2, ms=20, attributes=four_oh_four, error=True, exception=True)
    streamed = _root(
        web,
        "GET /export",
        ago_min=1,
        ms=20,
        attributes={"http.route": "/export", "http.status_code": 200},
        error=True,
    )
    web.shutdown()
    with stream.client() as client:
        failed = recent_traces(client, stream.stream, errors_only=True)
    assert [s.trace_id for s in failed] == [_trace_id(streamed)]


def test_name_minimum_duration_since_and_limit(listed: Listed) -> None:
    assert listed.names(name="/orders") == [(listed.failed, "/orders/{id}"), (listed.orders, "/orders/{id}")]
    assert listed.names(name="receipt", sort="slowest") == [(listed.orders, "shop.send_receipt")]
    assert listed.names(min_duration_ms=200) == [
        (listed.failed, "/orders/{id}"),
        (listed.orders, "shop.send_receipt"),
    ]
    assert listed.names(min_duration_ms=200, sort="slowest", service="api") == [
        (listed.failed, "/orders/{id}")
    ]
    hour_ago = (NOW_NS - 60 * MINUTE_NS) // 10**6
    assert listed.old not in [trace for trace, _ in listed.names(since_ms=hour_ago)]
    assert listed.old not in [trace for trace, _ in listed.names(since_ms=hour_ago, sort="slowest")]
    assert len(listed.names(limit=2)) == 2 and len(listed.names(sort="slowest", limit=3)) == 3


def test_child_spans_and_background_calls_are_not_listed(listed: Listed) -> None:
    names = {name for _, name in listed.names(limit=1000) + listed.names(service="api", sort="slowest")}
    assert names.isdisjoint({"SELECT orders", "render", "BRPOP"})


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"sort": "oldest"}, "bad sort 'oldest'"),
        ({"limit": 0}, "bad limit 0"),
        ({"min_duration_ms": -1.0}, "bad minimum duration"),
    ],
)
def test_bad_arguments_raise_query_error(
    stream: RedisHandle, arguments: dict[str, Any], problem: str
) -> None:
    with stream.client() as client, pytest.raises(QueryError, match=problem):
        recent_traces(client, stream.stream, **arguments)


def _ended(provider: TracerProvider, name: str, ago_min: float) -> ReadableSpan:
    span = _root(provider, name, ago_min=ago_min, ms=10)
    assert isinstance(span, ReadableSpan)
    return span


def _sizes(client: redis.Redis, keys: StreamKeys) -> dict[str, int]:
    found = client.keys(keys.traces() + "*")
    return {str(key): int(client.zcard(key)) for key in found if client.type(key) == "zset"}


def test_a_retried_batch_lists_each_root_once(stream: RedisHandle, redis_client: redis.Redis) -> None:
    settings = Settings.load(environ={}, redis_url=stream.url, stream=stream.stream)
    writer = RedisStreamSpanExporter(settings).writer
    spans = [_ended(TracerProvider(), f"GET /{n}", ago_min=n) for n in range(3)]
    rows = writer.encode(spans)
    assert writer.write_rows(rows)
    before = _sizes(redis_client, stream.keys)
    assert before[stream.keys.traces(SDK_DEFAULT_SERVICE)] == 3
    assert writer.write_rows(rows) and writer.write_rows(rows[1:])
    assert _sizes(redis_client, stream.keys) == before
    assert len(recent_traces(redis_client, stream.stream)) == 3
    writer.close()


def test_a_large_batch_is_listed_in_several_calls(stream: RedisHandle, redis_client: redis.Redis) -> None:
    settings = Settings.load(environ={}, redis_url=stream.url, stream=stream.stream)
    writer = RedisStreamSpanExporter(settings).writer
    provider = TracerProvider()
    count = 2 * ROWS_PER_CALL + 100
    assert writer.write([_ended(provider, f"GET /{n}", ago_min=n / 100) for n in range(count)])
    assert redis_client.zcard(stream.keys.traces(SDK_DEFAULT_SERVICE)) == count
    newest = recent_traces(redis_client, stream.stream, limit=1000)
    assert [s.name for s in newest[:2]] == ["GET /0", "GET /1"] and len(newest) == 1000
    writer.close()


def test_the_list_keeps_the_streams_age_and_count(stream: RedisHandle, redis_client: redis.Redis) -> None:
    keep_all = tracer_provider(stream, "api")
    old = _trace_id(_root(keep_all, "GET /old", ago_min=180, ms=10))
    assert [s.trace_id for s in recent_traces(redis_client, stream.stream)] == [old]
    hour = tracer_provider(stream, "api", max_age=3600.0, max_entries=3)
    new = [_trace_id(_root(hour, f"GET /{n}", ago_min=5 - n, ms=10)) for n in range(5)]
    too_old = _trace_id(_root(hour, "GET /too-old", ago_min=90, ms=10))  # beyond max_age when written
    keys = stream.keys
    assert _sizes(redis_client, keys)[keys.traces("api")] == 3
    assert [s.trace_id for s in recent_traces(redis_client, stream.stream)] == new[:1:-1]
    slowest = {s.trace_id for s in recent_traces(redis_client, stream.stream, sort="slowest")}
    assert old not in slowest and too_old not in slowest
    assert 0 < redis_client.ttl(keys.traces("api")) <= 3600
    assert 0 < redis_client.ttl(keys.trace_services) <= 3600
    hour = (NOW_NS - MINUTE_NS) // 10**6 // TRACE_HOUR_MS  # the newest span's
    ends_in_s = (hour + 1) * TRACE_HOUR_MS / 1000 - time.time()
    slowest_ttl = redis_client.ttl(keys.slowest_traces(hour, "api"))
    assert abs(slowest_ttl - (ends_in_s + 3600)) < 30  # max_age after it ends


def test_a_writer_whose_clock_runs_ahead_trims_the_list_by_redis_clock(
    stream: RedisHandle, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hours ahead, with an hour kept: it took every other service's traces off the list,
    and the other services off the list of services."""
    theirs = _trace_id(_root(tracer_provider(stream, "api", max_age=3600.0), "GET /theirs", ago_min=1, ms=10))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7200)
    ahead = tracer_provider(stream, "worker", max_age=3600.0)
    for n in range(3):  # the first call tells the writer Redis's clock
        _root(ahead, f"GET /ahead/{n}", ago_min=0.5, ms=10)
    monkeypatch.undo()
    listed = {s.trace_id for s in recent_traces(redis_client, stream.stream, limit=100)}
    assert theirs in listed and len(listed) == 4
    assert set(redis_client.zrange(stream.keys.trace_services, 0, -1)) == {"api", "worker"}


def test_each_hour_keeps_its_slowest_thousand(stream: RedisHandle, redis_client: redis.Redis) -> None:
    """Each hour's set by duration kept `max_entries` (100,000) members, for every hour of
    `max_age` (7 days): hundreds of times what the stream holds. A reader asks for 1,000 at most."""
    settings = Settings.load(environ={}, redis_url=stream.url, stream=stream.stream)
    writer = RedisStreamSpanExporter(settings).writer
    provider = TracerProvider()
    hour_start_ns = NOW_NS // 10**6 // TRACE_HOUR_MS * TRACE_HOUR_MS * 10**6
    spans = []
    for n in range(1200):
        span = provider.get_tracer("tests.trace_list").start_span(
            f"GET /{n}", kind=SpanKind.SERVER, start_time=hour_start_ns + n
        )
        span.end(end_time=hour_start_ns + n + (n + 1) * 10**6)  # GET /n lasts n + 1 ms
        spans.append(span)
    assert writer.write(spans)
    hour = hour_start_ns // 10**6 // TRACE_HOUR_MS
    assert redis_client.zcard(stream.keys.slowest_traces(hour, SDK_DEFAULT_SERVICE)) == 1000
    slowest = recent_traces(redis_client, stream.stream, sort="slowest", limit=1000)
    assert [s.name for s in slowest[:2]] == ["GET /1199", "GET /1198"] and slowest[-1].name == "GET /200"
    writer.close()


def test_another_writers_keys_cost_only_the_list(stream: RedisHandle, redis_client: redis.Redis) -> None:
    keys = stream.keys
    redis_client.set(keys.traces(), "not a sorted set")
    not_utf8 = b'["\xff", 1]'
    redis_client.zadd(keys.traces("api"), {"not a summary": time.time() * 1000, '["x", 1]': 1, not_utf8: 2})
    provider = tracer_provider(stream, "api")
    written = _trace_id(_root(provider, "GET /ok", ago_min=1, ms=10))
    assert [span.trace_id for span in stream.spans()] == [written]  # the span is stored
    assert [s.trace_id for s in recent_traces(redis_client, stream.stream)] == [written]
    assert [s.trace_id for s in recent_traces(redis_client, stream.stream, service="api")] == [written]
    redis_client.set(keys.trace_services, "not a sorted set")
    later = _trace_id(_root(provider, "GET /later", ago_min=0.5, ms=10))
    assert [span.trace_id for span in stream.spans()] == [written, later]
    assert recent_traces(redis_client, stream.stream) == []  # no service can be listed
    listed = recent_traces(redis_client, stream.stream, service="api")
    assert [s.trace_id for s in listed] == [later, written]


def test_services_are_registered_by_their_newest_root(stream: RedisHandle, redis_client: redis.Redis) -> None:
    settings = Settings.load(environ={}, redis_url=stream.url, stream=stream.stream)
    writer = RedisStreamSpanExporter(settings).writer
    newer, older = (
        _ended(TracerProvider(), name, ago_min=ago) for name, ago in (("GET /new", 2), ("GET /old", 30))
    )
    assert writer.write([newer]) and writer.write([older])  # a batch replayed from the spool comes late
    newest_ms = (NOW_NS - 2 * MINUTE_NS) / 1e6
    [(service, score)] = redis_client.zrange(stream.keys.trace_services, 0, -1, withscores=True)
    assert service == SDK_DEFAULT_SERVICE and abs(score - newest_ms) < 1
    since = int(newest_ms) - 60_000
    listed = recent_traces(redis_client, stream.stream, since_ms=since)
    assert [s.name for s in listed] == ["GET /new"]
    assert recent_traces(redis_client, stream.stream, since_ms=int(newest_ms) + 60_000) == []
    writer.close()


def _list_as_before_2026_12_04(
    client: redis.Redis, keys: StreamKeys, service: str, name: str, *, ago_min: float, ms: float, error: bool
) -> str:
    """A summary in every set the trace list had before services were registered: one set of
    every service by start and one by duration, beside each service's own."""
    trace_id = uuid.uuid4().hex
    start_ns = NOW_NS - int(ago_min * MINUTE_NS)
    member = json.dumps([trace_id, start_ns, start_ns + int(ms * 1e6), error, service, name])
    start_ms, hour = start_ns / 1e6, start_ns // 10**6 // TRACE_HOUR_MS
    for key in (keys.traces(), keys.traces(service), *([keys.error_traces] if error else [])):
        client.zadd(key, {member: start_ms})
    for key in (keys.slowest_traces(hour), keys.slowest_traces(hour, service)):
        client.zadd(key, {member: ms})
    client.zadd(keys.trace_hours, {str(hour): hour})
    return trace_id


def test_a_list_written_before_services_were_registered_reads_as_one(
    stream: RedisHandle, redis_client: redis.Redis
) -> None:
    keys = stream.keys
    retired = _list_as_before_2026_12_04(redis_client, keys, "cron", "cleanup", ago_min=3, ms=50, error=True)
    shared = _list_as_before_2026_12_04(redis_client, keys, "api", "GET /old", ago_min=2, ms=5, error=False)
    new = _trace_id(_root(tracer_provider(stream, "api"), "GET /new", ago_min=1, ms=10))
    assert redis_client.zrange(keys.trace_services, 0, -1) == ["api"]  # the registry knows only "api"

    def listed(**filters: Any) -> list[str]:
        return [s.trace_id for s in recent_traces(redis_client, stream.stream, **filters)]

    assert listed() == [new, shared, retired]
    assert listed(sort="slowest") == [retired, new, shared]
    assert listed(service="api") == [new, shared]
    assert listed(service="cron") == [retired]
    assert listed(errors_only=True) == [retired]
    assert redis_client.zcard(keys.traces()) == 2  # the new writer adds nothing to the old set


def test_least_privilege_users_write_and_read_the_list(
    redis_server: EmbeddedRedis, stream: RedisHandle
) -> None:
    admin = redis_server.client()
    user = uuid.uuid4().hex[:8]
    producer_acl = PRODUCER_ACL.replace("producer", f"producer-{user}").format(
        password="pw", stream=stream.stream
    )
    reader_acl = READER_ACL.replace("reader", f"reader-{user}").format(password="pw", stream=stream.stream)
    admin.execute_command(*producer_acl.split())
    admin.execute_command(*reader_acl.split())
    url = f"redis://{{}}-{user}:pw@127.0.0.1:{redis_server.port}/0"
    provider = tracer_provider(RedisHandle(url.format("producer"), stream.stream), "api")
    written = _trace_id(_root(provider, "GET /ok", ago_min=1, ms=10))
    with redis.Redis.from_url(url.format("reader"), decode_responses=True) as reader:
        assert [s.trace_id for s in recent_traces(reader, stream.stream, sort="slowest")] == [written]
        assert [s.trace_id for s in recent_traces(reader, stream.stream, service="api")] == [written]
        admin.execute_command("ACL", "SETUSER", f"reader-{user}", "-zrange")
        with pytest.raises(redis.exceptions.NoPermissionError):
            recent_traces(reader, stream.stream)
    # A producer whose rights predate the list still stores its spans.
    admin.execute_command("ACL", "SETUSER", f"producer-{user}", "-zadd")
    provider = tracer_provider(RedisHandle(url.format("producer"), stream.stream), "api")
    unlisted = _trace_id(_root(provider, "GET /unlisted", ago_min=0.5, ms=10))
    assert unlisted in [span.trace_id for span in stream.spans()]
    assert [s.trace_id for s in recent_traces(admin, stream.stream)] == [written]
    admin.close()


def test_every_shard_of_a_cluster_is_read(stream: RedisHandle) -> None:
    with EmbeddedCluster(3) as cluster:
        handle = RedisHandle(cluster.url, stream.stream)
        sharded = {"redis_cluster": True, "shard_by": "service"}
        traces = {
            service: _trace_id(
                _root(tracer_provider(handle, service, **sharded), "GET /x", ago_min=n, ms=10 * n)
            )
            for n, service in enumerate(("orders", "api", "billing"), start=1)
        }
        client = connect_cluster(cluster.url, 5, decode=True)
        assert [s.service for s in recent_traces(client, handle.stream)] == ["orders", "api", "billing"]
        assert [s.service for s in recent_traces(client, handle.stream, sort="slowest")] == [
            "billing",
            "api",
            "orders",
        ]
        only = recent_traces(client, handle.stream, service="api", sort="slowest")
        assert [s.trace_id for s in only] == [traces["api"]]
        client.close()


def test_cli_lists_filters_and_says_when_nothing_matched(listed: Listed, here: Here) -> None:
    done = run(listed.handle, "traces", "--service", "api", "--sort", "slowest", "--json")
    assert done.returncode == 0, done.stderr
    lines = ndjson(done.stdout)
    assert [(line["trace_id"], line["duration_ms"], line["error"]) for line in lines] == [
        (listed.failed, 900.0, True),
        (listed.orders, 120.0, False),
        (listed.health, 5.0, False),
    ]
    assert set(lines[0]) == {
        "trace_id",
        "service",
        "name",
        "start",
        "start_ms",
        "duration_ms",
        "error",
        "span_count",
    }
    table = here("traces", "--route", "/orders", "--min-duration", "500ms", "--errors", "--since", "1h")
    assert table.returncode == 0 and listed.failed in table.stdout and listed.orders not in table.stdout
    assert "/orders/{id}" in table.stdout and "error" in table.stdout
    none = here("traces", "--service", "nobody")
    assert none.returncode == 0 and none.stdout == "" and "no matching traces" in none.stderr


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--min-duration", "fast"], "'fast'"),
        (["--since", "yesterday-ish"], "'yesterday-ish'"),
        (["--limit", "0"], "bad limit 0"),
        (["--limit", "ten"], "'ten'"),
        (["--sort", "oldest"], "'oldest'"),
    ],
)
def test_cli_bad_input_exits_2_naming_it(here: Here, arguments: list[str], named: str) -> None:
    done = here("traces", *arguments)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and named in done.stderr


def test_cli_redis_down_exits_1(stream: RedisHandle) -> None:
    down = RedisHandle(f"redis://127.0.0.1:{free_port()}/0", stream.stream)
    done = run(down, "traces")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1 and "cannot reach Redis" in done.stderr


@pytest.fixture(scope="module")
def shop(redis_server: EmbeddedRedis) -> Iterator[tuple[RedisHandle, dict[str, str]]]:
    """uvicorn serving tests/apps/fastapi_app.py, enqueueing to a launcher-run Celery worker."""
    handle = RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    broker = {
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis_server.port}/3",
        "CELERY_MAX_TASKS_PER_CHILD": "0",
    }
    worker = launched(
        bin_path("celery"), "-A", "tests.apps.celery_app", "worker", "-c", "1", "-n", "tl@e2e", "-l", "INFO"
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = [bin_path("uvicorn"), "tests.apps.fastapi_app:app", "--port", str(port)]
    worker_env = handle.env(OTEL_SERVICE_NAME="worker", **broker, **LAUNCHER_ENV)
    with (
        serve(worker, worker_env, lambda server: printed(server, "ready."), timeout=60),
        serve(api, handle.env(OTEL_SERVICE_NAME="api", **broker), http_ready(f"{base}/items/0")),
    ):
        traces = {
            path: httpx.request(method, base + path).headers["X-Trace-Id"]
            for method, path in (("GET", "/items/1"), ("GET", "/boom"), ("POST", "/orders/7"))
        }
        with handle.client() as client:
            wait_for(
                lambda: recent_traces(client, handle.stream, service="worker"),
                timeout=30,
                what="the task's root",
            )
        yield handle, traces


def test_requests_and_the_task_they_enqueue_are_listed(shop: tuple[RedisHandle, dict[str, str]]) -> None:
    handle, traces = shop
    with handle.client() as client:
        api = {s.trace_id: s for s in recent_traces(client, handle.stream, service="api")}
        assert {traces[path]: api[traces[path]].name for path in traces} == {
            traces["/items/1"]: "/items/{item_id}",
            traces["/boom"]: "/boom",
            traces["/orders/7"]: "/orders/{order_id}",
        }
        assert [s.trace_id for s in recent_traces(client, handle.stream, errors_only=True)] == [
            traces["/boom"]
        ]
        task = recent_traces(client, handle.stream, service="worker")
        assert [(s.trace_id, s.name, s.error) for s in task] == [
            (traces["/orders/7"], "tests.process_order", False)
        ]
        every = [s.trace_id for s in recent_traces(client, handle.stream)]
        # Each trace once (the order and its task are one), beside the readiness probes' requests.
        assert set(traces.values()) <= set(every) and len(every) == len(set(every))
    done = run(handle, "traces", "--service", "worker", "--json")
    assert [json.loads(line)["name"] for line in done.stdout.splitlines()] == ["tests.process_order"]
