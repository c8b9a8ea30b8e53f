"""Records our integrations write themselves: request and task lifecycle records.

They go straight to the OTel logs API rather than through stdlib `logging`, so they
carry typed attributes, never pass through user handlers twice, and always reach the
stream even when a framework has rewired the logging tree.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from time import time_ns
from typing import Any

from opentelemetry import _logs
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context

from tracestream.schema import EXCEPTION_KEYS, qualified_name

_TEXT = {
    SeverityNumber.INFO: "INFO",
    SeverityNumber.WARN: "WARN",
    SeverityNumber.ERROR: "ERROR",
}


class RecordWriter:
    """Writes records under one instrumentation scope (shown as the entry's `scope`)."""

    def __init__(self, scope: str) -> None:
        self._scope = scope

    def emit(
        self,
        body: str,
        severity: SeverityNumber,
        attributes: Mapping[str, Any],
        *,
        exception: BaseException | None = None,
        context: Context | None = None,
    ) -> None:
        if exception is not None and not _printable(exception):
            # The SDK would call str() on it and raise into the application: the same
            # attributes, built with traceback's fallback for the message.
            attributes = {**attributes, **_exception_attributes(exception)}
            exception = None
        _logs.get_logger(self._scope).emit(
            timestamp=time_ns(),
            context=context,
            severity_number=severity,
            severity_text=_TEXT.get(severity, severity.name),
            body=body,
            attributes={key: value for key, value in attributes.items() if value is not None},
            exception=exception,
        )


def _printable(error: BaseException) -> bool:
    try:
        str(error)
    except Exception:  # a broken __str__, or one returning a non-str
        return False
    return True


def _exception_attributes(error: BaseException) -> dict[str, str]:
    name = qualified_name(type(error))
    stacktrace = "".join(traceback.format_exception(error))
    return dict(zip(EXCEPTION_KEYS, (name, "<exception str() failed>", stacktrace), strict=True))


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


def attach(handler: logging.Handler, logger: logging.Logger) -> None:
    """For loggers that do not propagate to root (uvicorn's, Celery's task logger)."""
    if handler not in logger.handlers:
        logger.addHandler(handler)
