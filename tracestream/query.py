"""Reading log records back: one `Query`, newest-first pages, live follow, and whole traces.

A trace id is answered from the trace index, never by scanning. Everything else walks
the digest (a line per record: id, severity, service, text) newest first with a
server-side script that reads only the entries whose lines pass, and returns only
matching entries: a search over a million records moves matches over the wire, not the stream.
Time ranges become stream ids (their millisecond part is the write time), so a range
costs nothing to skip. Functions take a decoding client and keep no state between calls:
call them from a thread in async code. On a Redis Cluster every shard is read and the
results merged newest first (see tracestream/shards.py).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol, cast

import re2  # type: ignore[import-untyped]
import redis
from redis.client import NEVER_DECODE
from redis.commands.core import Script

from tracestream.connection import CLUSTER_CHANGES, Client, refresh_topology
from tracestream.lua import script_source
from tracestream.schema import (
    INDEX_LOG,
    INDEX_SPAN,
    LOG_FIELDS,
    LogEntry,
    SpanEntry,
    StreamKeys,
    dump_json,
    tolerant_text,
)
from tracestream.shards import POLL_INTERVAL, SHARD_REFRESH_S, Shard, shards
from tracestream.timeparse import iso_utc, parse_time_ms

# OTel severity numbers: each name is the lowest number of its range.
SEVERITY_FLOORS = {
    "TRACE": 1,
    "DEBUG": 5,
    "INFO": 9,
    "WARN": 13,
    "WARNING": 13,
    "ERROR": 17,
    "FATAL": 21,
    "CRITICAL": 21,
}
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# Digest lines (records) and bytes looked at per script call: large enough to amortise the
# round trip, small enough that Redis is never blocked for long (tens of milliseconds per
# call however long the records are). A call always finishes the digest entry it started.
SCAN_BUDGET = 50_000
SCAN_BYTES = 4_000_000
# Redis looks for at most this much of a text filter (Lua's plain find costs text length times
# needle length at worst); the whole text is then checked here, in linear time.
REDIS_NEEDLE = 32

StreamId = tuple[int, int]
_MAX_SEQ = 2**64 - 1  # the largest millisecond or sequence part of a stream id
_STREAM_ID = re.compile(r"([0-9]+)(?:-([0-9]+))?")


class QueryError(ValueError):
    """A filter has a value no query can use; the message names it."""


def tolerant_call(client: redis.Redis, *command: str | int) -> Any:
    """A read whose reply may hold bytes that are not UTF-8 (another writer's): read again
    undecoded, they become `\\xNN` escapes instead of failing every record in the reply."""
    try:
        return client.execute_command(*command)  # type: ignore[no-untyped-call]
    except UnicodeDecodeError:
        return tolerant_text(client.execute_command(*command, **{NEVER_DECODE: True}))  # type: ignore[no-untyped-call]


def run_script(script: Script, keys: list[str], args: list[str | int]) -> Any:
    """`script` called as `tolerant_call` reads: a reply that is not UTF-8 is read again undecoded."""
    try:
        return script(keys=keys, args=args)
    except UnicodeDecodeError:
        return tolerant_call(
            cast(redis.Redis, script.registered_client), "EVALSHA", script.sha, len(keys), *keys, *args
        )


def parse_stream_id(text: str) -> StreamId:
    """`1700000000000-3` (or `1700000000000`) as a comparable tuple; each part fits 64 bits, as in Redis."""
    match = _STREAM_ID.fullmatch(text.strip())
    if match is None or max(int(part or 0) for part in match.groups()) > _MAX_SEQ:
        raise QueryError(
            f"invalid stream id {text!r}: expected MILLISECONDS-SEQUENCE, each 0 to 2^64-1, "
            "e.g. 1700000000000-0"
        )
    return int(match[1]), int(match[2] or 0)


def before(stream_id: str) -> str:
    """The largest id smaller than `stream_id`: an exclusive upper bound on any Redis version."""
    ms, seq = parse_stream_id(stream_id)
    if seq:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{_MAX_SEQ}" if ms else "0-0"


def after(stream_id: str) -> str | None:
    """The smallest id larger than `stream_id`; None after the largest id Redis can hold."""
    ms, seq = parse_stream_id(stream_id)
    if seq < _MAX_SEQ:
        return f"{ms}-{seq + 1}"
    return f"{ms + 1}-0" if ms < _MAX_SEQ else None


@dataclass(frozen=True)
class Cursor:
    """Where a page ended. Records are ordered newest first by (stream id, shard name), so
    one position is exact across shards, ties between shards included."""

    stream_id: str
    shard: str = ""

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """A stream id, with `.<shard name, base64url>` after it when the page came from a cluster."""
        stream_id, sep, shard = text.strip().partition(".")
        parse_stream_id(stream_id)
        try:
            name = base64.urlsafe_b64decode(shard + "=" * (-len(shard) % 4)).decode() if sep else ""
        except (binascii.Error, UnicodeDecodeError):
            raise QueryError(f"invalid cursor {text!r}: pass back a cursor a search returned") from None
        return cls(stream_id, name)

    def __str__(self) -> str:
        if not self.shard:
            return self.stream_id
        return f"{self.stream_id}.{base64.urlsafe_b64encode(self.shard.encode()).decode().rstrip('=')}"

    def high(self, shard: str) -> str:
        """The newest id of `shard` still after this position."""
        return self.stream_id if shard < self.shard else before(self.stream_id)


def parse_trace_id(text: str) -> str:
    value = text.strip().lower()
    if not _TRACE_ID.match(value) or value == "0" * 32:
        raise QueryError(f"invalid trace id {text!r}: expected 32 hex digits, not all zero")
    return value


def parse_severity(text: str) -> int:
    """The lowest severity number a name (or a number 1-24) stands for."""
    name = text.strip().upper()
    if name.isdigit() and 1 <= int(name) <= 24:
        return int(name)
    if name not in SEVERITY_FLOORS:
        raise QueryError(f"unknown severity {text!r}: expected one of {', '.join(SEVERITY_FLOORS)} or 1-24")
    return SEVERITY_FLOORS[name]


@dataclass(frozen=True)
class AttributeMatch:
    """`key=value`: the record's attribute `key` equals `value` (non-strings compared as JSON)."""

    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> AttributeMatch:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise QueryError(f"bad attribute filter {text!r}: expected key=value, e.g. http.route=/items")
        return cls(key.strip(), value)

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        if self.key not in attributes:
            return False
        found = attributes[self.key]
        return (found if isinstance(found, str) else dump_json(found)) == self.value

    @property
    def needles(self) -> tuple[str, str]:
        """Substrings the attributes JSON must contain: a cheap server-side pre-filter."""
        return dump_json(self.key) + ":", dump_json(self.value)[1:-1]


class Pattern(Protocol):
    """A compiled RE2 regex: the part of its API the filters use."""

    pattern: str

    def search(self, text: str) -> object | None: ...


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is the caller's QueryError, not a line on stderr


def compile_regex(text: str) -> Pattern:
    """User regexes run on RE2: linear time in the text, so no pattern can stall a reader.

    RE2 has no backreferences or lookaround; such a pattern is a `QueryError` that says so.
    """
    try:
        return cast(Pattern, re2.compile(text, _RE2_OPTIONS))
    except re2.error as error:
        reason = error.args[0].decode(errors="replace") if error.args else "not a valid pattern"
        raise QueryError(
            f"invalid regex {text!r}: {reason} (regexes run on RE2: no backreferences or lookaround)"
        ) from None


@dataclass(frozen=True)
class Query:
    """Every filter that is set must match (AND). Build from user input with `Query.parse`."""

    trace_id: str = ""
    services: tuple[str, ...] = ()
    min_severity: int = 0
    since_ms: int | None = None
    until_ms: int | None = None
    text: str = ""
    regex: Pattern | None = None
    attributes: tuple[AttributeMatch, ...] = ()

    @classmethod
    def parse(
        cls,
        *,
        trace_id: str | None = None,
        services: Iterable[str] = (),
        severity: str | None = None,
        since: str | None = None,
        until: str | None = None,
        text: str | None = None,
        regex: str | None = None,
        attributes: Iterable[str] = (),
        now_ms: int | None = None,
    ) -> Query:
        """Validate user input; every mistake raises `QueryError` naming what was wrong."""
        pattern = compile_regex(regex) if regex else None
        try:
            since_ms = parse_time_ms(since, now_ms) if since else None
            until_ms = parse_time_ms(until, now_ms) if until else None
        except ValueError as error:
            raise QueryError(str(error)) from None
        return cls(
            trace_id=parse_trace_id(trace_id) if trace_id else "",
            services=tuple(name for item in services for name in item.split(",") if name.strip()),
            min_severity=parse_severity(severity) if severity else 0,
            since_ms=since_ms,
            until_ms=until_ms,
            text=text or "",
            regex=pattern,
            attributes=tuple(AttributeMatch.parse(item) for item in attributes),
        )

    def matches(self, entry: LogEntry) -> bool:
        """The full check on a decoded entry (the time range is applied by stream id instead)."""
        return (
            (not self.trace_id or entry.trace_id == self.trace_id)
            and (not self.services or entry.service in self.services)
            and entry.severity_number >= self.min_severity
            and (not self.text or any(self.text in value for value in _searchable(entry)))
            and (self.regex is None or any(self.regex.search(value) for value in _searchable(entry)))
            and all(match.matches(entry.attributes) for match in self.attributes)
        )

    def in_range(self, stream_id: str) -> bool:
        ms = parse_stream_id(stream_id)[0]
        return (self.since_ms is None or ms >= self.since_ms) and (
            self.until_ms is None or ms <= self.until_ms
        )


def _searchable(entry: LogEntry) -> tuple[str, str, str]:
    """Text and regex filters look at the message and the exception it carries."""
    return entry.body, entry.exception_type, entry.exception_message


def record_json(entry: LogEntry) -> dict[str, Any]:
    """The JSON form of a record, as `--json` and exports print it."""
    return {
        "timestamp": iso_utc(entry.timestamp_ns),
        "severity": entry.severity,
        "severity_number": entry.severity_number,
        "body": entry.body,
        "service": entry.service,
        "trace_id": entry.trace_id,
        "span_id": entry.span_id,
        "attributes": entry.attributes,
        "resource": entry.resource,
        "scope": entry.scope,
        "code": entry.code,
        "exception_type": entry.exception_type,
        "exception_message": entry.exception_message,
        "exception_stacktrace": entry.exception_stacktrace,
        "record_id": entry.record_id,
        "id": entry.stream_id,
    }


# ---------------------------------------------------------------------------
# the server-side scan

_POSITIONS = {name: 2 * index + 2 for index, name in enumerate(LOG_FIELDS)}  # Lua's 1-based value slots


@dataclass(frozen=True)
class _Chunk:
    last_id: str
    scanned: int
    exhausted: bool
    entries: list[LogEntry]


class _Scanner:
    """One registered script per client; Redis caches it by hash, so re-creating one is cheap."""

    def __init__(self, client: redis.Redis, keys: StreamKeys, query: Query) -> None:
        self._script = client.register_script(script_source("scan"))
        self._keys = [keys.logs, keys.digest]
        # pre-filters only: attributes and the whole text are checked exactly once entries are here
        needles = [needle[:REDIS_NEEDLE] for match in query.attributes for needle in match.needles if needle]
        needle = query.text[:REDIS_NEEDLE]
        # digest lines hold no tabs or newlines: a text with either is checked on whole entries only
        digest_needle = "" if any(char in needle for char in "\t\n") else needle
        self._filters: list[str | int] = [
            query.min_severity,
            digest_needle,
            needle,
            query.trace_id,
            "\n".join(query.services),
            "\n".join(needles),
            *(
                _POSITIONS[name]
                for name in (
                    "severity_number",
                    "body",
                    "service",
                    "trace_id",
                    "attributes",
                    "exception_type",
                    "exception_message",
                )
            ),
        ]

    def chunk(self, high: str, low: str, budget: int, limit: int) -> _Chunk:
        reply = cast(
            list[Any],
            run_script(self._script, self._keys, [high, low, budget, limit, *self._filters, SCAN_BYTES]),
        )
        pairs = reply[3:]
        entries = [
            LogEntry.from_fields(pairs[i], dict(zip(pairs[i + 1][::2], pairs[i + 1][1::2], strict=True)))
            for i in range(0, len(pairs), 2)
        ]
        return _Chunk(reply[0], int(reply[1]), bool(reply[2]), entries)


def iter_records(
    client: Client,
    stream: str,
    query: Query,
    cursor: str | None = None,
    *,
    batch: int = 1000,
    on_scanned: Callable[[int], None] | None = None,
) -> Iterator[LogEntry]:
    """Every matching record, newest first, after `cursor` (from a `Page`, or a stream id) when given.

    `batch` is how many matches each server call may return: ask for what you will use.
    `on_scanned` hears how many entries each call looked at (for progress bars).
    """
    return (entry for entry, _ in _positioned(client, stream, query, cursor, batch, on_scanned))


def _positioned(
    client: Client,
    stream: str,
    query: Query,
    cursor: str | None,
    batch: int,
    on_scanned: Callable[[int], None] | None,
) -> Iterator[tuple[LogEntry, Cursor]]:
    """Matching records with their positions, newest first across every shard."""
    position = Cursor.parse(cursor) if cursor else None
    sources = [
        _shard_records(shard, query, position.high(shard.name) if position else "+", batch, on_scanned)
        for shard in shards(client, stream)
    ]
    merged = (
        sources[0]
        if len(sources) == 1
        else heapq.merge(
            *sources, key=lambda item: (parse_stream_id(item[1].stream_id), item[1].shard), reverse=True
        )
    )
    seen: set[str] = set()
    for entry, where in merged:
        if entry.record_id and entry.record_id in seen:
            continue  # a retried export wrote it twice
        seen.add(entry.record_id)
        yield entry, where


def _shard_records(
    shard: Shard, query: Query, high: str, batch: int, on_scanned: Callable[[int], None] | None
) -> Iterator[tuple[LogEntry, Cursor]]:
    name = shard.name if shard.tagged else ""  # a single Redis keeps plain stream ids as cursors
    if query.trace_id:
        source = _from_trace_index(shard, query, high)
    else:
        source = _from_stream(shard, query, high, batch, on_scanned)
    return ((entry, Cursor(entry.stream_id, name)) for entry in source)


def _from_stream(
    shard: Shard,
    query: Query,
    high: str,
    batch: int,
    on_scanned: Callable[[int], None] | None,
) -> Iterator[LogEntry]:
    if query.until_ms is not None and (high == "+" or parse_stream_id(high)[0] > query.until_ms):
        high = f"{query.until_ms}-{_MAX_SEQ}"
    low = f"{query.since_ms}-0" if query.since_ms is not None else "-"
    scanner = _Scanner(shard.client, shard.keys, query)
    while True:
        chunk = scanner.chunk(high, low, SCAN_BUDGET, batch)
        if on_scanned is not None:
            on_scanned(chunk.scanned)
        for entry in chunk.entries:
            if query.matches(entry):
                yield entry
        if chunk.exhausted or not chunk.last_id or chunk.last_id == "0-0":
            return
        high = before(chunk.last_id)


def _from_trace_index(shard: Shard, query: Query, high: str) -> Iterator[LogEntry]:
    limit = parse_stream_id(high) if high != "+" else None
    entries = [
        entry
        for entry in _trace_records(query.trace_id, _read_trace(shard, query.trace_id)).logs
        if query.in_range(entry.stream_id) and (limit is None or parse_stream_id(entry.stream_id) <= limit)
    ]
    entries.sort(key=lambda entry: parse_stream_id(entry.stream_id), reverse=True)
    return (entry for entry in entries if query.matches(entry))


@dataclass(frozen=True)
class Page:
    """Up to `limit` records, newest first; pass `next_cursor` back for the next (older) page."""

    records: list[LogEntry]
    next_cursor: str | None


def search(client: Client, stream: str, query: Query, cursor: str | None = None, limit: int = 100) -> Page:
    found = list(islice(_positioned(client, stream, query, cursor, limit, None), max(limit, 0)))
    full = limit > 0 and len(found) == limit
    return Page([entry for entry, _ in found], str(found[-1][1]) if full else None)


# ---------------------------------------------------------------------------
# live follow


def last_id(client: redis.Redis, stream: str) -> str:
    """The newest entry's id, or `0-0` for an empty stream: a concrete place to follow from."""
    newest = cast(list[Any], tolerant_call(client, "XREVRANGE", stream, "+", "-", "COUNT", 1))
    return str(newest[0][0]) if newest else "0-0"


class _RecentIds:
    """Record ids seen lately, bounded: retries land close to their original."""

    def __init__(self, size: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, record_id: str) -> bool:
        """False when already seen."""
        if not record_id:
            return True
        if record_id in self._ids:
            return False
        self._ids[record_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


@dataclass
class Follow:
    """Where a follow stands: the newest entry read per shard, so a restart resumes exactly there."""

    positions: dict[str, str]
    reconnects: int = 0
    _recent: _RecentIds = field(default_factory=_RecentIds)

    @classmethod
    def at_end(cls, client: Client, stream: str) -> Follow:
        """From the newest entry of every shard now."""
        return cls({shard.name: last_id(shard.client, shard.name) for shard in shards(client, stream)})

    def skip(self, entries: Iterable[LogEntry]) -> None:
        """Records already shown (a backlog read after `at_end`): not yielded again."""
        for entry in entries:
            self._recent.add(entry.record_id)


def follow(
    client: Client,
    stream: str,
    query: Query,
    state: Follow,
    *,
    block_ms: int = 1000,
    on_disconnect: Callable[[Exception], None] | None = None,
    retry_delay: float = 0.5,
) -> Iterator[LogEntry | None]:
    """New matching records as they arrive; None after each idle `block_ms`, so callers can stop.

    On a lost connection `on_disconnect` hears why and reading resumes from `state.positions`
    once Redis is back: no gap and no duplicate. Without `on_disconnect` the error is raised.
    The client's socket timeout must be longer than `block_ms`. One shard is read with a
    blocking XREAD; several (a cluster) are polled, and their news merged by stream id. The
    shard list is read again every `SHARD_REFRESH_S` seconds.
    """
    idle_since = time.monotonic()
    found: list[Shard] = []
    found_at = float("-inf")
    while True:
        try:
            if time.monotonic() - found_at >= SHARD_REFRESH_S:
                found, found_at = shards(client, stream), time.monotonic()
            block = block_ms if len(found) == 1 else None
            news: list[tuple[StreamId, str, str, dict[str, str]]] = []
            for shard in found:
                position = state.positions.setdefault(shard.name, "0-0")  # a new shard: all of it is new
                wait = ("BLOCK", block) if block is not None else ()
                reply = cast(
                    list[Any],
                    tolerant_call(
                        shard.client, "XREAD", "COUNT", 1000, *wait, "STREAMS", shard.name, position
                    ),
                )
                for _key, entries in reply or ():
                    news += [(parse_stream_id(i), shard.name, i, fields) for i, fields in entries]
        except (redis.ConnectionError, redis.TimeoutError, *CLUSTER_CHANGES) as error:
            if on_disconnect is None:
                raise
            refresh_topology(client)
            found_at = float("-inf")  # the shards' servers may have changed
            on_disconnect(error)
            state.reconnects += 1
            time.sleep(retry_delay)
            continue
        if not news:
            if block is not None or time.monotonic() - idle_since >= block_ms / 1000:
                idle_since = time.monotonic()
                yield None
            else:
                time.sleep(POLL_INTERVAL)
            continue
        idle_since = time.monotonic()
        for _, name, stream_id, fields in sorted(news):
            state.positions[name] = stream_id
            entry = LogEntry.from_fields(stream_id, fields)
            if state._recent.add(entry.record_id) and query.matches(entry):
                yield entry


# ---------------------------------------------------------------------------
# traces


@dataclass(frozen=True)
class TraceRecords:
    """A trace's spans and log records, each in time order."""

    trace_id: str
    spans: list[SpanEntry]
    logs: list[LogEntry]


def fetch_trace(client: Client, stream: str, trace_id: str) -> TraceRecords:
    """One script call per shard reads its trace index and entries: no stream scan.

    `client` must decode responses. Members whose entries were trimmed are skipped.
    """
    return _trace_records(
        trace_id, [item for shard in shards(client, stream) for item in _read_trace(shard, trace_id)]
    )


def _read_trace(shard: Shard, trace_id: str) -> list[tuple[str, str, list[str]]]:
    """(kind, stream id, flat fields) of every entry one shard's index names."""
    keys = shard.keys
    script = shard.client.register_script(script_source("trace_records"))
    reply = cast(
        list[Any],
        run_script(script, [keys.trace_index(trace_id)], [keys.logs, keys.spans, INDEX_LOG, INDEX_SPAN]),
    )
    return [(reply[index], reply[index + 1], reply[index + 2]) for index in range(0, len(reply), 3)]


def _trace_records(trace_id: str, found: Iterable[tuple[str, str, list[str]]]) -> TraceRecords:
    spans: list[SpanEntry] = []
    logs: list[LogEntry] = []
    seen: set[str] = set()
    for kind, entry_id, flat in found:
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        if fields.get("rid") in seen:  # a retried export may have written it twice
            continue
        seen.add(fields.get("rid", ""))
        if kind == INDEX_SPAN:
            spans.append(SpanEntry.from_fields(entry_id, fields))
        else:
            logs.append(LogEntry.from_fields(entry_id, fields))
    spans.sort(key=lambda span: span.start_ns)
    logs.sort(key=lambda log: log.timestamp_ns)
    return TraceRecords(trace_id, spans, logs)


@dataclass
class SpanNode:
    """A span with its child spans and its own log records, both in time order.

    `cycle` marks a span whose ancestors lead back to itself (bad parent ids): it is shown
    as a root, which breaks the cycle, instead of vanishing with every span under it.
    """

    span: SpanEntry
    children: list[SpanNode] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)
    cycle: bool = False


@dataclass(frozen=True)
class TraceTree:
    """Root spans (no parent, or a parent that never arrived) and logs that match no span."""

    trace_id: str
    roots: list[SpanNode]
    unattached_logs: list[LogEntry]

    def walk(self) -> Iterator[tuple[int, SpanNode]]:
        """Depth-first, with each span's depth: the order a waterfall draws them."""
        stack = [(0, node) for node in reversed(self.roots)]
        while stack:
            depth, node = stack.pop()
            yield depth, node
            stack.extend((depth + 1, child) for child in reversed(node.children))

    @property
    def start_ns(self) -> int:
        """The earliest time known: 0 is a time that was absent or undecodable, not the epoch."""
        starts = [node.span.start_ns for _, node in self.walk()] + [
            e.timestamp_ns for e in self.unattached_logs
        ]
        return min((start for start in starts if start), default=0)


def build_tree(records: TraceRecords) -> TraceTree:
    """A span id held by several spans (another writer's) is the earliest one's; the others are
    shown as roots of their own rather than dropped."""
    nodes: dict[str, SpanNode] = {}
    namesakes: list[SpanNode] = []
    for span in records.spans:
        if span.span_id in nodes:
            namesakes.append(SpanNode(span))
        else:
            nodes[span.span_id] = SpanNode(span)
    parents = {
        node.span.span_id: nodes[node.span.parent_span_id]
        for node in nodes.values()
        if node.span.parent_span_id in nodes
    }
    for node in _cycle_breakers(nodes, parents):
        node.cycle = True
        del parents[node.span.span_id]
    roots: list[SpanNode] = []
    for node in nodes.values():  # spans arrive sorted by start, so children stay in time order
        parent = parents.get(node.span.span_id)
        (parent.children if parent is not None else roots).append(node)
    if namesakes:
        roots = sorted(roots + namesakes, key=lambda node: node.span.start_ns)
    unattached: list[LogEntry] = []
    for entry in records.logs:
        owner = nodes.get(entry.span_id)
        (owner.logs if owner is not None else unattached).append(entry)
    return TraceTree(records.trace_id, roots, unattached)


def _cycle_breakers(nodes: dict[str, SpanNode], parents: dict[str, SpanNode]) -> list[SpanNode]:
    """The earliest span of each parent cycle: made a root, it leaves every span reachable."""
    order = {span_id: index for index, span_id in enumerate(nodes)}
    settled: set[str] = set()  # spans whose ancestors end at a root or at a cycle already found
    breakers: list[SpanNode] = []
    for span_id in nodes:
        path: list[str] = []
        on_path: set[str] = set()
        current: str | None = span_id
        while current is not None and current not in settled and current not in on_path:
            path.append(current)
            on_path.add(current)
            parent = parents.get(current)
            current = parent.span.span_id if parent is not None else None
        if current in on_path:  # walked back into this path: a new cycle
            cycle = path[path.index(current) :]
            breakers.append(nodes[min(cycle, key=order.__getitem__)])
        settled.update(path)
    return breakers


def trace_tree(client: Client, stream: str, trace_id: str) -> TraceTree:
    """Spans and log records of one trace, across services, as a tree ordered by time."""
    return build_tree(fetch_trace(client, stream, parse_trace_id(trace_id)))
