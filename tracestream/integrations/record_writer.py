"""Records our integrations write themselves: request and task lifecycle records.

They go straight to the OTel logs API rather than through stdlib `logging`, so they
carry typed attributes, never pass through user handlers twice, and always reach the
stream even when a framework has rewired the logging tree.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Callable, Mapping
from time import time_ns
from types import TracebackType
from typing import Any

from opentelemetry import _logs
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context, get_current
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import get_current_span

from tracestream import schema
from tracestream._internal_log import internal_logger
from tracestream.exporters import encoding
from tracestream.otel_setup.telemetry import installed

_TEXT = {
    SeverityNumber.INFO: "INFO",
    SeverityNumber.WARN: "WARN",
    SeverityNumber.ERROR: "ERROR",
}


class RecordWriter:
    """Writes records under one instrumentation scope (shown as the entry's `scope`).

    Under `configure()` a record skips the SDK's record objects, as stdlib records do: the
    calling thread only captures it, the export worker lays it out. Without it (structlog
    or loguru bridged into another provider) records go through the OTel logs API.
    """

    def __init__(self, scope: str, *, located_by_exception: bool = False) -> None:
        """`located_by_exception`: its records are no logging call of the app's, so one carrying an
        exception takes its code location from where the app's code raised it (what `stats`
        groups errors by, as issues group them by that frame)."""
        self._scope = scope
        self._located_by_exception = located_by_exception

    def emit(
        self,
        body: str,
        severity: SeverityNumber,
        attributes: Mapping[str, Any],
        *,
        exception: BaseException | None = None,
        context: Context | None = None,
        severity_text: str | None = None,
    ) -> None:
        """`severity_text`: a level's own name (loguru's SUCCESS), where it is not the severity's."""
        present = {key: value for key, value in attributes.items() if value is not None}
        if exception is not None and self._located_by_exception:
            present.update(raised_at(exception))
        telemetry = installed()
        if telemetry is None:
            self._emit_to_api(body, severity, severity_text, present, exception, context)
            return
        record = PendingRecord(
            self._scope,
            body,
            severity,
            severity_text,
            present,
            exception,
            context or get_current(),
            telemetry.logger_provider,
        )
        for sink in telemetry.log_processors:
            sink.put_pending(record)

    def _emit_to_api(
        self,
        body: str,
        severity: SeverityNumber,
        severity_text: str | None,
        attributes: dict[str, Any],
        exception: BaseException | None,
        context: Context | None,
    ) -> None:
        if not _said_records_go_nowhere.is_set() and not records_reach_a_provider():
            _say_records_go_nowhere(self._scope)
        if exception is not None:
            attributes.update(exception_attributes(exception, exception.__traceback__))
        _logs.get_logger(self._scope).emit(
            timestamp=time_ns(),
            context=context,
            severity_number=severity,
            severity_text=severity_text or _severity_text(severity),
            body=body,
            attributes=attributes,
        )


# A writer for each scope a logging library names, the names a process logs under: bounded, as a
# logger named for each request (structlog's `logger=`, `get_logger(f"job.{id}")`) made one each.
_writers: dict[str, RecordWriter] = {}
_MOST_SCOPES = 1024


def writer_for(scope: str) -> RecordWriter:
    """The writer of records under `scope`."""
    writer = _writers.get(scope)
    if writer is None:
        if len(_writers) >= _MOST_SCOPES:
            _writers.clear()
        writer = _writers[scope] = RecordWriter(scope)
    return writer


_said_records_go_nowhere = threading.Event()


def _say_records_go_nowhere(scope: str) -> None:
    """Once a process: structlog's processor or loguru's sink wrote where OTel drops everything,
    as in a spawned child whose parent called configure() under `if __name__ == "__main__":`."""
    _said_records_go_nowhere.set()
    internal_logger.warning(
        "a %r record is not in the stream: tracestream.configure() has not run in this process "
        "(pid %d) yet, and no OpenTelemetry logs provider takes records here",
        scope,
        os.getpid(),
    )


def records_reach_a_provider() -> bool:
    """Whether what a writer emits now goes anywhere: configure() ran, or the app set an SDK
    provider of its own (OTel's default provider drops everything)."""
    return installed() is not None or isinstance(_logs.get_logger_provider(), LoggerProvider)


class PendingRecord:
    """One of our records as captured: attributes stay a plain dict until the worker encodes them."""

    __slots__ = (
        "attributes", "body", "context", "exception", "provider", "scope", "severity", "severity_text",
        "timestamp_ns", "traceback",
    )  # fmt: skip

    def __init__(
        self,
        scope: str,
        body: str,
        severity: SeverityNumber,
        severity_text: str | None,
        attributes: dict[str, Any],
        exception: BaseException | None,
        context: Context,
        provider: LoggerProvider,
    ) -> None:
        self.timestamp_ns = time_ns()
        self.scope = scope
        self.body = body
        self.severity = severity
        self.severity_text = severity_text
        self.attributes = attributes
        self.exception = exception
        self.traceback = exception.__traceback__ if exception is not None else None
        self.context = context
        self.provider = provider

    def _severity_text(self) -> str:
        return self.severity_text or _severity_text(self.severity)

    def _attributes(self) -> dict[str, Any]:
        attributes = dict(self.attributes)
        if self.exception is not None:
            attributes.update(exception_attributes(self.exception, self.traceback))
        return attributes

    def stream_values(
        self, record_id: str, encode_resource: Callable[[Resource], encoding.EncodedResource]
    ) -> list[str]:
        span_context = get_current_span(self.context).get_span_context()
        attributes = self._attributes()
        code, exception = encoding.take_code_and_exception(attributes)
        return encoding.log_values(
            record_id,
            self.timestamp_ns,
            self._severity_text(),
            self.severity.value,
            self.body,
            encode_resource(self.provider.resource),
            span_context.trace_id,
            span_context.span_id,
            int(span_context.trace_flags),
            self.scope,
            code,
            attributes,
            exception,
        )

    def readable(self) -> ReadableLogRecord:
        """The same record as an OTel SDK object, for exporters other than ours."""
        log_record = LogRecord(
            timestamp=self.timestamp_ns,
            observed_timestamp=self.timestamp_ns,
            context=self.context,
            severity_text=self._severity_text(),
            severity_number=self.severity,
            body=self.body,
            attributes=self._attributes(),
        )
        return ReadableLogRecord(
            log_record=log_record,
            resource=self.provider.resource,
            instrumentation_scope=InstrumentationScope(self.scope),
        )


def _severity_text(severity: SeverityNumber) -> str:
    return _TEXT.get(severity, severity.name)


def exception_attributes(error: BaseException, tb: TracebackType | None) -> dict[str, str]:
    """`exception.*` attributes that never raise: the SDK's own would call str() on the exception.
    `tb` is the traceback as the exception had it when it was recorded: Starlette clears a handled
    one's once its handler has answered, before our export thread reads it."""
    fields = encoding.exception_fields(type(error), error, tb)
    return dict(zip(schema.EXCEPTION_KEYS, fields, strict=True))


def raised_at(error: BaseException) -> dict[str, Any]:
    """`code.*` attributes of the innermost frame of the app's own code that `error` came
    through; none when no frame of its traceback is the app's."""
    where: dict[str, Any] = {}
    for frame, line in traceback.walk_tb(error.__traceback__):
        code = frame.f_code
        if schema.is_application_code(code.co_filename):
            where = {"code.file.path": code.co_filename, "code.line.number": line}
            where["code.function.name"] = code.co_name
    return where


Predicate = Callable[[logging.LogRecord], bool]


class ReplacedLines(logging.Filter):
    """Keeps out of the stream a framework's own lines that one of our records replaces.

    It sits on our bridge handler only: the framework's console output is unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self._by_logger: dict[str, list[Predicate]] = {}

    def add(self, logger_name: str, predicate: Predicate) -> None:
        predicates = self._by_logger.setdefault(logger_name, [])
        if predicate not in predicates:
            predicates.append(predicate)

    def filter(self, record: logging.LogRecord) -> bool:
        predicates = self._by_logger.get(record.name)
        return not (predicates and any(predicate(record) for predicate in predicates))


def replace_lines(handler: logging.Handler, logger_name: str, predicate: Predicate) -> None:
    """Drop `logger_name` records matching `predicate` at `handler`."""
    found = [f for f in handler.filters if isinstance(f, ReplacedLines)]
    replaced = found[0] if found else ReplacedLines()
    if not found:
        handler.addFilter(replaced)
    replaced.add(logger_name, predicate)
