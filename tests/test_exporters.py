"""Exporters and the batch queue against a real private redis-server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.trace import SpanContext

from tests.seeded_records import RecordWriter
from tests.support import RedisHandle, wait_for
from tracestream.disk_spool import Spool, process_directory
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.export_status import read_statuses
from tracestream.exporters import RedisStreamLogExporter, RedisStreamSpanExporter
from tracestream.exporters.encoding import span_id_hex, trace_id_hex
from tracestream.otel_setup.logging_bridge import OTelHandler
from tracestream.otel_setup.pipeline import BatchQueue
from tracestream.otel_setup.processors import StreamLogProcessor, StreamSpanProcessor
from tracestream.query import Query, search
from tracestream.query.trace_lookup import fetch_trace
from tracestream.schema import LOG_FIELDS, StreamKeys
from tracestream.settings import BatchSettings, Settings

FAST = BatchSettings(schedule_delay=0.02, max_queue_size=10_000, max_export_batch_size=512)


def _pipeline(
    handle: RedisHandle, **settings: object
) -> tuple[logging.Logger, TracerProvider, StreamLogProcessor]:
    """A private pipeline (not the global providers), so tests stay independent."""
    config = Settings.load(environ={}, redis_url=handle.url, stream=handle.stream, **settings)
    resource = Resource({"service.name": "unit"})
    log_processor = StreamLogProcessor(RedisStreamLogExporter(config), FAST)
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(log_processor)
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(StreamSpanProcessor(RedisStreamSpanExporter(config), FAST))
    logger = logging.getLogger(f"unit.{handle.stream}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(OTelHandler(logger_provider, [log_processor], logging.DEBUG))
    return logger, tracer_provider, log_processor


def test_logs_and_spans_share_a_trace_index(stream: RedisHandle) -> None:
    logger, tracer_provider, logs = _pipeline(stream)
    tracer = tracer_provider.get_tracer("unit")
    with tracer.start_as_current_span("request") as span:
        logger.info("inside %s", "request", extra={"user.id": 7})
    logger.info("outside")
    assert logs.force_flush() and tracer_provider.force_flush()

    entries = stream.logs()
    assert [e.body for e in entries] == ["inside request", "outside"]
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert entries[0].trace_id == trace_id and entries[0].attributes["user.id"] == 7
    assert entries[1].trace_id == "" and entries[1].span_id == ""

    with stream.client() as client:
        members = client.lrange(stream.keys.trace_index(trace_id), 0, -1)
        ttl = client.ttl(stream.keys.trace_index(trace_id))
    spans = stream.spans()
    assert sorted(members) == sorted([f"s{spans[0].stream_id}", f"l{entries[0].stream_id}"])
    assert 0 < ttl <= 7 * 86400


class _AttributeMap(Mapping[str, Any]):
    """Attributes as another SDK could hold them: a Mapping with no `copy()`."""

    def __init__(self, items: dict[str, Any]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def test_attribute_maps_without_copy_are_stored_whole(stream: RedisHandle) -> None:
    span = ReadableSpan(
        "GET /x",
        context=SpanContext(0x5B8AA5A2D2C872E8321CF37308D69DF2, 0x051581BF3CB55C13, is_remote=False),
        attributes=_AttributeMap({"http.route": "/x", "http.response.status_code": 200}),
        events=[Event("retry", attributes=_AttributeMap({"attempt": 2}), timestamp=1)],
        start_time=1,
        end_time=2,
    )
    writer = RedisStreamSpanExporter(
        Settings.load(environ={}, redis_url=stream.url, stream=stream.stream)
    ).writer
    assert writer.write([span])
    [stored] = stream.spans()
    assert stored.attributes == {"http.route": "/x", "http.response.status_code": 200}
    assert [event["attributes"] for event in stored.events] == [{"attempt": 2}]
    writer.close()


def test_spans_keep_what_otels_raised_span_limits_keep(
    stream: RedisHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our limits cut again and kept the oldest attributes, so a span over 128 lost the status
    code its instrumentation sets last where the app had raised OTel's span limits."""
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "500")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "10000")
    wide = {f"attr{i}": i for i in range(200)} | {"long": "x" * 8000, "http.response.status_code": 500}
    span = ReadableSpan(
        "GET /wide", context=SpanContext(1, 1, is_remote=False), attributes=wide, start_time=1, end_time=2
    )
    writer = RedisStreamSpanExporter(
        Settings.load(environ={}, redis_url=stream.url, stream=stream.stream)
    ).writer
    assert writer.write([span])
    [stored] = stream.spans()
    assert stored.attributes == wide
    writer.close()


def test_ids_are_lowercase_hex_and_ids_no_sdk_makes_do_not_stop_the_export() -> None:
    assert trace_id_hex(0x5B8AA5A2D2C872E8321CF37308D69DF2) == "5b8aa5a2d2c872e8321cf37308d69df2"
    assert (span_id_hex(1), trace_id_hex(0)) == ("0000000000000001", "")
    assert trace_id_hex(2**128) == "1" + "0" * 32 and span_id_hex(-1) == "-000000000000001"


def test_stream_is_trimmed_to_max_entries(stream: RedisHandle) -> None:
    logger, _, logs = _pipeline(stream, max_entries=1000)
    for i in range(5000):
        logger.info("record %d", i)
    assert logs.force_flush()
    with stream.client() as client:
        length = client.xlen(stream.stream)
        newest = [entry_id for entry_id, _ in client.xrevrange(stream.stream, count=1000)]
        digest = [
            line.split("\t")[2]
            for _, f in client.xrange(stream.keys.digest)
            for line in f["d"].split("\n")[1:]
        ]
    assert 1000 <= length < 2000  # approximate trimming keeps whole nodes
    # the search digest is trimmed alongside: it covers the newest 1000, plus at most a batch and a node
    assert set(newest) <= set(digest) and len(digest) < 1000 + 512 + 100


def test_the_trace_index_keeps_the_newest_max_entries_traces(stream: RedisHandle) -> None:
    """An index key lived `max_age` (7 days) after `max_entries` trimmed its entries: Redis grew
    about 300 B with every trace, whatever the limit. A trace still written to keeps its key."""
    logger, tracer_provider, logs = _pipeline(stream, max_entries=100)
    tracer = tracer_provider.get_tracer("unit")
    with tracer.start_as_current_span("long job") as job:
        logger.info("job started")
    assert logs.force_flush() and tracer_provider.force_flush()
    traces = []
    for round_number in range(12):
        for i in range(50):
            with tracer.start_as_current_span(f"request {round_number}.{i}") as span:
                logger.info("request %d.%d", round_number, i)
            traces.append(trace_id_hex(span.get_span_context().trace_id))
        with trace.use_span(job):
            logger.info("job still going, round %d", round_number)
        assert logs.force_flush() and tracer_provider.force_flush()
    job_trace = trace_id_hex(job.get_span_context().trace_id)
    with stream.client() as client:
        indexed = {key.rsplit(":", 1)[1] for key in client.scan_iter(stream.keys.trace_index("*"))}
    indexed.discard("order")
    assert len(indexed) <= 100 + 2, len(indexed)  # the newest, and the job still written to
    assert set(traces[-90:]) <= indexed and traces[0] not in indexed and job_trace in indexed
    newest = fetch_trace(stream.client(), stream.stream, traces[-1])
    assert [(s.name, e.body) for s in newest.spans for e in newest.logs] == [
        ("request 11.49", "request 11.49")
    ]


def test_old_entries_are_trimmed_by_age(stream: RedisHandle) -> None:
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    with stream.client() as client:
        for i in range(300):  # three full stream nodes, all older than max_age
            client.xadd(stream.stream, {"v": "1", "body": "old"}, id=f"{an_hour_ago}-{i + 1}")
            client.xadd(stream.keys.digest, {"first": "0-1", "n": 1, "d": "old"}, id=f"{an_hour_ago}-{i + 1}")
    logger, _, logs = _pipeline(stream, max_age="10m")
    logger.info("fresh")
    assert logs.force_flush()
    bodies = [entry.body for entry in stream.logs()]
    assert bodies[-1] == "fresh"
    assert bodies.count("old") < 100  # approximate trimming drops whole nodes only
    with stream.client() as client:
        assert [f["d"] for _, f in client.xrange(stream.keys.digest)].count("old") < 100


def test_a_writer_whose_clock_runs_ahead_trims_by_redis_clock(
    stream: RedisHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hours ahead, with records kept an hour: the trim point came from the writer's clock,
    and one record of its own emptied the stream every other writer shared."""
    with stream.client() as client:
        for i in range(300):  # three full stream nodes, written a moment ago by Redis's clock
            client.xadd(stream.stream, {"v": "1", "body": f"another writer's {i}"})
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7200)
    logger, _, logs = _pipeline(stream, max_age="1h")
    logger.info("from the future")
    assert logs.force_flush()
    bodies = [entry.body for entry in stream.logs()]
    assert bodies[-1] == "from the future" and len(bodies) == 301


def test_exporter_reports_failure_instead_of_raising() -> None:
    settings = Settings.load(environ={}, redis_url="redis://127.0.0.1:1/0", redis_timeout="200ms")
    exporter = RedisStreamLogExporter(settings)
    record = ReadableLogRecord(log_record=LogRecord(timestamp=1, body="lost?"), resource=Resource({}))
    assert exporter.export([]) is LogRecordExportResult.SUCCESS
    assert exporter.export([record]) is LogRecordExportResult.FAILURE


def _queue_of_tens(
    export: Callable[[list[int]], bool], *, schedule_delay: float, max_queue_size: int, **options: Any
) -> BatchQueue[int]:
    batch = BatchSettings(schedule_delay, max_queue_size, max_export_batch_size=10)
    return BatchQueue("unit", export, batch, **options)


def _ints(items: list[Any]) -> list[int]:
    return [int(item) for item in items]


def test_shutdown_sees_the_worker_out_before_returning() -> None:
    """At exit daemon threads freeze where they stand; a worker or sender frozen inside redis-py
    holds its pool's lock and hangs the interpreter on a client's __del__. After shutdown both
    are gone and do nothing more: the last status report went out within shutdown, with the flush."""
    exported: list[int] = []
    reports: list[dict[str, int]] = []

    def export(batch: list[int]) -> bool:
        exported.extend(batch)
        return True

    queue = _queue_of_tens(export, schedule_delay=60, max_queue_size=100, report=reports.append)
    queue.put(1)
    assert queue.shutdown(5)
    worker, sender = queue._thread, queue._sender._thread
    assert worker is not None and not worker.is_alive()
    assert sender is not None and not sender.is_alive()
    assert exported == [1] and [report["exported"] for report in reports] == [1]


def test_a_flush_waits_for_the_sender_no_longer_than_its_timeout() -> None:
    """The thread that flushes may hold a lock the sender waits for (logging's, when a signal
    handler flushes in the middle of a log call): past its timeout the batch counts as not
    taken, and a later flush sends it again."""
    released = threading.Event()
    exported: list[int] = []

    def export(batch: list[int]) -> bool:
        released.wait(10)
        exported.extend(batch)
        return True

    queue = _queue_of_tens(export, schedule_delay=60, max_queue_size=100)
    for item in range(5):
        queue.put(item)
    began = time.monotonic()
    assert not queue.flush(0.3)
    assert time.monotonic() - began < 2
    released.set()
    assert queue.flush(5)
    assert sorted(set(exported)) == list(range(5))


def test_a_flush_after_shutdown_waits_for_nothing() -> None:
    """What shutdown left is counted lost. A flush after it (a Celery child flushes every
    processor after closing our queues) neither waits out its timeout again nor sends it."""
    attempts: list[list[int]] = []

    def export(batch: list[int]) -> bool:
        attempts.append(batch)
        return False  # Redis out of reach, and no spool

    queue = _queue_of_tens(export, schedule_delay=60, max_queue_size=100)
    queue.put(1)
    assert not queue.shutdown(0.3)
    assert queue.counters.dropped_at_shutdown == 1
    tried, started = len(attempts), time.monotonic()
    assert not queue.flush(5)
    assert time.monotonic() - started < 1 and len(attempts) == tried


def test_queue_keeps_order_through_failures_and_counts_drops() -> None:
    delivered: list[int] = []
    healthy = False

    def export(batch: list[int]) -> bool:
        if not healthy:
            return False
        delivered.extend(batch)
        return True

    queue = _queue_of_tens(export, schedule_delay=0.01, max_queue_size=100)
    for i in range(200):
        queue.put(i)
    # 200 records into room for 100: the worker holds a batch or two meanwhile (how many is a race)
    dropped = queue.counters.dropped
    assert 60 <= dropped <= 100
    wait_for(lambda: queue.counters.failed_attempts >= 2, what="retries while the exporter fails")
    healthy = True
    assert queue.flush(timeout=5)
    assert delivered == sorted(set(delivered)), "each record once, in the order it was put"
    assert len(delivered) == queue.counters.exported == 200 - dropped


def test_failures_seen_while_the_next_batch_is_encoded_keep_order(tmp_path: Path) -> None:
    """A batch's outcome arrives after the next batch is encoded: failed ones go to the spool
    ahead of it, a raising exporter counts as a failure, and everything arrives once, in order."""
    delivered: list[int] = []
    calls = 0

    def export(batch: list[int]) -> bool:
        nonlocal calls
        calls += 1
        if calls % 3 == 2:
            return False
        if calls % 3 == 0 and calls < 10:
            raise ConnectionError("flaky")
        delivered.extend(batch)
        return True

    spool = Spool(process_directory(tmp_path), "unit", max_bytes=1_000_000)
    queue = _queue_of_tens(export, schedule_delay=60, max_queue_size=1000, encode=_ints, spool=spool)
    for i in range(200):
        queue.put(i)
    wait_for(lambda: queue.flush(timeout=1), what="every batch delivered")
    assert delivered == list(range(200))
    assert queue.counters.exported == 200
    assert queue.counters.spooled > 0 and queue.counters.failed_attempts > 0


def test_a_trickle_of_records_waits_for_the_schedule_instead_of_a_batch_each() -> None:
    """Records arriving while a batch is with Redis wait for the next wake-up (delay or full
    batch) rather than going out a handful at a time, a round trip each."""
    batches: list[list[int]] = []

    def export(batch: list[int]) -> bool:
        time.sleep(0.005)  # a Redis round trip
        batches.append(batch)
        return True

    batch = BatchSettings(0.2, max_queue_size=10_000, max_export_batch_size=512)
    queue = BatchQueue("unit", export, batch)
    started = time.monotonic()
    for burst in range(600):  # 0.6 s of 5 records per ms: a busy web server's request records
        for i in range(5):
            queue.put(burst * 5 + i)
        time.sleep(max(0.0, started + (burst + 1) * 0.001 - time.monotonic()))
    assert queue.flush(timeout=5)
    assert [item for batch in batches for item in batch] == list(range(3000))
    # full batches and the scheduled wake-ups: about 10, where chasing the trickle sends ~100
    assert len(batches) <= 20, [len(batch) for batch in batches]


def test_a_batch_is_one_round_trip_of_script_calls_and_survives_a_script_flush(stream: RedisHandle) -> None:
    """512 rows per call, all calls of a batch pipelined, no SCRIPT EXISTS; a server that lost
    the script (restarted, promoted replica) gets it loaded and the batch exactly once."""
    settings = Settings.load(environ={}, redis_url=stream.url, stream=stream.stream)
    writer = RedisStreamLogExporter(settings).writer
    rows = writer.encode([_record(f"record {i}") for i in range(1200)])
    with stream.client() as client:
        client.script_flush()
        client.config_resetstat()
        assert writer.write_rows(rows[:600])
        stats = client.info("commandstats")
        assert stats["cmdstat_script|load"]["calls"] == 1
        assert not [name for name in stats if name.startswith("cmdstat_script|exists")]
        client.config_resetstat()
        assert writer.write_rows(rows[600:])
        assert client.info("commandstats")["cmdstat_evalsha"]["calls"] == 2  # 512 + 88 rows
    assert [entry.body for entry in stream.logs()] == [f"record {i}" for i in range(1200)]


def test_each_entry_keeps_its_own_resource_and_rows_are_handed_back_unchanged(stream: RedisHandle) -> None:
    """A script call sends its first row's resource once and the others stand in for it; a row
    with another resource (a dead process's, replayed from the spool) carries its own. The rows
    are restored afterwards: a batch Redis did not take is spooled as it is."""
    records = RecordWriter(stream)
    rows = [records.row(f"r{i}", service="api" if i % 3 else "old", instance=str(i % 3)) for i in range(600)]
    before = [list(row) for row in rows]
    records.write(*rows)  # two script calls: 512 rows led by an "old" one, then 88 led by an "api" one
    assert rows == before
    entries = stream.logs()
    assert [(e.body, e.service, e.resource["service.instance.id"]) for e in entries] == [
        (f"r{i}", "api" if i % 3 else "old", str(i % 3)) for i in range(600)
    ]


def _record(body: str) -> ReadableLogRecord:
    return ReadableLogRecord(log_record=LogRecord(timestamp=1, body=body), resource=Resource({}))


def test_stream_keys_follow_the_configured_name() -> None:
    keys = StreamKeys("ansflow:logs:stream")
    assert keys.logs == "ansflow:logs:stream"
    assert keys.spans == "ansflow:logs:stream:spans"
    assert keys.trace_index("abc") == "ansflow:logs:stream:trace:abc"


def test_a_record_is_what_it_was_when_logged(stream: RedisHandle) -> None:
    """The bridge copies the record's values when it is logged: a handler that runs after ours
    and rewrites the `LogRecord` (as some do, to redact or enrich) changes nothing in the stream."""
    logger, _, logs = _pipeline(stream)

    class Rewriting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            record.levelname, record.name, record.order_id = "CRITICAL", "rewritten", 0
            record.added_later = True

    logger.addHandler(Rewriting())
    logger.warning("order %d held", 7, extra={"order_id": 7})
    assert logs.force_flush()
    [entry] = stream.logs()
    assert (entry.body, entry.severity, entry.scope) == ("order 7 held", "WARN", logger.name)
    assert entry.attributes == {"order_id": 7}


def test_code_location_from_a_filter_that_sets_odd_values(stream: RedisHandle) -> None:
    """Call sites are laid out once and remembered; a value that cannot be remembered still is laid out."""
    logger, _, logs = _pipeline(stream)

    class OddFunction(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.funcName = ["handler", "step"]  # type: ignore[assignment]
            return True

    for _ in range(2):  # one call site: laid out, then remembered
        logger.info("plain")
    logger.addFilter(OddFunction())
    logger.info("odd")
    assert logs.force_flush()
    first, again, odd = stream.logs()
    assert first.code == again.code
    assert first.code.endswith(" in test_code_location_from_a_filter_that_sets_odd_values")
    assert odd.code.endswith(" in ['handler', 'step']")
    assert logs.queue.counters.dropped_invalid == 0


def test_logs_written_during_export_never_reenter(stream: RedisHandle) -> None:
    """What redis-py, urllib3 or the SDK log on the export thread is suppressed, even at DEBUG."""
    logger, _, logs = _pipeline(stream)
    noisy = logging.getLogger(f"redis.noisy.{stream.stream}")
    noisy.addHandler(next(h for h in logger.handlers if isinstance(h, OTelHandler)))
    noisy.setLevel(logging.DEBUG)
    original = logs.queue._export

    def chatty_export(batch: list[object]) -> bool:
        noisy.debug("sending %d records", len(batch))
        return bool(original(batch))

    logs.queue._export = chatty_export  # type: ignore[assignment]
    for i in range(50):
        logger.info("app %d", i)
    assert logs.force_flush()  # drains until empty, so a looped record would be exported here too
    assert logs.queue.counters.exported == 50
    assert [e.body for e in stream.logs()] == [f"app {i}" for i in range(50)]


@pytest.mark.parametrize("command", ["LPOP", "XTRIM"])
def test_a_command_renamed_away_is_named_not_taken_for_a_key_of_another_type(
    command: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """LPOP gone costs the search digest (search reads the stream instead); XTRIM gone, every
    write: the records wait (write_rows says not now) instead of being refused as misplaced."""
    with EmbeddedRedis(extra_args=["--rename-command", command, ""]) as server:
        handle = RedisHandle(server.url, "renamed")
        records = RecordWriter(handle)
        stored = records.writer.write_rows([records.row("order 7 placed")])
        records.close()
        told = capfd.readouterr().err
        assert f"{command} is disabled or renamed" in told and "is not a" not in told, told
        with handle.client() as client:
            found = [entry.body for entry in search(client, handle.stream, Query()).records]
    assert (stored, found) == ((True, ["order 7 placed"]) if command == "LPOP" else (False, []))


def test_a_stream_that_vanished_under_its_writer_is_said_once_naming_the_eviction_policy(
    stream: RedisHandle, writer: RecordWriter, capfd: pytest.CaptureFixture[str]
) -> None:
    """Evicted (allkeys-*) or deleted with the records in it: the writer's next call finds it gone.
    Under a volatile-* policy it cannot have been evicted: the streams have no expiry."""
    with stream.client() as client:
        writer.log("first")
        client.delete(stream.stream)
        writer.log("second")
        deleted = capfd.readouterr().err
        client.delete(stream.stream)
        writer.log("third")
        assert capfd.readouterr().err == ""  # said once a process
        told = {}
        for policy in ("allkeys-lru", "volatile-lru"):
            evicting = RecordWriter(stream)
            evicting.log("fourth")
            client.config_set("maxmemory-policy", policy)
            try:
                client.delete(stream.stream)
                evicting.log("fifth")
            finally:
                client.config_set("maxmemory-policy", "noeviction")
                evicting.close()
            told[policy] = capfd.readouterr().err
    assert deleted.count(f"{stream.stream!r} was gone") == 1, deleted
    assert "deleted (maxmemory-policy noeviction evicts nothing, never a stream)" in deleted
    evicted = "most likely evicted: maxmemory-policy allkeys-lru lets Redis evict whole streams when full"
    assert evicted in told["allkeys-lru"]
    volatile = (
        "maxmemory-policy volatile-lru evicts the trace index, trace list, issues and resources,"
        " never a stream"
    )
    assert f"deleted ({volatile})" in told["volatile-lru"]  # the streams have no expiry
    assert [entry.body for entry in stream.logs()] == ["fifth"]


def test_a_redis_that_forgot_records_it_had_taken_is_said_once(capfd: pytest.CaptureFixture[str]) -> None:
    """Redis restarted without persistence (the default of a Redis left as installed): the
    records it had taken are gone, and so is the writer's mark there. The writer's next call
    finds the mark below where it left it and says how many records may be lost, where it
    said only that writes failed and then went through again."""
    with EmbeddedRedis() as server:
        handle = RedisHandle(server.url, "restarted")
        records = RecordWriter(handle)
        for number in range(3):
            records.log(f"order {number} placed")
        records.log("order 3 placed")
        assert capfd.readouterr().err == ""  # a writer whose mark stands where it left it says nothing
        server.stop()
        server.start()
        after = records.row("order 4 placed")
        wait_for(lambda: records.writer.write_rows([after]), what="the restarted Redis to take the record")
        records.log("order 5 placed")
        # the mark gone again (as an evicting maxmemory-policy takes it, though nothing was lost):
        # said once a process, not again with a count that only grows
        with server.client() as client:
            client.delete(*client.keys("restarted:written:*"))
        records.log("order 6 placed")
        told = [line for line in capfd.readouterr().err.splitlines() if "lost" in line]
        # and doctor, which read every exporter as fine, names it for as long as the process reports
        records.writer.publish_status("logs", {"exported": 7})
        with server.client() as client:
            [status] = read_statuses(client, "restarted")
        records.close()
        stored = [entry.body for entry in handle.logs()]
    assert stored == ["order 4 placed", "order 5 placed", "order 6 placed"]
    assert told == [
        f"tracestream: WARNING Redis at {server.url}: 'restarted' lost up to 4 records this process had "
        "stored there: Redis forgot them (restarted without persistence, a replica behind its master "
        "took over, or FLUSHALL/FLUSHDB)"
    ]
    level, found = status.problems()
    assert (
        level == "fail"
        and found[0].startswith("logs: 'restarted' lost up to ")
        and "Redis forgot" in found[0]
    )


def test_a_row_whose_record_id_is_of_another_form_is_stored(
    stream: RedisHandle, writer: RecordWriter
) -> None:
    """Rows another tool spooled, or an older writer: the append script writes them whatever the
    marks say, and the exporter, which reads the id for its own mark, does not trip on it."""
    position = LOG_FIELDS.index("rid")
    rows = [writer.row(f"order {number} placed") for number in range(2)]
    rows[0][position] = "not-hex-not-hex-not-hex"
    rows[1][position] = "short"
    for row in rows:
        assert writer.writer.write_rows([row])
    assert [entry.body for entry in stream.logs()] == ["order 0 placed", "order 1 placed"]
