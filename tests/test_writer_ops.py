"""The writer as an operator meets it: a Redis that stays full, a producer user short of a right, a
resource hash evicted. What the writer says on stderr must be the truth, once, and records Redis
stored must never count as failed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind

from tests.seeded_records import RecordWriter
from tests.support import RedisHandle
from tests.test_tls_acl import PRODUCER_ACL
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.error_issues import list_issues
from tracestream.export_status import read_statuses
from tracestream.exporters.redis_stream import RedisStreamSpanExporter
from tracestream.exporters.write_health import WriteHealth
from tracestream.query import recent_traces
from tracestream.settings import Settings

HOLD_S = 10.0
FULL = "OOM command not allowed"


class Clock:
    """The writer's clock, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_spell_starts_once_and_ends_only_after_the_hold_with_no_failure() -> None:
    clock = Clock()
    health = WriteHealth(HOLD_S, clock)
    assert health.failed() and health.failing  # the spell starts: said
    clock.now += 1
    assert not health.taken()  # one batch taken between refusals is no recovery
    clock.now += HOLD_S
    assert not health.failed()  # still the same spell: not said again
    clock.now += HOLD_S - 0.1
    assert not health.taken() and not health.recovered()
    clock.now += 0.1
    assert health.recovered() and not health.failing  # the end, said once
    assert not health.recovered() and not health.taken()
    clock.now += 1
    assert health.failed()  # a new spell


def test_no_write_since_the_last_failure_is_no_recovery_however_long_ago() -> None:
    clock = Clock()
    health = WriteHealth(HOLD_S, clock)
    health.failed()
    clock.now += 10 * HOLD_S
    assert not health.recovered() and health.failing


@pytest.fixture
def full_redis() -> Iterator[EmbeddedRedis]:
    """A Redis of its own, its maxmemory moved by the test (noeviction)."""
    with EmbeddedRedis() as server:
        yield server


def _on_a_clock(handle: RedisHandle) -> tuple[RecordWriter, Clock]:
    """A log writer whose failing spells run on a clock the test moves."""
    records, clock = RecordWriter(handle), Clock()
    records.writer.health = WriteHealth(HOLD_S, clock)
    return records, clock


def _stderr_lines(capfd: pytest.CaptureFixture[str]) -> list[str]:
    return capfd.readouterr().err.splitlines()


def test_a_redis_that_stays_full_is_said_once_and_its_recovery_once(
    full_redis: EmbeddedRedis, capfd: pytest.CaptureFixture[str]
) -> None:
    """At its memory limit Redis takes a batch now and then (a trim freed a little) and refuses the
    next: one line when writes start to fail, none while that goes on, one when they are taken."""
    handle = RedisHandle(full_redis.url, "full")
    records, clock = _on_a_clock(handle)
    admin = full_redis.client()

    def write(order: int, *, full: bool) -> bool:
        admin.config_set("maxmemory", 1 if full else 0)
        clock.now += 1
        return records.writer.write_rows([records.row(f"order {order}")])

    taken = [write(order, full=order % 3 == 0) for order in range(6)]
    assert taken == [False, True, True, False, True, True]
    flapping = _stderr_lines(capfd)
    assert len(flapping) == 1 and f"cannot write to Redis at {handle.url}: " in flapping[0], flapping
    assert FULL in flapping[0]
    records.writer.publish_status("logs", {})
    assert read_statuses(admin, handle.stream)[0].errors["logs"].startswith(FULL)  # doctor: failing
    clock.now += HOLD_S
    assert write(6, full=False)
    assert _stderr_lines(capfd) == [f"tracestream: WARNING Redis at {handle.url} takes records again"]
    records.writer.publish_status("logs", {})
    assert read_statuses(admin, handle.stream)[0].errors == {}
    assert [entry.body for entry in handle.logs()] == [f"order {n}" for n in (1, 2, 4, 5, 6)]
    records.close()
    admin.close()


def test_a_writer_with_nothing_more_to_write_ends_its_spell_at_its_next_status(
    full_redis: EmbeddedRedis, capfd: pytest.CaptureFixture[str]
) -> None:
    handle = RedisHandle(full_redis.url, "idle")
    records, clock = _on_a_clock(handle)
    with full_redis.client() as admin:
        admin.config_set("maxmemory", 1)
        assert not records.writer.write_rows([records.row("refused")])
        admin.config_set("maxmemory", 0)
        assert records.writer.write_rows([records.row("taken")])
        records.writer.publish_status("logs", {})
        assert read_statuses(admin, handle.stream)[0].errors["logs"].startswith("OOM")
        clock.now += HOLD_S
        records.writer.publish_status("logs", {})
        assert read_statuses(admin, handle.stream)[0].errors == {}
    told = _stderr_lines(capfd)
    assert len(told) == 2 and told[1].endswith(f"WARNING Redis at {handle.url} takes records again"), told
    records.close()


def test_a_processs_log_and_span_writers_say_a_failing_spell_once_and_its_end_once(
    full_redis: EmbeddedRedis, capfd: pytest.CaptureFixture[str]
) -> None:
    """Both fail for one reason: one line. The end is said once the last of them is over."""
    handle = RedisHandle(full_redis.url, "both")
    records, clock = _on_a_clock(handle)
    spans = _span_exporter(handle)
    spans.writer.health = WriteHealth(HOLD_S, clock)
    with full_redis.client() as admin:
        admin.config_set("maxmemory", 1)
        assert not records.writer.write_rows([records.row("refused")])
        assert spans.export(_spans(1)) == SpanExportResult.FAILURE
        failing = _stderr_lines(capfd)
        assert len(failing) == 1 and f"cannot write to Redis at {handle.url}: {FULL}" in failing[0], failing
        admin.config_set("maxmemory", 0)
        clock.now += HOLD_S
        assert spans.export(_spans(1)) == SpanExportResult.SUCCESS
        assert _stderr_lines(capfd) == []  # the log writer's spell is not over
        assert records.writer.write_rows([records.row("taken")])
        assert _stderr_lines(capfd) == [f"tracestream: WARNING Redis at {handle.url} takes records again"]
    spans.shutdown()
    records.close()


@pytest.fixture
def producer(redis_server: EmbeddedRedis, stream: RedisHandle) -> Iterator[tuple[RedisHandle, str]]:
    """The documented producer user for `stream`, its URL, and its name, to take a right away."""
    user = f"producer-{uuid.uuid4().hex[:8]}"
    with redis_server.client() as admin:
        admin.execute_command(
            *PRODUCER_ACL.replace("producer", user).format(password="pw", stream=stream.stream).split()
        )
        yield RedisHandle(f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0", stream.stream), user
        admin.execute_command("ACL", "DELUSER", user)


def _take_right(redis_server: EmbeddedRedis, user: str, right: str) -> None:
    with redis_server.client() as admin:
        admin.execute_command("ACL", "SETUSER", user, f"-{right}")


def _spans(trace_count: int) -> list[ReadableSpan]:
    """Finished request spans, a trace each, as a provider hands them to its exporter."""
    provider = TracerProvider(resource=Resource({"service.name": "api"}), shutdown_on_exit=False)
    spans: list[ReadableSpan] = []
    for number in range(trace_count):
        span = provider.get_tracer("tests.writer_ops").start_span(
            f"GET /orders/{number}", kind=SpanKind.SERVER
        )
        span.end()
        assert isinstance(span, ReadableSpan)  # the SDK's span
        spans.append(span)
    return spans


def _span_exporter(handle: RedisHandle) -> RedisStreamSpanExporter:
    return RedisStreamSpanExporter(Settings.load(environ={}, redis_url=handle.url, stream=handle.stream))


def test_a_producer_without_rpush_stores_every_record_and_says_once_what_it_costs(
    redis_server: EmbeddedRedis,
    stream: RedisHandle,
    producer: tuple[RedisHandle, str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """RPUSH writes the trace index, and the search digest's sizes: without it the records are
    stored all the same, never counted as failed and sent again, and each cost is said once."""
    handle, user = producer
    _take_right(redis_server, user, "rpush")
    records = RecordWriter(handle)
    spans = _spans(3)
    trace_id = spans[0].context.trace_id
    for body in ("order 1 placed", "order 2 placed"):
        assert records.writer.write_rows([records.row(body, trace_id=trace_id, span_id=1)])
    exporters = [_span_exporter(handle) for _ in range(2)]  # as many writers as a process may hold
    assert [exporter.export(spans[n : n + 1]) for n, exporter in enumerate(exporters)] == [
        SpanExportResult.SUCCESS
    ] * 2
    assert exporters[0].export(spans[2:]) == SpanExportResult.SUCCESS
    assert [entry.body for entry in stream.logs()] == ["order 1 placed", "order 2 placed"]
    assert sorted(entry.name for entry in stream.spans()) == [f"GET /orders/{n}" for n in range(3)]
    told = _stderr_lines(capfd)
    index = [line for line in told if "the trace index is not written" in line]
    assert len(index) == 1, told
    assert f"RPUSH on {stream.stream}:trace:*" in index[0] and "grant the URL's user +rpush" in index[0]
    digest = [line for line in told if "the search digest is not written" in line]
    assert len(digest) == 1 and "+rpush" in digest[0], told
    assert len(told) == 2, told
    with redis_server.client() as admin:
        assert admin.xlen(stream.keys.digest) == 0  # emptied: searches read the stream
    records.close()
    for exporter in exporters:
        exporter.shutdown()


def test_rpush_renamed_away_costs_the_index_and_digest_said_once_never_the_records(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with EmbeddedRedis(extra_args=["--rename-command", "RPUSH", ""]) as server:
        handle = RedisHandle(server.url, "renamed")
        records = RecordWriter(handle)
        for order in range(3):
            assert records.writer.write_rows([records.row(f"order {order}", trace_id=order + 1, span_id=1)])
        assert [entry.body for entry in handle.logs()] == ["order 0", "order 1", "order 2"]
        records.close()
    told = _stderr_lines(capfd)
    assert len(told) == 2, told
    assert all("RPUSH is disabled or renamed in the server's configuration" in line for line in told), told
    assert "the trace index is not written" in told[0] and "RPUSH on renamed:trace:*" in told[0]


def test_a_producer_without_zremrangebyscore_stores_the_spans_and_lists_them(
    redis_server: EmbeddedRedis,
    stream: RedisHandle,
    producer: tuple[RedisHandle, str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The trace list's ZADD runs, its trim by age does not: the spans the append call stored are
    not sent again, the list has them, and the one thing lost (the trim) is said once."""
    handle, user = producer
    _take_right(redis_server, user, "zremrangebyscore")
    exporter = _span_exporter(handle)
    spans = _spans(2)
    assert [exporter.export([span]) for span in spans] == [SpanExportResult.SUCCESS] * 2
    records = RecordWriter(handle)
    for _ in range(2):
        assert records.writer.write_rows([records.row("payment failed", severity="ERROR")])
    with redis_server.client(decode=True) as admin:
        assert len(stream.spans()) == 2
        listed = {summary.trace_id for summary in recent_traces(admin, stream.stream)}
        assert listed == {format(span.context.trace_id, "032x") for span in spans}
        assert [issue.count for issue in list_issues(admin, stream.stream)] == [2]
    told = _stderr_lines(capfd)
    assert len(told) == 2, told
    trace_list = next(line for line in told if "trace list" in line)
    issues = next(line for line in told if "issue list" in line)
    assert "the trace list keeps traces past the stream's age limit" in trace_list
    assert "ZREMRANGEBYSCORE on" in trace_list and "grant the URL's user +zremrangebyscore" in trace_list
    assert "the issue list keeps issues past their age limit" in issues and "not updated" not in issues
    exporter.shutdown()
    records.close()


def test_a_resource_evicted_is_put_back_by_the_next_write(
    stream: RedisHandle, redis_client: redis.Redis
) -> None:
    """Entries name their process's resource: gone (an allkeys-* or volatile-* policy evicted it),
    the writer's next batch stores it again, and every entry reads whole, old and new."""
    records = RecordWriter(stream)
    records.log("before")
    (resource_key,) = redis_client.keys(f"{stream.stream}:resource:*")
    redis_client.delete(resource_key)
    records.log("after")
    assert redis_client.exists(resource_key)
    assert [(entry.body, entry.resource.get("service.name")) for entry in stream.logs()] == [
        ("before", "api"),
        ("after", "api"),
    ]
    records.close()
