"""What a search asks for: `Query` and the parsing that turns user input into one."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import re2  # type: ignore[import-untyped]

from tracestream.query.query_error import QueryError
from tracestream.query.stream_ids import parse_stream_id
from tracestream.schema import (
    LogEntry,
    dump_json,
)
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


_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|.)")  # an escape in a JSON string's text


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
        """Substrings the attributes JSON must contain: a cheap server-side pre-filter. Of the value,
        its longest part without a character JSON escapes in a string: a list or map (`["a","b"]`)
        holds its quotes as they are, a string value escaped, and that part is in either."""
        parts = _ESCAPE.split(dump_json(self.value)[1:-1])
        return dump_json(self.key) + ":", max(parts, key=len)


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
        """Validate user input; every mistake raises `QueryError` naming what was wrong, a time
        range that ends before it starts included (it would match nothing, silently)."""
        pattern = compile_regex(regex) if regex else None
        now = int(time.time() * 1000) if now_ms is None else now_ms  # `1h` and `1h` are one time
        try:
            since_ms = parse_time_ms(since, now) if since else None
            until_ms = parse_time_ms(until, now) if until else None
        except ValueError as error:
            raise QueryError(str(error)) from None
        if since_ms is not None and until_ms is not None and since_ms > until_ms:
            raise QueryError(f"reversed time range: since {since!r} is after until {until!r}")
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
