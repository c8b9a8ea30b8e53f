"""Counts over a time range: per service, per minute and severity, and top error groups.

Counting happens inside Redis, chunk by chunk, so only the counts cross the wire. A
service's instances are its distinct resources: each process serialises its resource
once, so equal resource text means the same process.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from tracestream.connection import Client
from tracestream.lua import script_source
from tracestream.query import before, run_script
from tracestream.schema import LOG_FIELDS
from tracestream.shards import shards

ERROR_FLOOR = 17  # OTel severity number of ERROR
# Entries and bytes summarised per script call, read a page at a time: Redis is never blocked
# for long, however long the entries are.
SCAN_CHUNK = 20_000
SCAN_BYTES = 4_000_000
PAGE = 256
MESSAGE_LIMIT = 1024  # bytes of an error group's message: a foreign entry's body may be megabytes
MINUTE_MS = 60_000

_POSITIONS = orjson.dumps({name: 2 * index + 2 for index, name in enumerate(LOG_FIELDS)}).decode()


@dataclass
class ServiceStatus:
    """One service over the summary's window."""

    service: str
    last_seen_ms: int = 0
    records: int = 0
    errors: int = 0
    instances: set[str] = field(default_factory=set)
    records_per_minute: float = 0.0


@dataclass
class ErrorGroup:
    """Error records with the same exception type and code location."""

    exception_type: str
    code: str
    count: int
    last_seen_ms: int
    service: str
    message: str


@dataclass
class Summary:
    since_ms: int
    until_ms: int
    services: dict[str, ServiceStatus] = field(default_factory=dict)
    per_minute: Counter[tuple[int, str, str]] = field(
        default_factory=Counter
    )  # (minute ms, service, severity)
    error_groups: dict[tuple[str, str], ErrorGroup] = field(default_factory=dict)

    def by_severity(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (_, _, severity), count in self.per_minute.items():
            counts[severity] += count
        return counts

    def top_errors(self, count: int = 10) -> list[ErrorGroup]:
        return sorted(self.error_groups.values(), key=lambda group: (-group.count, -group.last_seen_ms))[
            :count
        ]

    def _merge(self, services: list[Any], minutes: list[Any], groups: list[Any]) -> None:
        for name, last_ms, records, errors, shas in services:
            status = self.services.setdefault(name, ServiceStatus(name))
            status.last_seen_ms = max(status.last_seen_ms, int(last_ms))
            status.records += int(records)
            status.errors += int(errors)
            status.instances.update(shas)
        for minute, service, severity, count in minutes:
            self.per_minute[int(minute), service, severity] += int(count)
        for exception_type, code, count, last_ms, service, message in groups:
            group = self.error_groups.get((exception_type, code))
            if group is None:
                self.error_groups[exception_type, code] = ErrorGroup(
                    exception_type, code, int(count), int(last_ms), service, message
                )
            else:
                group.count += int(count)


def summarize(client: Client, stream: str, since_ms: int, until_ms: int | None = None) -> Summary:
    """Everything between two times (stream id milliseconds), every shard; rates per minute."""
    until = int(time.time() * 1000) if until_ms is None else until_ms
    summary = Summary(since_ms, until)
    for shard in shards(client, stream):
        script = shard.client.register_script(script_source("summary"))
        high = f"{until}-{2**64 - 1}"
        while True:
            args: list[str | int] = [
                high,
                f"{since_ms}-0",
                SCAN_CHUNK,
                _POSITIONS,
                ERROR_FLOOR,
                SCAN_BYTES,
                PAGE,
                MESSAGE_LIMIT,
            ]
            last, done, *part = cast(list[Any], run_script(script, [shard.keys.logs], args))
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
