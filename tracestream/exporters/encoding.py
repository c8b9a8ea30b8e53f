"""OTel log records and spans as stream rows: the writer's half of the stream layout in tracestream.schema."""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from tracestream._internal_log import internal_logger
from tracestream.schema import (
    ENQUEUED_BY,
    ERROR_SEVERITY,
    EXCEPTION_KEYS,
    SCHEMA_VERSION,
    dump_json,
    implied_severity_text,
    load_json,
    record_fingerprint,
)


def exception_fields(
    exc_type: type[BaseException], error: BaseException | None, tb: TracebackType | None
) -> tuple[str, str, str]:
    """Type, message and stacktrace of an exception, as `sys.exc_info()` gives it. A broken
    `__str__` costs only the message, which then reads as the stacktrace's last line does."""
    try:
        message = "" if error is None else str(error)
    except Exception:  # raised by it, or a non-str result
        message = "<exception str() failed>"
    return qualified_name(exc_type), message, _formatted(exc_type, error, tb)


# CPython 3.11.0 to 3.11.7 (gh-106905): `ast.parse` on two threads at once can raise SystemError
# in either. Formatting a traceback parses each frame's line there, to mark its error with
# `~~~^^^`, and the export thread formats beside an app that may be parsing too: pytest, which
# formats its failures so, aborted with INTERNALERROR. There, frames are formatted without their
# columns, which leaves those markers out and parses nothing.
_AST_IS_THREAD_UNSAFE = (3, 11) <= sys.version_info[:3] < (3, 11, 8)


def _formatted(exc_type: type[BaseException], error: BaseException | None, tb: TracebackType | None) -> str:
    if not _AST_IS_THREAD_UNSAFE or error is None:
        return "".join(traceback.format_exception(exc_type, error, tb))
    report = traceback.TracebackException(exc_type, error, tb, compact=True)  # as format_exception makes it
    for frame in _frames_of(report):
        frame.colno = None  # type: ignore[attr-defined]  # 3.11 and later; this branch is 3.11 only
    return "".join(report.format())


def _frames_of(report: traceback.TracebackException) -> Iterator[traceback.FrameSummary]:
    """Every frame of the exception, its causes, contexts and a group's exceptions."""
    seen: set[int] = set()
    pending: list[traceback.TracebackException | None] = [report]
    while pending:
        each = pending.pop()
        if each is None or id(each) in seen:
            continue
        seen.add(id(each))
        yield from each.stack
        pending += [each.__cause__, each.__context__, *(getattr(each, "exceptions", None) or ())]


def qualified_name(cls: type) -> str:
    """`ValueError`, `django.db.utils.IntegrityError`: the exception type as records carry it."""
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


_COLOUR_CODE = re.compile(r"\x1b\[[0-9;:]*m")  # SGR: colours, bold, underline, reset
_CODE_KEYS = (
    ("code.file.path", "code.filepath"),
    ("code.line.number", "code.lineno"),
    ("code.function.name", "code.function"),
)
NO_EXCEPTION = ("", "", "")
_TAKEN_KEYS = frozenset((*EXCEPTION_KEYS, *(name for names in _CODE_KEYS for name in names)))


@dataclass(frozen=True)
class EncodedResource:
    """A resource serialised once per process, not once per record."""

    json: str
    service: str

    @classmethod
    def of(cls, resource: Resource) -> EncodedResource:
        attributes = dict(resource.attributes)
        return cls(dump_json(attributes), str(attributes.get("service.name", "unknown_service")))


def code_location(path: object, line: object, function: object) -> str:
    if not path:
        return ""
    where = f"{path}:{line}" if line not in ("", None) else str(path)
    return f"{where} in {function}" if function else where


def log_values(
    record_id: str,
    timestamp_ns: int,
    severity: str,
    severity_number: int,
    body: object,
    resource: EncodedResource,
    trace_id: int,
    span_id: int,
    trace_flags: int,
    scope: str,
    code: str,
    attributes: Mapping[str, Any],
    exception: tuple[str, str, str],
) -> list[str]:
    """The one place a log entry is laid out. The severity text is left out when the number
    implies it, and the resource is the call's (the append script stores it by reference)."""
    return [
        SCHEMA_VERSION,
        record_id,
        str(timestamp_ns),
        "" if severity == implied_severity_text(severity_number) else severity,
        str(severity_number),
        body_text(body),
        resource.service,
        trace_id_hex(trace_id),
        span_id_hex(span_id),
        str(trace_flags),
        scope,
        code,
        dump_json(attributes) if attributes else "{}",
        resource.json,
        *exception,
    ]


def otel_log_values(
    record: ReadableLogRecord | ReadWriteLogRecord, record_id: str, resource: EncodedResource
) -> list[str]:
    """A record from the OTel logs API."""
    log = record.log_record
    number = log.severity_number
    scope = record.instrumentation_scope
    attributes = attribute_dict(log.attributes)
    code, exception = take_code_and_exception(attributes)
    return log_values(
        record_id,
        log.timestamp or log.observed_timestamp or 0,
        log.severity_text or (number.name if number else ""),
        number.value if number is not None else 0,
        log.body,
        resource,
        log.trace_id or 0,
        log.span_id or 0,
        int(log.trace_flags or 0),
        scope.name if scope else "",
        code,
        attributes,
        exception,
    )


def take_code_and_exception(attributes: dict[str, Any]) -> tuple[str, tuple[str, str, str]]:
    """Code location and exception out of semconv attributes, which then no longer hold them."""
    if attributes.keys().isdisjoint(_TAKEN_KEYS):  # a request or task record: nothing to take
        return "", NO_EXCEPTION
    exception_type, message, stacktrace = (str(attributes.pop(key, "")) for key in EXCEPTION_KEYS)
    code = code_location(*(_pop_first(attributes, names) for names in _CODE_KEYS))
    return code, (exception_type, message, stacktrace)


def _pop_first(attributes: dict[str, Any], names: tuple[str, str]) -> Any:
    """The current semconv name, else the older one; both are removed."""
    current, older = (attributes.pop(name, "") for name in names)
    return current if current != "" else older


def span_values(span: ReadableSpan, record_id: str, resource: EncodedResource) -> list[str]:
    """The one place a span entry is laid out."""
    context = span.context
    parent = span.parent
    scope = span.instrumentation_scope
    events = [
        {"name": event.name, "ts": event.timestamp, "attributes": attribute_dict(event.attributes)}
        for event in span.events
    ]
    if span.links:
        _say_links_are_not_stored(span.name)
    return [
        SCHEMA_VERSION,
        record_id,
        trace_id_hex(context.trace_id if context else 0),
        span_id_hex(context.span_id if context else 0),
        span_id_hex(parent.span_id if parent else 0),
        span.name,
        span.kind.name,
        str(span.start_time or 0),
        str(span.end_time or 0),
        span.status.status_code.name,
        span.status.description or "",
        resource.service,
        scope.name if scope else "",
        dump_json(attribute_dict(span.attributes)),
        dump_json(events),
        resource.json,
    ]


_links_said = False


def _say_links_are_not_stored(first: str) -> None:
    global _links_said
    if _links_said:
        return
    _links_said = True
    internal_logger.warning(
        "span links are not stored: the span stream has no field for them (the first span with "
        "links: %r); the spans themselves are, and exporters beside redis_stream get the links",
        first,
    )


def attribute_dict(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of an SDK attribute map. Its own `copy()` is a dict copy, where `dict(attributes)`
    reads each key back through the SDK's Python `__getitem__` (a span's 9: 20k instructions)."""
    if not attributes:
        return {}
    try:
        copied = attributes.copy()  # type: ignore[attr-defined]  # a read-only view asks the map it shows
    except AttributeError:  # a map without one, or a view of one
        return dict(attributes)
    return copied if type(copied) is dict else dict(copied)


def body_text(body: object) -> str:
    """Log bodies are strings on the wire; anything else is stored as JSON. Colour codes are
    the terminal's, not the message's (Werkzeug colours a 404's request line): left in, a
    search for the text the terminal shows misses the line. Other codes stay, shown escaped."""
    if isinstance(body, str):
        return _COLOUR_CODE.sub("", body) if "\x1b[" in body else body
    if body is None:
        return ""
    return dump_json(body)


def trace_id_hex(trace_id: int) -> str:
    return _id_hex(trace_id, 16)


def span_id_hex(span_id: int) -> str:
    return _id_hex(span_id, 8)


def _id_hex(number: int, size: int) -> str:
    """`to_bytes(...).hex()` costs half of `format()`, which parses its format spec each call; an
    id no SDK should make (negative, too large) is written as `format()` writes it."""
    if not number:
        return ""
    try:
        return number.to_bytes(size, "big").hex()
    except OverflowError:
        return format(number, f"0{2 * size}x")


# severity_number texts of ERROR and up: a set lookup is all a row that is not an error costs
ERROR_NUMBERS = frozenset(str(number) for number in range(ERROR_SEVERITY, 25))


class ErrorRows:
    """What the append script needs to keep a batch's errors: for each ERROR+ row, its position,
    fingerprint, causal route and instance. Worked out from the rows themselves, so a batch
    replayed from the spool gets the same; nothing is added to the entries."""

    def __init__(self, field_names: tuple[str, ...]) -> None:
        position = field_names.index
        self._severity = position("severity_number")
        self._type, self._message, self._stack = (
            position(name) for name in ("exception_type", "exception_message", "exception_stacktrace")
        )
        self._body, self._attributes = position("body"), position("attributes")
        self._resource = position("resource")
        self._instance = ("", "")  # the last resource text seen and its instance

    def side(self, rows: Sequence[list[str]]) -> str:
        """`[[row (1-based), fingerprint, route, instance], ...]` as JSON, or "" without errors."""
        severity = self._severity
        found = [
            [index, *self._details(row)]
            for index, row in enumerate(rows, 1)
            if row[severity] in ERROR_NUMBERS
        ]
        return dump_json(found) if found else ""

    def _details(self, row: list[str]) -> tuple[str, str, str]:
        attributes = _json_object(row[self._attributes])
        fingerprint = record_fingerprint(
            row[self._type], row[self._stack], row[self._message], row[self._body], attributes
        )
        return fingerprint, causal_route(attributes), self._instance_of(row[self._resource])

    def _instance_of(self, resource: str) -> str:
        if self._instance[0] is not resource:
            self._instance = (resource, instance_name(resource))
        return self._instance[1]


def _json_object(text: str) -> dict[str, Any]:
    """A row's attribute or resource map; empty where another writer left something else."""
    try:
        value = load_json(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def causal_route(attributes: Mapping[str, Any]) -> str:
    """The causal route of an error: what enqueued its task, else the request's route."""
    route = attributes.get(ENQUEUED_BY) or attributes.get("http.route") or ""
    return route if isinstance(route, str) else ""


def instance_name(resource_json: str) -> str:
    """`service.instance.id`, else `host.name:process.pid`: one process of a service."""
    resource = _json_object(resource_json)
    if resource.get("service.instance.id"):
        return str(resource["service.instance.id"])
    host, pid = resource.get("host.name"), resource.get("process.pid")
    return f"{host or '?'}:{pid}" if pid is not None else str(host or "")
