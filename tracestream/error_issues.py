"""Error issues: ERROR+ records grouped by fingerprint, kept up to date by the append script.

The writer does the counting as it appends a batch (tracestream/lua/append.lua), so issues need
no process of their own, count each stored record once, and outlive the stream's retention
(their own TTL, `schema.ISSUE_TTL_S` after the newest record). This module reads them and
changes their status. Layout and rules: docs/errors.md.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from tracestream.connection import Client
from tracestream.lua import script_source
from tracestream.query import QueryError, record_at, run_script
from tracestream.schema import LogEntry, fingerprint_of
from tracestream.shards import Shard, shards
from tracestream.timeparse import iso_utc

__all__ = [
    "STATUSES",
    "ErrorIssue",
    "fingerprint_of",
    "get_issue",
    "list_issues",
    "newest_record",
    "set_status",
]

# A status as the append script keeps it: a recurrence turns resolved (1) back to open (0).
STATUSES = ("open", "resolved", "ignored")
HOUR_MS = 3_600_000
HOURS = 24
_SLOT_HOUR = 2**32  # an hourly slot holds `hour * 2^32 + count`
SAMPLES = 5  # sample trace ids kept per issue, in turn
MAX_INSTANCES = 50  # instances an issue names (lua/append.lua); from then on records are counted together


@dataclass(frozen=True)
class ErrorIssue:
    """One issue, merged over every shard that holds it."""

    fingerprint: str
    service: str  # where it was first seen
    type: str
    message: str  # its first record's
    count: int
    first_seen_ms: int
    last_seen_ms: int
    status: str
    regression: bool  # resolved, then seen again
    trace_id: str  # the newest record's trace
    sample_trace_ids: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)  # most records first
    instances: list[str] = field(default_factory=list)
    other_instances: int = 0  # records counted once MAX_INSTANCES were named, from any instance
    hourly: list[int] = field(default_factory=list)  # the last 24 hours, oldest first
    chain: list[dict[str, Any]] = field(default_factory=list)  # {"route", "count"}, most first
    newest_record_id: str = ""  # its stream id, in the log stream or `<stream>:errors`
    estimated: bool = False  # error records are never sampled down: counts are exact

    def to_json(self) -> dict[str, Any]:
        """The object `tracestream errors --json` prints."""
        return {
            "fingerprint": self.fingerprint,
            "service": self.service,
            "type": self.type,
            "message": self.message,
            "count": self.count,
            "first_seen": iso_utc(self.first_seen_ms * 1_000_000),
            "last_seen": iso_utc(self.last_seen_ms * 1_000_000),
            "status": self.status,
            "trace_id": self.trace_id,
            "regression": self.regression,
            "chain": self.chain,
            "services": self.services,
            "instances": self.instances,
            "other_instances": self.other_instances,
            "hourly": self.hourly,
            "sample_trace_ids": self.sample_trace_ids,
            "newest_record_id": self.newest_record_id,
            "estimated": self.estimated,
        }


def list_issues(
    client: Client,
    stream: str,
    *,
    since_ms: int | None = None,
    service: str | None = None,
    status: str | None = None,
    limit: int = 200,
) -> list[ErrorIssue]:
    """Issues last seen at or after `since_ms`, newest last seen first; `service` keeps those that
    hit that service, `status` those in that status (ValueError for one not in STATUSES)."""
    state = _state_of(status) if status is not None else ""
    if limit <= 0:
        return []
    since: str | int = "-inf" if since_ms is None else since_ms
    every = shards(client, stream)
    parts = [_read(shard, [since, service or "", state, limit, ""]) for shard in every]
    if len(every) > 1:
        # Sharded by service, each shard holds part of an issue: read every part of the issues found.
        wanted = "\n".join(dict.fromkeys(part.fingerprint for found in parts for part in found))
        parts = (
            [_read(shard, ["-inf", "", "", limit * len(every), wanted]) for shard in every] if wanted else []
        )
    issues = [
        issue
        for issue in _merged(parts)
        if (status is None or issue.status == status) and (service is None or service in issue.services)
    ]
    return sorted(issues, key=lambda issue: (-issue.last_seen_ms, issue.fingerprint))[:limit]


def get_issue(client: Client, stream: str, fingerprint: str) -> ErrorIssue | None:
    args: list[str | int] = ["-inf", "", "", 1, fingerprint]
    found = _merged(_read(shard, args) for shard in shards(client, stream))
    return found[0] if found else None


def newest_record(client: Client, stream: str, issue: ErrorIssue) -> LogEntry | None:
    """The issue's newest record, with its stack trace; None once it is trimmed from both the log
    stream and `<stream>:errors`."""
    if not issue.newest_record_id:
        return None
    try:
        return record_at(
            client, stream, issue.newest_record_id, lambda entry: entry.fingerprint == issue.fingerprint
        )
    except QueryError:  # not a stream id: another writer's hash
        return None


def set_status(client: Client, stream: str, fingerprint: str, status: str) -> bool:
    """Resolve, ignore or reopen an issue on every shard holding it; False when none does.

    Resolving or reopening clears `regression`; a record of a resolved issue reopens it as one.
    Needs write rights (HSET), unlike the rest of this module."""
    state = _state_of(status)
    changed = False
    for shard in shards(client, stream):
        key = shard.keys.issue(fingerprint)
        if not shard.client.exists(key):
            continue
        if status == "ignored":
            shard.client.hset(key, "state", state)
        else:
            shard.client.hset(key, mapping={"state": state, "regression": 0})
        changed = True
    return changed


def _state_of(status: str) -> str:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}: expected one of {', '.join(STATUSES)}")
    return str(STATUSES.index(status))


def _read(shard: Shard, args: list[str | int]) -> list[_Part]:
    keys = shard.keys
    script = shard.client.register_script(script_source("issues"))
    reply = cast(list[Any], run_script(script, [keys.issues], [keys.issue(""), *args]))
    return [
        _Part(str(reply[i]), dict(zip(reply[i + 1][::2], reply[i + 1][1::2], strict=True)))
        for i in range(0, len(reply), 2)
    ]


class _Part:
    """One shard's hash of an issue (sharded by service, each shard holds its services' part),
    read in one pass: a page of 200 issues is some 10,000 fields."""

    def __init__(self, fingerprint: str, fields: Mapping[str, str]) -> None:
        self.fingerprint = fingerprint
        self.fields = fields
        self.counted: dict[str, dict[str, int]] = {
            "s:": {},
            "i:": {},
            "c:": {},
        }  # services, instances, routes
        self.slots: list[int] = []  # `hour * 2^32 + count` per hour of the day
        for name, value in fields.items():
            counted = self.counted.get(name[:2])
            if counted is not None:
                counted[name[2:]] = _number(value)
            elif name[:1] == "h" and name[1:].isdigit():
                self.slots.append(_number(value))
        self.count = _number(fields.get("count"))
        self.other_instances = _number(fields.get("other_instances"))
        self.first_ms = _number(fields.get("first"))
        self.last_ms = _number(fields.get("last"))

    def hours(self, now_hour: int) -> Iterator[tuple[int, int]]:
        """(position in the last 24 hours, count) of each slot that holds one of them."""
        for slot in self.slots:
            hour, n = divmod(slot, _SLOT_HOUR)
            if now_hour - HOURS < hour <= now_hour:
                yield hour - now_hour + HOURS - 1, n

    def samples(self) -> list[str]:
        """Sample trace ids, newest first (they are kept in turn, slot `count % SAMPLES` next)."""
        found = (self.fields.get(f"t{(self.count - k) % SAMPLES}", "") for k in range(SAMPLES))
        return [trace for trace in found if trace]


def _number(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:  # another writer's hash: a reader never fails on it
        return 0


def _merged(per_shard: Iterable[list[_Part]]) -> list[ErrorIssue]:
    by_fingerprint: dict[str, list[_Part]] = {}
    for parts in per_shard:
        for part in parts:
            by_fingerprint.setdefault(part.fingerprint, []).append(part)
    now_hour = int(time.time() * 1000) // HOUR_MS
    return [_issue(parts, now_hour) for parts in by_fingerprint.values()]


def _summed(parts: list[_Part], kind: str) -> Mapping[str, int]:
    if len(parts) == 1:
        return parts[0].counted[kind]
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part.counted[kind])
    return total


def _ranked(counts: Mapping[str, int]) -> list[str]:
    return [name for name, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def _issue(parts: list[_Part], now_hour: int) -> ErrorIssue:
    newest = max(parts, key=lambda part: part.last_ms)
    first = min(parts, key=lambda part: part.first_ms).fields
    services, instances, routes = (_summed(parts, kind) for kind in ("s:", "i:", "c:"))
    hourly = [0] * HOURS
    for part in parts:
        for position, n in part.hours(now_hour):
            hourly[position] += n
    state = _number(newest.fields.get("state"))
    return ErrorIssue(
        fingerprint=newest.fingerprint,
        service=first.get("service", ""),
        type=first.get("type", ""),
        message=first.get("message", ""),
        count=sum(part.count for part in parts),
        first_seen_ms=min(part.first_ms for part in parts),
        last_seen_ms=newest.last_ms,
        status=STATUSES[state] if 0 <= state < len(STATUSES) else "open",
        regression=newest.fields.get("regression") == "1",
        trace_id=newest.fields.get("trace", ""),
        sample_trace_ids=list(dict.fromkeys(t for part in parts for t in part.samples()))[:SAMPLES],
        services=_ranked(services),
        instances=_ranked(instances),
        other_instances=sum(part.other_instances for part in parts),
        hourly=hourly,
        chain=[{"route": route, "count": routes[route]} for route in _ranked(routes)],
        newest_record_id=newest.fields.get("newest", ""),
    )
