"""Searching: the digest (a line per record: id, severity, service, text) walked newest first.

A server-side script reads only the entries whose lines pass, and returns only matching entries: a
search over a million records moves matches over the wire, not the stream. Where the digest does not
cover the stream (evicted, deleted, or never written), the script reads the stream itself, slower but
never blind. Time ranges become stream ids (their millisecond part is the write time), so a range
costs nothing to skip.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, cast

import redis

from tracestream.connection import Client
from tracestream.lua import script_source
from tracestream.query.filters import Query
from tracestream.query.query_error import QueryError
from tracestream.query.replies import run_script, tolerant_call
from tracestream.query.resources import resolve_resources
from tracestream.query.seen_ids import SeenRecordIds
from tracestream.query.stream_ids import MAX_PART, before, parse_stream_id
from tracestream.query.trace_lookup import read_trace, records_of_trace
from tracestream.schema import (
    ERROR_SEVERITY,
    LOG_FIELDS,
    LogEntry,
    StreamKeys,
)
from tracestream.shards import Shard, shards

# Digest lines (an entry read whole, where the digest does not reach or cannot tell a filter,
# counts as 25) and bytes looked at per script call: large enough to amortise the round trip,
# small enough that Redis is never blocked for long (tens of milliseconds per call however long
# the records are).
SCAN_BUDGET = 50_000
SCAN_BYTES = 4_000_000
# Records a script call may hand back, however few were asked for: Redis tells an attribute
# filter by its name's and value's text apart (`"user.id":` and `0`), and a call that stopped at
# each record only Python then refused (user 3990) took one round trip per record.
CANDIDATES_A_CALL = 100
# Redis looks for at most this much of a text filter (Lua's plain find costs text length times
# needle length at worst); the whole text is then checked here, in linear time.
REDIS_NEEDLE = 32


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
        self._client, self._stream_keys = client, keys
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
        found = [
            (pairs[i], dict(zip(pairs[i + 1][::2], pairs[i + 1][1::2], strict=True)))
            for i in range(0, len(pairs), 2)
        ]
        resolve_resources(self._client, self._stream_keys, (fields for _, fields in found))
        entries = [LogEntry.from_fields(stream_id, fields) for stream_id, fields in found]
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
    seen = SeenRecordIds()
    for entry, where in merged:
        if entry.record_id and not seen.add(entry.record_id):
            continue  # a retried export wrote it twice
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
        high = f"{query.until_ms}-{MAX_PART}"
    low = f"{query.since_ms}-0" if query.since_ms is not None else "-"
    scanner = _Scanner(shard.client, shard.keys, query)
    while True:
        chunk = scanner.chunk(high, low, SCAN_BUDGET, max(batch, CANDIDATES_A_CALL))
        if on_scanned is not None:
            on_scanned(chunk.scanned)
        for entry in chunk.entries:
            if query.matches(entry):
                yield entry
        if chunk.last_id and chunk.last_id != "0-0":
            high = before(chunk.last_id)
        if chunk.exhausted or not chunk.last_id or chunk.last_id == "0-0":
            break
    if query.min_severity >= ERROR_SEVERITY:
        # Below what the stream holds, it was trimmed: its errors live on in `:errors`.
        yield from _from_errors(shard, query, high, low, batch)


def _from_errors(shard: Shard, query: Query, high: str, low: str, batch: int) -> Iterator[LogEntry]:
    """Matching entries of `<stream>:errors` from `high` down to `low`, newest first."""
    count = max(16, min(batch, 1000))
    while True:
        try:
            found = tolerant_call(shard.client, "XREVRANGE", shard.keys.errors, high, low, "COUNT", count)
        except redis.ResponseError:  # another writer's key of another type: no copies to read
            return
        resolve_resources(shard.client, shard.keys, (fields for _, fields in found or ()))
        for stream_id, fields in found or ():
            entry = LogEntry.from_fields(stream_id, fields)
            if query.matches(entry):
                yield entry
        if not found or len(found) < count:
            return
        high = before(found[-1][0])


def _from_trace_index(shard: Shard, query: Query, high: str) -> Iterator[LogEntry]:
    limit = parse_stream_id(high) if high != "+" else None
    entries = [
        entry
        for entry in records_of_trace(query.trace_id, read_trace(shard, query.trace_id)).logs
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
