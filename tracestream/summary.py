"""Counts over a time range: per service, per minute and severity, and top error groups.

Counting happens inside Redis, chunk by chunk, so only the counts cross the wire. A
service's instances are its distinct resources: each process serialises its resource
once, so equal resource text means the same process.

Counts are estimates of what the services logged when they sample: each stored record counts
for its `tracestream.sample_weight` (docs/sampling.md), and a figure that any sampled-down
record went into says so (`estimated`), shown as `~1200`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

import orjson
from redis.exceptions import ResponseError

from tracestream.connection import Client
from tracestream.lua import script_source
from tracestream.query import before, parse_stream_id, run_script, tolerant_call
from tracestream.redis_errors import is_wrong_type
from tracestream.schema import ERROR_SEVERITY, IMPLIED_SEVERITY_TEXTS, LOG_FIELDS
from tracestream.settings import SAMPLE_WEIGHT
from tracestream.shards import shards

# Entries and bytes summarised per script call, read a page at a time: Redis is never blocked
# for long, however long the entries are.
SCAN_CHUNK = 20_000
SCAN_BYTES = 4_000_000
PAGE = 256
MESSAGE_LIMIT = 1024  # bytes of an error group's message: a foreign entry's body may be megabytes
MINUTE_MS = 60_000

__all__ = [
    "ErrorGroup",
    "ServiceStatus",
    "Summary",
    "sample_weight",
    "service_status",
    "shown_count",
    "summarize",
    "weighted_count",
]

_POSITIONS = orjson.dumps({name: 2 * index + 2 for index, name in enumerate(LOG_FIELDS)}).decode()
_IMPLIED_TEXTS = orjson.dumps(IMPLIED_SEVERITY_TEXTS).decode()
Key = TypeVar("Key")


def sample_weight(attributes: Mapping[str, Any]) -> float:
    """How many records one stored record stands for: its sample weight, else 1."""
    weight = attributes.get(SAMPLE_WEIGHT)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        return 1.0
    return float(weight)


def weighted_count(attribute_maps: Iterable[Mapping[str, Any]]) -> tuple[float, bool]:
    """The estimated true count of records with these attributes, and whether it is an estimate.

    For counts taken in Python (error issues, alert rates); `summarize` counts the same way in Redis.
    """
    total, estimated = 0.0, False
    for attributes in attribute_maps:
        weight = sample_weight(attributes)
        total += weight
        estimated = estimated or weight != 1.0
    return total, estimated


def shown_count(count: float, estimated: bool) -> str:
    """`1200`, or `~1200` when sampled-down records went into it."""
    return f"~{round(count)}" if estimated else str(round(count))


@dataclass
class ServiceStatus:
    """One service over the summary's window."""

    service: str
    last_seen_ms: int = 0  # when its newest record was made (`ts`), not stored: a replayed spool's are old
    records: float = 0.0  # estimated: each stored record counts for its sample weight
    errors: int = 0  # error records are never sampled down: an exact count
    instances: set[str] = field(default_factory=set)
    records_per_minute: float = 0.0
    stored: int = 0  # records in the stream
    sampled_down: int = 0  # of those, records carrying a sample weight other than 1

    @property
    def estimated(self) -> bool:
        return self.sampled_down > 0


@dataclass
class ErrorGroup:
    """Error records with the same exception type and code location, and the services they came from."""

    exception_type: str
    code: str
    count: int
    last_seen_ms: int
    message: str  # the newest record's
    services: Counter[str] = field(default_factory=Counter)  # records per service

    def ranked_services(self) -> list[str]:
        """Most records first, then by name."""
        return sorted(self.services, key=lambda name: (-self.services[name], name))

    def service_counts(self) -> list[dict[str, Any]]:
        """`[{"service", "count"}]`, most records first: what `stats --json` and the console show."""
        return [{"service": name, "count": self.services[name]} for name in self.ranked_services()]

    def absorb(self, other: ErrorGroup) -> None:
        """Count `other`'s records in this group, which keeps the newest record's message."""
        if other.last_seen_ms > self.last_seen_ms:
            self.last_seen_ms, self.message = other.last_seen_ms, other.message
        self.count += other.count
        self.services.update(other.services)


@dataclass
class Summary:
    since_ms: int
    until_ms: int
    services: dict[str, ServiceStatus] = field(default_factory=dict)
    # estimated counts (rounded) by (minute ms, service, severity), and how many sampled-down records
    # went into each
    per_minute: Counter[tuple[int, str, str]] = field(default_factory=Counter)
    sampled_down: Counter[tuple[int, str, str]] = field(default_factory=Counter)
    _estimates: dict[tuple[int, str, str], float] = field(default_factory=dict, repr=False)
    # by (exception type, code location, service): one service's part of a group
    error_groups: dict[tuple[str, str, str], ErrorGroup] = field(default_factory=dict)

    def estimated(self, minute: int, service: str, severity: str) -> bool:
        return self.sampled_down[minute, service, severity] > 0

    def by_severity(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (_, _, severity), count in self.per_minute.items():
            counts[severity] += count
        return counts

    def estimated_severities(self) -> set[str]:
        return {severity for (_, _, severity), count in self.sampled_down.items() if count}

    def top_errors(self, count: int = 10, service: str | None = None) -> list[ErrorGroup]:
        """The biggest groups, each over every service it came from; or, given one, that service's."""
        if service is None:
            groups = _across_services(self.error_groups.values())
        else:
            groups = [group for (_, _, name), group in self.error_groups.items() if name == service]
        return sorted(groups, key=lambda group: (-group.count, -group.last_seen_ms))[:count]

    def _merge(self, services: list[Any], minutes: list[Any], groups: list[Any]) -> None:
        for name, last_ms, stored, errors, shas, estimate, sampled_down in services:
            status = self.services.setdefault(name, ServiceStatus(name))
            status.last_seen_ms = max(status.last_seen_ms, int(last_ms))
            status.records += float(estimate)
            status.stored += int(stored)
            status.sampled_down += int(sampled_down)
            status.errors += int(errors)
            status.instances.update(shas)
        for minute, service, severity, _, estimate, sampled_down in minutes:
            key = int(minute), service, severity
            self._estimates[key] = self._estimates.get(key, 0.0) + float(estimate)
            self.per_minute[key] = round(self._estimates[key])
            self.sampled_down[key] += int(sampled_down)
        for exception_type, code, count, last_ms, service, message in groups:
            found = ErrorGroup(
                exception_type, code, int(count), int(last_ms), message, Counter({service: int(count)})
            )
            _add_group(self.error_groups, (exception_type, code, service), found)


def _add_group(groups: dict[Key, ErrorGroup], key: Key, found: ErrorGroup) -> None:
    if (group := groups.setdefault(key, found)) is not found:
        group.absorb(found)


def _across_services(groups: Iterable[ErrorGroup]) -> list[ErrorGroup]:
    """Each group's parts from every service as one group."""
    merged: dict[tuple[str, str], ErrorGroup] = {}
    for group in groups:
        _add_group(
            merged, (group.exception_type, group.code), replace(group, services=Counter(group.services))
        )
    return list(merged.values())


def summarize(client: Client, stream: str, since_ms: int, until_ms: int | None = None) -> Summary:
    """Everything between two times (stream id milliseconds), every shard; rates per minute."""
    until = int(time.time() * 1000) if until_ms is None else until_ms
    summary = Summary(since_ms, until)
    for shard in shards(client, stream):
        script = shard.client.register_script(script_source("summary"))
        # Errors older than the log stream's oldest entry were trimmed from it by count; their
        # copies in `:errors` are counted instead (taken first, so none is counted twice).
        oldest = tolerant_call(shard.client, "XRANGE", shard.keys.logs, "-", "+", "COUNT", 1)
        newest = f"{until}-{2**64 - 1}"
        ranges = [(shard.keys.logs, newest)]
        if oldest and parse_stream_id(oldest[0][0])[0] > since_ms:
            ranges.append((shard.keys.errors, min(before(oldest[0][0]), newest, key=parse_stream_id)))
        for key, high in ranges:
            while True:
                args: list[str | int] = [
                    high,
                    f"{since_ms}-0",
                    SCAN_CHUNK,
                    _POSITIONS,
                    ERROR_SEVERITY,
                    SCAN_BYTES,
                    PAGE,
                    MESSAGE_LIMIT,
                    SAMPLE_WEIGHT,
                    _IMPLIED_TEXTS,
                ]
                try:
                    last, done, *part = cast(list[Any], run_script(script, [key], args))
                except ResponseError as error:
                    if key == shard.keys.logs or not is_wrong_type(error):
                        raise
                    break  # another writer's key of another type at `:errors`: no copies to count
                summary._merge(*part)
                if done or not last:
                    break
                high = before(last)
    minutes = max(1.0, (until - since_ms) / MINUTE_MS)
    for status in summary.services.values():
        status.records_per_minute = status.records / minutes
    return summary


def service_status(client: Client, stream: str, window_s: float = 3600.0) -> list[ServiceStatus]:
    """Every service seen in the window (default: the last hour), most recently seen first."""
    now = int(time.time() * 1000)
    summary = summarize(client, stream, now - int(window_s * 1000), now)
    return sorted(summary.services.values(), key=lambda status: -status.last_seen_ms)
