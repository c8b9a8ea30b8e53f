"""The bridge from stdlib `logging` into OTel log records.

The application thread pays only for what must happen there: the formatted message
(arguments may change later), the current OTel context and a timestamp. Everything
else (attributes, code location, exception, encoding) happens on the export worker,
which keeps a `logger.info` call cheap; bench/export_throughput.py measures it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from time import time_ns
from types import FrameType, TracebackType
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, get_current
from opentelemetry.instrumentation.log_utils import std_to_otel
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import get_current_span

from tracestream import schema
from tracestream.exporters import encoding
from tracestream.otel_setup.processors import StreamLogProcessor
from tracestream.otel_setup.snapshot import snapshot_values
from tracestream.otel_setup.sql_parameters import ENGINE_LOGGER, BoundParameters
from tracestream.otel_setup.structured import (
    STACKTRACE_KEY,
    TEXT_VALUES,
    as_text,
    context_bound,
    exception_from_text,
    innermost_frames,
    read_structlog_event,
    take_stack,
)

# Logs written while we export (by us, redis-py, urllib3 or the SDK) must not loop back.
_SUPPRESS_KEY = _SUPPRESS_INSTRUMENTATION_KEY
_SUPPRESS_KEY_PLAIN = "suppress_instrumentation"
_OWN_LOGGERS = ("opentelemetry", "tracestream")
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    # What the record is already: upstream's log correlation (OTEL_PYTHON_LOG_CORRELATION) adds
    # its trace and span ids and the service, and uvicorn its message with ANSI colours.
    "otelTraceID",
    "otelSpanID",
    "otelTraceSampled",
    "otelServiceName",
    "color_message",
}
_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}
# A record's body: its message, or a map or list logged as the message itself.
Body = str | dict[Any, Any] | list[Any]
_STRUCTLOG_EXTRAS = ("_logger", "_name")


@functools.cache
def _severity(levelno: int, levelname: str) -> tuple[str, int]:
    """OTel severity text and number for a stdlib level, computed once per level."""
    return _SEVERITY_TEXT.get(levelname, levelname), std_to_otel(levelno).value


@functools.cache
def _severity_number(levelno: int) -> SeverityNumber:
    return std_to_otel(levelno)


@functools.lru_cache(maxsize=4096)
def _cached_code_location(path: str, line: int, function: str | None) -> str:
    return encoding.code_location(path, line, function)


def _code_location(path: str, line: int, function: str | None) -> str:
    """Call sites repeat from record to record, so each is laid out once."""
    try:
        return _cached_code_location(path, line, function)
    except TypeError:  # a filter set an unhashable value: laid out without the cache
        return encoding.code_location(path, line, function)


def _extra_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The record's `extra=` fields, in the order the app gave them (a limit keeps the first).
    loguru hands a message to a logging handler (its PropagateHandler recipe) with what was bound
    under one `extra` field: those are the fields, as loguru's own messages store them."""
    extras = {key: value for key, value in fields.items() if key not in _RESERVED}
    bound = extras.get("extra")
    if type(bound) is dict and len(extras) == 1 and _handed_on_by_loguru():
        return dict(bound)
    return extras


# Between loguru's sink for a logging handler and the capture: the app's handler, `Logger.handle`,
# `callHandlers`, a handler's `handle` and `emit`, and ours.
_FRAMES_FROM_LOGURU = 16


def _handed_on_by_loguru() -> bool:
    sinks = sys.modules.get("loguru._simple_sinks")
    write = getattr(getattr(sinks, "StandardSink", None), "write", None)
    code = getattr(write, "__code__", None)
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_FRAMES_FROM_LOGURU):
        if frame is None or code is None:
            return False
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


class PendingStdlibRecord:
    """What the app thread captured: the record's values, not the `LogRecord` itself.

    A backlog of queued records then costs the garbage collector one object each instead of
    the record, its `__dict__` and its arguments, which it would walk again and again.
    """

    __slots__ = (
        "bound", "context", "created", "exc_info", "exc_text", "extras", "function", "handler",
        "level", "level_name", "line", "logger", "message", "observed_ns", "path",
    )  # fmt: skip

    def __init__(
        self,
        record: logging.LogRecord,
        message: Body,
        context: Context,
        observed_ns: int,
        handler: OTelHandler,
    ) -> None:
        self.message = message
        self.context = context
        self.observed_ns = observed_ns
        self.handler = handler
        self.created = record.created
        self.level = record.levelno
        self.level_name = record.levelname
        self.logger = record.name
        self.path = record.pathname
        self.line = record.lineno
        self.function = record.funcName
        self.exc_info = record.exc_info
        self.exc_text = record.exc_text
        modules = sys.modules  # libraries whose recipes bind key/values to a context (`context_bound`)
        self.bound = contextvars.copy_context() if "structlog" in modules or "loguru" in modules else None
        fields = vars(record)
        plain = fields.keys() <= _RESERVED  # the common case, told without building a set
        self.extras = None if plain else snapshot_values(_extra_fields(fields))
        if type(record.msg) is dict and "_logger" in fields:
            self._take_structlog_event(record.msg)
        elif self.extras is not None:
            self._leave_out_what_the_record_is(self.extras, record)
        if record.stack_info:  # `stack_info=True`: where the call was made, as the app prints it
            self.attributes[STACKTRACE_KEY] = innermost_frames(record.stack_info)

    def _leave_out_what_the_record_is(self, extras: dict[str, Any], record: logging.LogRecord) -> None:
        """structlog's `render_to_log_kwargs` hands its event's key/values over as `extra=`:
        `add_log_level`'s `level` repeats the severity, `add_logger_name`'s `logger` the scope,
        a rendered `exception` is the record's exception, and `StackInfoRenderer`'s `stack` is
        where the call was made, as `stack_info=True` gives it."""
        if extras.get("level") == record.levelname.lower():
            del extras["level"]
        if extras.get("logger") == record.name:
            del extras["logger"]
        take_stack(extras, self.attributes)
        if isinstance(extras.get("exception"), str):
            self._take_rendered_exception(extras)

    def _take_rendered_exception(self, extras: dict[str, Any]) -> None:
        """structlog's `format_exc_info` then `render_to_log_kwargs` hand logging the traceback
        as the `exception` extra: it is the record's exception (once), not an attribute."""
        text = extras["exception"]
        if not text.startswith(schema.TRACEBACK_HEADER):
            return
        del extras["exception"]
        if self._raised() is None and not self.exc_text:
            self.exc_text = text

    def _take_structlog_event(self, event: dict[str, Any]) -> None:
        """structlog's `ProcessorFormatter.wrap_for_formatter` hands logging its event dict as
        the message (and its logger and method as `_logger`, `_name`): the event is the body,
        its key/values the attributes, as through `OTelProcessor`."""
        read = read_structlog_event(event)
        extras = self.extras or {}
        self.extras = {k: v for k, v in extras.items() if k not in _STRUCTLOG_EXTRAS} | read.attributes
        self.message = read.body
        if self._raised() is not None:
            return
        if read.exception is not None:
            self.exc_info = (type(read.exception), read.exception, read.exception.__traceback__)
        elif read.rendered_exception is not None:
            self.exc_text = read.rendered_exception

    @property
    def severity(self) -> SeverityNumber:
        return _severity_number(self.level)

    @property
    def attributes(self) -> dict[str, Any]:
        """The `extra=` fields as captured; sampling adds its weight here."""
        if self.extras is None:
            self.extras = {}
        return self.extras

    def stream_values(
        self, record_id: str, encode_resource: Callable[[Resource], encoding.EncodedResource]
    ) -> list[str]:
        span_context = get_current_span(self.context).get_span_context()
        severity_text, severity_number = _severity(self.level, self.level_name)
        return encoding.log_values(
            record_id,
            int(self.created * 1e9),
            severity_text,
            severity_number,
            self._body(),
            encode_resource(self.handler.resource),
            span_context.trace_id,
            span_context.span_id,
            int(span_context.trace_flags),
            self.logger,
            _code_location(self.path, self.line, self.function),
            self._attributes(),
            self._exception(),
        )

    def readable(self) -> ReadableLogRecord:
        """The same record as an OTel SDK object, for exporters other than ours."""
        attributes = self._attributes()
        attributes.update(
            {
                "code.file.path": self.path,
                "code.line.number": self.line,
                "code.function.name": self.function,
            }
        )
        exception = self._exception()
        if exception is not encoding.NO_EXCEPTION:
            attributes.update(zip(schema.EXCEPTION_KEYS, exception, strict=True))
        log_record = LogRecord(
            timestamp=int(self.created * 1e9),
            observed_timestamp=self.observed_ns,
            context=self.context,
            severity_text=_severity(self.level, self.level_name)[0],
            severity_number=self.severity,
            body=self._any_value_body(),
            attributes=attributes,
        )
        return ReadableLogRecord(
            log_record=log_record,
            resource=self.handler.resource,
            instrumentation_scope=InstrumentationScope(self.logger),
        )

    def _body(self) -> Body:
        """A map or list message's values as attributes hold them (a `Decimal`, a date as the app
        prints it); what is nested in them is written as JSON writes it."""
        message = self.message
        if isinstance(message, dict):
            return {key: _attribute_value(value) for key, value in message.items()}
        if isinstance(message, list):
            return [_attribute_value(value) for value in message]
        return message

    def _any_value_body(self) -> Any:
        """The body as OTel's AnyValue holds it: a map or list as its JSON in Redis reads back,
        as OTLP's encoder refuses the whole batch for a value of another type anywhere in it."""
        body = self._body()
        return body if isinstance(body, str) else schema.load_json(schema.dump_json(body))

    def _attributes(self) -> dict[str, Any]:
        """`extra=` fields become attributes, over what the context bound; values OTel cannot
        hold become their repr."""
        extras = self.extras
        own = {key: _attribute_value(value) for key, value in extras.items()} if extras else {}
        return context_bound(self.bound) | own if self.bound is not None else own

    def _raised(self) -> tuple[type[BaseException], BaseException | None, TracebackType | None] | None:
        """The record's exception, if it holds one: `exc_info` on a thread handling none
        (structlog's async methods log on an executor's) is `(None, None, None)`."""
        exc_info = self.exc_info
        return exc_info if exc_info and exc_info[0] is not None else None

    def _exception(self) -> tuple[str, str, str]:
        if (raised := self._raised()) is not None:
            return encoding.exception_fields(*raised)
        if self.exc_text:
            return exception_from_text(self.exc_text)
        return self._exception_in_the_message()

    def _exception_in_the_message(self) -> tuple[str, str, str]:
        """A traceback the message carries as text (`log.error(traceback.format_exc())`, RQ's
        failed jobs) is the record's exception, from its first line on: the message stays the body,
        and its error issue is grouped by the exception, not by the whole text."""
        message = self.message
        if not isinstance(message, str):
            return encoding.NO_EXCEPTION
        start = message.find(schema.TRACEBACK_HEADER)
        if start < 0 or (start > 0 and message[start - 1] != "\n"):
            return encoding.NO_EXCEPTION
        found = exception_from_text(message[start:])
        return found if found[0] else encoding.NO_EXCEPTION


class OTelHandler(logging.Handler):
    """A logging handler that turns every record into an OTel log record."""

    def __init__(
        self,
        provider: LoggerProvider,
        sinks: Sequence[StreamLogProcessor],
        level: int,
        bound_parameters: BoundParameters | None = None,
    ) -> None:
        super().__init__(level)
        self._provider = provider
        self._sinks = tuple(sinks)
        self._bound_parameters = bound_parameters  # None when scrubbing is off

    @property
    def resource(self) -> Resource:
        """Read per record: the provider's resource changes in forked children."""
        resource: Resource = self._provider.resource
        return resource

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        """Skip `Handler.handle`'s lock: queueing is thread-safe, and this is the hot path."""
        context = get_current()
        if (
            context.get(_SUPPRESS_KEY)
            or context.get(_SUPPRESS_KEY_PLAIN)
            or record.name.startswith(_OWN_LOGGERS)
        ):
            return False
        if self.filters and not self.filter(record):
            return False
        message = None
        if self._bound_parameters is not None and record.name.startswith(ENGINE_LOGGER):
            message = self._bound_parameters.message(record)
        pending = PendingStdlibRecord(record, message or _message(record), context, time_ns(), self)
        for sink in self._sinks:
            sink.put_pending(pending)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def flush(self) -> None:
        """Starts the export of what is queued, without waiting for it. logging calls this holding
        its module lock (`dictConfig` flushes every handler ever made, as Django's setup does
        again in runserver's child), and our sender thread may be waiting for that lock (a
        logger's level cache): waiting for it here hung the app. Exit and `force_flush()` wait."""
        for sink in self._sinks:
            sink.wake()


def _message(record: logging.LogRecord) -> Body:
    """A map or list logged as the message, without arguments (python-json-logger's README logs
    `{"special": "value", "run": 12}`), is the body as upstream's LoggingHandler keeps it, taken
    as it is now; anything else is what `getMessage()` makes of it."""
    message = record.msg
    if type(message) is not str and not record.args and isinstance(message, (Mapping, list)):
        try:
            return snapshot_values(dict(message)) if isinstance(message, Mapping) else list(message)
        except Exception:  # a container that cannot be read: logging's own text then
            pass
    try:
        return record.getMessage()
    except Exception as error:  # a bad format string must not cost the record
        return (
            f"{schema.safe_repr(record.msg)} % {schema.safe_repr(record.args)} (formatting failed: {error!r})"
        )


def _attribute_value(value: object) -> object:
    if isinstance(value, (str, bool, int, float, list, tuple, dict)) or value is None:
        return value
    if isinstance(value, TEXT_VALUES):
        return as_text(value)
    return schema.safe_repr(value)
