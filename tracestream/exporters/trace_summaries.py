"""The trace list's writer half: a summary of each local root span in a batch of span rows, so
readers list recent or slow traces from small sorted sets instead of scanning the span stream.

Summaries are made from encoded rows, not OTel spans, so a batch replayed from the spool is
listed too. A row does not say whether its parent is remote, so a local root is a SERVER or
CONSUMER span (a request or a task, whose parent, if any, is another process's span: a
caller's, or the publisher's that enqueued the task), or a span with no parent that is not a
CLIENT span: outside any request, those are a worker's broker polls and pings (Celery's Redis
transport makes several a second), not work anyone looks for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from tracestream import schema

__all__ = ["ROOT_KINDS", "script_calls", "summaries"]

ROOT_KINDS = frozenset({"SERVER", "CONSUMER"})
BACKGROUND_KIND = "CLIENT"
# A summary is stored five times over: a name longer than this is cut (the span keeps it whole).
MAX_NAME_CHARS = 200
# How many summaries a set keeps when `max_entries` is 0 (no count limit): a bound on memory.
UNBOUNDED_CAP = 1_000_000

_POSITION = {name: index for index, name in enumerate(schema.SPAN_FIELDS)}
_TRACE, _PARENT, _NAME, _KIND = (_POSITION[n] for n in ("trace_id", "parent_span_id", "name", "kind"))
_START, _END, _STATUS, _SERVICE = (_POSITION[n] for n in ("start_ts", "end_ts", "status", "service"))
_ATTRIBUTES, _EVENTS = _POSITION["attributes"], _POSITION["events"]


def summaries(rows: Sequence[list[str]]) -> list[list[Any]]:
    """`[member, start ms, duration ms, service, error]` for each local root among span rows; the
    times are texts, as ZADD takes them (the script would otherwise format each number again)."""
    found: list[list[Any]] = []
    for row in rows:
        if not _local_root(row) or not row[_TRACE] or not row[_START].isdigit():
            continue
        start = int(row[_START])
        end = max(start, int(row[_END])) if row[_END].isdigit() else start
        attributes = _loads(row[_ATTRIBUTES])
        if not isinstance(attributes, dict):
            attributes = {}
        name = _name(row, attributes)
        error = (row[_STATUS] == "ERROR" or _has_exception_event(row[_EVENTS])) and not _answered_4xx(
            row, attributes
        )
        member = orjson.dumps([row[_TRACE], start, end, error, row[_SERVICE], name]).decode()
        found.append([member, _ms_text(start), _ms_text(end - start), row[_SERVICE], error])
    return found


def _ms_text(ns: int) -> str:
    """Nanoseconds as milliseconds in exact decimal text, made without a float's `repr` or a
    format spec (each costs several times more)."""
    digits = str(ns).zfill(7)
    return f"{digits[:-6]}.{digits[-6:]}"


def _local_root(row: list[str]) -> bool:
    kind = row[_KIND]
    return kind in ROOT_KINDS or (not row[_PARENT] and kind != BACKGROUND_KIND)


def _name(row: list[str], attributes: dict[str, Any]) -> str:
    """The route, from `/` as request records name it (Django's lack it), or the Celery task's
    name: either names a local root better than its span name."""
    if route := attributes.get("http.route"):
        name = schema.rooted_route(str(route)) or ""
    elif task := attributes.get("celery.task_name"):
        name = str(task)
    else:
        name = row[_NAME]
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"


def _answered_4xx(row: list[str], attributes: dict[str, Any]) -> bool:
    """A request its server answered with a 4xx failed the client, not the server: the HTTP
    conventions leave such a server span's status unset, and the request record is a WARN. The
    contrib Django instrumentation still marks one a view's `Http404` answered as an error."""
    if row[_KIND] != "SERVER":
        return False
    status = attributes.get("http.response.status_code", attributes.get("http.status_code"))
    return isinstance(status, int) and 400 <= status < 500


def _has_exception_event(events: str) -> bool:
    if '"exception"' not in events:  # the common case costs no parse
        return False
    parsed = _loads(events)
    return isinstance(parsed, list) and any(
        isinstance(event, dict) and event.get("name") == "exception" for event in parsed
    )


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def script_calls(
    keys: schema.StreamKeys,
    rows: Sequence[list[str]],
    max_entries: int,
    age_s: int,
    per_call: int,
    redis_ahead_ms: int | None,
) -> list[list[str | int | bytes]]:
    """The key and arguments of each `trace_list` script call for a shard's rows, `per_call`
    summaries a call (as the append calls, so no call blocks Redis long); none when no row is a
    root. Summaries are kept `age_s` seconds, as the trace index is, at most `max_entries` a set,
    counted by Redis's clock (`redis_ahead_ms` from ours): until a call has told it, none is
    trimmed by age, since this host's clock may run ahead of the others'."""
    found = summaries(rows)
    now_ms = int(time.time() * 1000) + (redis_ahead_ms or 0)
    arguments: list[str | int | bytes] = [
        keys.traces(),
        now_ms - age_s * 1000 if redis_ahead_ms is not None else 0,
        max_entries or UNBOUNDED_CAP,
        age_s,
        now_ms,
        schema.TRACE_HOUR_MS,
    ]
    return [
        [*arguments, orjson.dumps(found[start : start + per_call])]
        for start in range(0, len(found), per_call)
    ]
