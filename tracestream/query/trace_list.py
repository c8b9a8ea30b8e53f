"""Recent and slow traces, answered from the trace list the span exporter writes (a summary per
local root span, in small sorted sets: see docs/stream-schema.md), never by scanning spans.

Newest first reads the sets by start time (of one service, or of failed roots when only errors
are asked for); slowest first reads, per hour of start, the sets by duration. Without a service,
every service's sets are merged as they are read. Filters the sets do not answer (a name, a
minimum duration when newest first) are applied to the summaries as they are read, a page at a
time, until `limit` match.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import orjson
import redis

from tracestream.connection import Client
from tracestream.query.query_error import QueryError
from tracestream.query.replies import tolerant_call
from tracestream.schema import TRACE_HOUR_MS
from tracestream.settings import parse_duration
from tracestream.shards import Shard, shards
from tracestream.timeparse import iso_utc, parse_time_ms

__all__ = ["TraceFilter", "TraceSummary", "recent_traces"]

# Summaries read per call: the first page is a few times `limit` (`limit` a set when several
# sets are merged), later ones grow up to this.
MAX_PAGE = 5000


@dataclass(frozen=True)
class TraceSummary:
    """A trace as its local root span tells it: a request, a task, or a span with no parent."""

    trace_id: str
    service: str
    name: str  # the route or task name of the local root, else its span name
    start_ms: float
    duration_ms: float
    error: bool
    span_count: int | None = None  # not known from the list

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "service": self.service,
            "name": self.name,
            "start": iso_utc(int(self.start_ms * 1e6)),
            "start_ms": self.start_ms,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "span_count": self.span_count,
        }


@dataclass(frozen=True)
class TraceFilter:
    """The arguments of `recent_traces`, checked. Build from user input with `TraceFilter.parse`."""

    SORTS: ClassVar[tuple[str, ...]] = ("newest", "slowest")
    MAX_LIMIT: ClassVar[int] = 1000

    service: str | None = None
    name: str | None = None
    min_duration_ms: float | None = None
    errors_only: bool = False
    sort: str = "newest"
    since_ms: int | None = None
    limit: int = 50

    @classmethod
    def parse(
        cls,
        *,
        service: str | None = None,
        name: str | None = None,
        min_duration: str | None = None,
        errors_only: bool = False,
        sort: str | None = None,
        since: str | None = None,
        limit: str | int | None = None,
        now_ms: int | None = None,
    ) -> TraceFilter:
        """Every mistake raises `QueryError` naming the bad value; empty strings mean unset."""
        try:
            minimum = (
                parse_duration(min_duration.strip()) * 1000 if min_duration and min_duration.strip() else None
            )
        except ValueError as error:
            raise QueryError(f"bad minimum duration {min_duration!r}: {error}") from None
        try:
            since_ms = parse_time_ms(since, now_ms) if since and since.strip() else None
        except ValueError as error:
            raise QueryError(str(error)) from None
        text = str(limit).strip() if limit is not None else ""
        if text and not text.isdigit():
            raise QueryError(f"bad limit {text!r}: expected a whole number from 1 to {cls.MAX_LIMIT}")
        found = cls(
            service=(service or "").strip() or None,
            name=(name or "").strip() or None,
            min_duration_ms=minimum,
            errors_only=errors_only,
            sort=(sort or "").strip() or "newest",
            since_ms=since_ms,
            limit=int(text) if text else 50,
        )
        found.check()
        return found

    def check(self) -> None:
        if self.sort not in self.SORTS:
            raise QueryError(f"bad sort {self.sort!r}: expected {' or '.join(self.SORTS)}")
        if not 1 <= self.limit <= self.MAX_LIMIT:
            raise QueryError(f"bad limit {self.limit}: expected a whole number from 1 to {self.MAX_LIMIT}")
        if self.min_duration_ms is not None and not (
            self.min_duration_ms >= 0 and math.isfinite(self.min_duration_ms)
        ):
            raise QueryError(f"bad minimum duration {self.min_duration_ms} ms: expected 0 or more")

    def matches(self, summary: TraceSummary) -> bool:
        """What the set read does not answer already (checking it again costs little)."""
        return (
            (self.service is None or summary.service == self.service)
            and (self.name is None or self.name in summary.name)
            and (self.min_duration_ms is None or summary.duration_ms >= self.min_duration_ms)
            and (not self.errors_only or summary.error)
            and (self.since_ms is None or summary.start_ms >= self.since_ms)
        )

    def find(self, client: Client, stream: str) -> list[TraceSummary]:
        """`recent_traces` with these arguments."""
        found = [summary for shard in shards(client, stream) for summary in _from_shard(shard, self)]
        return _first(sorted(found, key=self.order), self)

    def order(self, summary: TraceSummary) -> float:
        """Sort key, smallest first."""
        return -(summary.duration_ms if self.sort == "slowest" else summary.start_ms)


def recent_traces(
    client: Client,
    stream: str,
    *,
    service: str | None = None,
    name: str | None = None,
    min_duration_ms: float | None = None,
    errors_only: bool = False,
    sort: str = "newest",
    since_ms: int | None = None,
    limit: int = 50,
) -> list[TraceSummary]:
    """Traces by their local root spans, newest or slowest first; `name` matches part of the route
    or task name. Raises `QueryError` for a bad argument.

    With a service, each of its local roots is listed; without, each trace once, by the first of
    its local roots in the order asked for (a request and the task it enqueued are one trace).
    On a Redis Cluster every shard's list is read and the results merged.
    """
    wanted = TraceFilter(
        service=service,
        name=name,
        min_duration_ms=min_duration_ms,
        errors_only=errors_only,
        sort=sort,
        since_ms=since_ms,
        limit=limit,
    )
    wanted.check()
    return wanted.find(client, stream)


def _first(summaries: Iterable[TraceSummary], wanted: TraceFilter) -> list[TraceSummary]:
    """The first `limit` that match, each trace once unless one service's roots were asked for;
    reads no further than that."""
    kept: list[TraceSummary] = []
    seen: set[object] = set()  # a page read while a batch lands may repeat a summary
    for summary in summaries:
        key = summary.trace_id if wanted.service is None else summary
        if not wanted.matches(summary) or key in seen:
            continue
        seen.add(key)
        kept.append(summary)
        if len(kept) == wanted.limit:
            break
    return kept


def _from_shard(shard: Shard, wanted: TraceFilter) -> list[TraceSummary]:
    keys, client = shard.keys, shard.client
    if wanted.sort == "newest" and wanted.errors_only:
        return _first(_merged(client, [keys.error_traces], wanted.since_ms, wanted), wanted)
    services = [wanted.service] if wanted.service is not None else _services(shard, wanted.since_ms)
    if wanted.sort == "newest":
        by_start = [keys.traces(name) for name in services]
        return _first(_merged(client, by_start, wanted.since_ms, wanted), wanted)
    low_hour = None if wanted.since_ms is None else wanted.since_ms // TRACE_HOUR_MS
    found: list[TraceSummary] = []
    for hour in _hours(shard, low_hour):
        by_duration = [keys.slowest_traces(hour, name) for name in services]
        found += _first(_merged(client, by_duration, wanted.min_duration_ms, wanted), wanted)
    return found


def _services(shard: Shard, since_ms: int | None) -> list[str | None]:
    """Every service with a summary started at or after `since_ms`, then `None`: the list of every
    service that writers before 2026-12-04 also kept, read as one with the rest until it expires."""
    return [*_zrange(shard.client, shard.keys.trace_services, since_ms, 0, MAX_PAGE), None]


def _merged(
    client: redis.Redis, keys: list[str], low: float | None, wanted: TraceFilter
) -> Iterator[TraceSummary]:
    """The sets' summaries in the order asked for. Filters may pass few, so one set is read a few
    times `limit` at first; several sets share out the first read, made in one round trip."""
    page = 4 * wanted.limit if len(keys) == 1 else wanted.limit
    firsts = _first_pages(client, keys, low, page)
    return heapq.merge(
        *(_walk(client, key, low, page, first) for key, first in zip(keys, firsts, strict=True)),
        key=wanted.order,
    )


def _hours(shard: Shard, low: int | None) -> list[int]:
    reply = _zrange(shard.client, shard.keys.trace_hours, low, 0, MAX_PAGE)
    return [int(member) for member in reply if member.isdigit()]


def _walk(
    client: redis.Redis, key: str, low: float | None, page: int, members: list[str]
) -> Iterator[TraceSummary]:
    """The set's summaries, highest score first down to `low`, from its first page (`members`) on,
    read a page at a time.

    Lazy: a caller that stops early (enough matched) reads no further page.
    """
    offset = 0
    while True:
        for member in members:
            summary = _decoded(member)
            if summary is not None:
                yield summary
        if len(members) < page:
            return
        offset, page = offset + page, min(MAX_PAGE, 4 * page)
        members = _zrange(client, key, low, offset, page, descending=True)


def _first_pages(client: redis.Redis, keys: list[str], low: float | None, count: int) -> list[list[str]]:
    """Each set's first page, highest score first, in one round trip; read one by one when a
    reply is not UTF-8 (another writer's member), as `_zrange` reads it."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command(*_zrange_command(key, low, 0, count, descending=True))  # type: ignore[no-untyped-call]
    try:
        replies = pipe.execute(raise_on_error=False)
    except UnicodeDecodeError:
        return [_zrange(client, key, low, 0, count, descending=True) for key in keys]
    return [_members(reply) for reply in replies]


def _zrange(
    client: redis.Redis, key: str, low: float | None, offset: int, count: int, *, descending: bool = False
) -> list[str]:
    """A page of members by score from `low` up (or down to it); a key of another type is empty."""
    try:
        reply = tolerant_call(client, *_zrange_command(key, low, offset, count, descending=descending))
    except redis.ResponseError as error:
        reply = error
    return _members(reply)


def _zrange_command(
    key: str, low: float | None, offset: int, count: int, *, descending: bool
) -> list[str | int]:
    least = "-inf" if low is None else repr(float(low))
    bounds = ["+inf", least] if descending else [least, "+inf"]
    order = ["REV"] if descending else []
    return ["ZRANGE", key, *bounds, "BYSCORE", *order, "LIMIT", offset, count]


def _members(reply: object) -> list[str]:
    """A ZRANGE reply's members; a key of another type holds none, other refusals are raised."""
    if isinstance(reply, redis.ResponseError):
        if str(reply).startswith("WRONGTYPE"):
            return []
        raise reply
    return list(cast(list[str], reply))


def _decoded(member: str) -> TraceSummary | None:
    """A summary as the exporter writes it; another writer's member is skipped."""
    try:
        trace_id, start_ns, end_ns, error, service, name = orjson.loads(member)
        return TraceSummary(
            str(trace_id), str(service), str(name), start_ns / 1e6, (end_ns - start_ns) / 1e6, error is True
        )
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None
