"""A batch Redis refuses never holds up the records behind it (real redis-server, real spool).

The export here is a small all-or-nothing script in the writer's shape (one JSON argument per
batch, an entry and a trace-index push per row), so a refusal leaves nothing half written and
every record can be counted once: in the stream, in the dead-letter file, or as dropped.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis

from tests.faults import FaultyProxy
from tests.pipelines import PrivatePipeline
from tests.support import run_python_process, wait_for
from tracestream.cli.doctor import diagnose
from tracestream.disk_spool import dead_letters, spool_for
from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.exporters import RedisStreamLogExporter
from tracestream.otel_setup.pipeline import BatchQueue
from tracestream.redis_errors import describe, error_code, is_transient
from tracestream.settings import BatchSettings, Settings

APPEND = """
local rows = cjson.decode(ARGV[1])
local stream_kind = redis.call('TYPE', KEYS[1]).ok
if stream_kind ~= 'none' and stream_kind ~= 'stream' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. stream_kind .. ', not a stream')
end
for _, row in ipairs(rows) do
  local kind = redis.call('TYPE', KEYS[1] .. ':trace:' .. row[2]).ok
  if kind ~= 'none' and kind ~= 'list' then
    return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
  end
end
for _, row in ipairs(rows) do
  redis.call('XADD', KEYS[1], '*', 'rid', row[1], 'body', row[3])
  redis.call('RPUSH', KEYS[1] .. ':trace:' .. row[2], row[1])
end
return #rows
"""
BATCH = BatchSettings(schedule_delay=0.02, max_queue_size=100_000, max_export_batch_size=256)


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedRedis]:
    """Arguments over 1 MiB are refused: a record can be too big for Redis."""
    with EmbeddedRedis(extra_args=["--proto-max-bulk-len", "1mb"]) as running:
        yield running


class Stream:
    """The script's stream at `url`; `export` is the batch queue's export."""

    def __init__(self, url: str) -> None:
        self.key = f"refuse:{uuid.uuid4().hex[:8]}"
        self.calls = 0
        self.client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._append = self.client.register_script(APPEND)

    def export(self, rows: list[list[str]]) -> bool:
        self.calls += 1
        return bool(self._append(keys=[self.key], args=[orjson.dumps(rows)]) == len(rows))

    def ids(self) -> list[str]:
        return [fields[b"rid"].decode() for _, fields in self.client.xrange(self.key)]


def _row(number: int, trace: str, body: str = "") -> list[str]:
    return [str(number), trace, body or f"rec {number}"]


def _queue(stream: Stream, spool_dir: Path, url: str) -> BatchQueue[list[str]]:
    settings = Settings.load(environ={}, redis_url=url, spool_dir=str(spool_dir))
    spool = spool_for(settings, stream.key)
    return BatchQueue("refusals", stream.export, BATCH, encode=lambda rows: rows, spool=spool)


def test_a_wrong_type_key_sets_aside_only_its_records(server: EmbeddedRedis, tmp_path: Path) -> None:
    stream = Stream(server.url)
    stream.client.set(f"{stream.key}:trace:bad", "not a list")  # inside the stream's key namespace
    queue = _queue(stream, tmp_path, server.url)
    rows = [_row(i, "bad" if i % 997 == 0 else f"t{i % 50}") for i in range(5000)]
    for row in rows:
        queue.put(row)
    assert queue.flush(30)
    refused = {row[0] for row in rows if row[1] == "bad"}
    assert sorted(stream.ids(), key=int) == [row[0] for row in rows if row[0] not in refused]
    assert stream.ids() == sorted(stream.ids(), key=int)  # the rest kept its order
    counters = queue.counters
    assert counters.exported == 5000 - len(refused) and counters.dead_lettered == len(refused)
    assert counters.refused == {"WRONGTYPE": len(refused)} and counters.dropped == 0
    (letters,) = dead_letters(tmp_path)
    assert letters.records == len(refused) and next(iter(letters.reasons)).startswith("WRONGTYPE")


def test_a_record_too_big_for_redis_is_cut_to_fit_and_holds_up_nothing(
    server: EmbeddedRedis, tmp_path: Path
) -> None:
    """This server takes no argument over 1 MiB. Through the real writer, a record with 1.2 MB of
    nested attributes is held to the entry limit, so Redis takes it with the records around it
    (a request over the limit is not reliably refused: Redis may reset the connection mid-send)."""
    stream = f"big:{uuid.uuid4().hex[:8]}"
    settings = Settings.load(environ={}, redis_url=server.url, stream=stream, spool_dir=str(tmp_path))
    pipeline = PrivatePipeline(settings)
    try:
        for number in range(300):
            extra = {"blob": {"rows": ["x" * 4000] * 300}} if number == 40 else {}
            pipeline.logger.info("record %d", number, extra=extra)
        assert pipeline.flush()
        counters = pipeline.logs.queue.counters
    finally:
        pipeline.close()
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        bodies = [fields["body"] for _, fields in client.xrange(stream)]
    assert bodies == [f"record {number}" for number in range(300)]
    assert counters.dropped == 0 and counters.dead_lettered == 0


def test_a_key_that_refuses_every_record_costs_a_probe_per_batch_not_a_search(
    server: EmbeddedRedis, tmp_path: Path
) -> None:
    stream = Stream(server.url)
    stream.client.set(stream.key, "a string where the stream should be")
    queue = _queue(stream, tmp_path, server.url)
    for i in range(256 * 8):
        queue.put(_row(i, "t"))
    assert queue.flush(30)
    assert queue.counters.dead_lettered == 256 * 8 and stream.calls < 2 * 256 + 4 * 8
    stream.client.delete(stream.key)  # the operator fixes the key: records flow again
    for i in range(256 * 8, 256 * 9):
        queue.put(_row(i, "t"))
    assert queue.flush(30)
    assert stream.ids() == [str(i) for i in range(256 * 8, 256 * 9)]


def test_without_a_spool_refused_records_are_counted_as_dropped_with_their_reason(
    server: EmbeddedRedis,
) -> None:
    stream = Stream(server.url)
    stream.client.set(f"{stream.key}:trace:bad", "not a list")
    queue: BatchQueue[list[str]] = BatchQueue("refusals", stream.export, BATCH)
    for i in range(100):
        queue.put(_row(i, "bad" if i in (3, 70) else "t"))
    assert queue.flush(10)
    assert len(stream.ids()) == 98
    assert queue.counters.dropped_refused == 2 and queue.status()["refused.WRONGTYPE"] == 2


def test_an_outage_during_the_search_for_refused_records_loses_nothing(
    server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Redis goes away while a refused batch is being halved: what is not settled yet waits in
    the spool's head and is settled once Redis is back, each record once."""
    with FaultyProxy(server.port) as proxy:
        stream = Stream(proxy.url)
        stream.client.set(f"{stream.key}:trace:bad", "not a list")
        calls = 0
        export = stream.export

        def failing_midway(rows: list[list[str]]) -> bool:
            nonlocal calls
            calls += 1
            if calls == 3:
                proxy.down()
            return export(rows)

        stream.export = failing_midway  # type: ignore[method-assign]
        queue = _queue(stream, tmp_path, proxy.url)
        for i in range(256):
            queue.put(_row(i, "bad" if i == 200 else "t"))
        assert not queue.flush(2)
        assert queue.counters.failed_attempts > 0
        proxy.up()
        wait_for(lambda: queue.flush(1), timeout=20, what="the batch settled")
        assert stream.ids() == [str(i) for i in range(256) if i != 200]
    assert queue.counters.dead_lettered == 1 and queue.counters.replayed == queue.counters.spooled


def test_doctor_says_which_exporter_lost_or_set_aside_records(
    server: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = Stream(server.url)
    stream.client.set(f"{stream.key}:trace:bad", "not a list")
    settings = Settings.load(
        environ={}, redis_url=server.url, stream=stream.key, service_name="doc", spool_dir=str(tmp_path)
    )
    writer = RedisStreamLogExporter(settings).writer
    queue = BatchQueue(
        "logs",
        stream.export,
        BatchSettings(schedule_delay=0.02, max_queue_size=3, max_export_batch_size=10),
        encode=lambda rows: rows,
        spool=spool_for(settings, stream.key),
        report=lambda status: writer.publish_status("logs", status),
    )
    for i in range(5):  # two more than the queue holds
        queue.put(_row(i, "bad" if i == 1 else "t"))
    assert queue.flush(5)
    queue._report(queue.status())  # type: ignore[misc]  # the worker reports every 5 s; now, here
    monkeypatch.setenv("TRACESTREAM_SPOOL_DIR", str(tmp_path))  # doctor reads this machine's spool
    findings = {finding.check: finding for finding in diagnose(server.url, stream.key)}
    exporter, letters = findings["exporter"], findings["dead letters"]
    assert exporter.status == "fail" and exporter.detail.startswith("doc:")
    assert "2 dropped (queue full 2)" in exporter.detail
    assert "Redis refused 1 records (WRONGTYPE 1), 1 of them kept" in exporter.detail
    assert letters.status == "warn" and "WRONGTYPE" in letters.detail
    writer.close()


def _error_of(call: Callable[[], object]) -> Exception:
    with pytest.raises(Exception) as caught:  # any error Redis gives is the subject
        call()
    assert isinstance(caught.value, Exception)
    return caught.value


def test_redis_errors_are_told_apart_transient_from_refused(server: EmbeddedRedis) -> None:
    """Real replies from real servers: what retrying can cure, and what only isolation can."""
    client = server.client()
    key = f"kinds:{uuid.uuid4().hex[:8]}"
    client.set(key, "a string")
    wrong_type = _error_of(lambda: client.rpush(key, "x"))
    too_big = _reply_to_a_bulk_too_big(client, key)
    refused = _error_of(lambda: redis.Redis(port=free_port(), socket_connect_timeout=1).ping())
    client.config_set("maxmemory", 1)
    try:
        out_of_memory = _error_of(lambda: client.xadd(key + ":s", {"a": "b"}))
    finally:
        client.config_set("maxmemory", 0)
    with EmbeddedRedis() as replica:
        replica.client().replicaof("127.0.0.1", server.port)
        read_only = _error_of(lambda: replica.client().set("k", "v"))
    client.config_set("busy-reply-threshold", 50)
    looping = threading.Thread(target=lambda: _error_of(lambda: client.eval("while true do end", 0)))
    looping.start()
    other = server.client()
    busy = wait_for(lambda: _busy_reply(other), what="a BUSY reply while a script loops")
    other.script_kill()
    looping.join(10)
    client.config_set("busy-reply-threshold", 5000)

    for error in (refused, out_of_memory, read_only, busy):
        assert is_transient(error), describe(error)
    for error in (wrong_type, too_big):
        assert not is_transient(error), describe(error)
    codes = [error_code(e) for e in (wrong_type, too_big, out_of_memory, read_only, busy)]
    assert codes == ["WRONGTYPE", "ERR", "OOM", "READONLY", "BUSY"]


def _reply_to_a_bulk_too_big(client: redis.Redis, key: str) -> Exception:
    """Redis refuses a value over `proto-max-bulk-len` on reading its length, then closes the
    connection. A client still writing the value may meet that reset first, so only the length
    is sent, and the answer read as redis-py reads every answer."""
    connection = redis.Connection(**client.connection_pool.connection_kwargs)
    try:
        length_only = f"*3\r\n$3\r\nSET\r\n${len(key)}\r\n{key}\r\n$1100000\r\n"
        connection.send_packed_command([length_only.encode()])
        return _error_of(connection.read_response)
    finally:
        connection.disconnect()


def _busy_reply(client: redis.Redis) -> Exception | None:
    try:
        client.ping()
    except redis.ResponseError as error:
        return error
    return None


def test_the_real_writer_sets_aside_what_redis_refuses_and_the_rest_flows(
    server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Another program took the stream's key as a string: our records are set aside, counted
    and said, and once the key is back the records behind them flow."""
    stream = f"real:{uuid.uuid4().hex[:8]}"
    settings = Settings.load(environ={}, redis_url=server.url, stream=stream, spool_dir=str(tmp_path))
    pipeline = PrivatePipeline(settings)
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        client.set(stream, "not a stream")
        for number in range(5):
            pipeline.logger.info("refused %d", number)
        pipeline.flush()
        counters = pipeline.logs.queue.counters
        wait_for(lambda: counters.dead_lettered == 5, what="five records set aside")
        client.delete(stream)
        for number in range(5):
            pipeline.logger.info("accepted %d", number)
        assert pipeline.flush()
        bodies = [fields["body"] for _, fields in client.xrange(stream)]
    finally:
        pipeline.close()
        client.close()
    assert bodies == [f"accepted {n}" for n in range(5)]
    assert "WRONGTYPE" in next(iter(counters.refused))
    [letters] = dead_letters(tmp_path)
    assert letters.records == 5


# A library that replaced a method of redis-py's with one that fails.
CLIENT_BROKEN_AFTER_IMPORT = """
import logging, tracestream
from redis.connection import Connection
tracestream.configure(service_name="broken-client")


def broken(*args, **kwargs):
    raise AttributeError("a library broke the client")


Connection.send_packed_command = broken
logging.getLogger("app").warning("hello")
"""


def test_a_client_broken_in_the_process_is_not_said_to_be_redis_refusing(
    server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Redis refused nothing: the line named Redis, and sent the reader to the wrong place."""
    env = {
        **os.environ,
        "TRACESTREAM_REDIS_URL": server.url,
        "TRACESTREAM_STREAM": f"t:{uuid.uuid4().hex[:8]}",
        "TRACESTREAM_SPOOL_DIR": str(tmp_path),
    }
    done = run_python_process(CLIENT_BROKEN_AFTER_IMPORT, env)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "dead-letter" in line]
    assert said == [
        "tracestream: WARNING logs: sending a record failed in this process (AttributeError a library"
        " broke the client); kept in the spool's dead-letter file"
    ]
    [letters] = dead_letters(tmp_path)
    assert letters.records == 1
