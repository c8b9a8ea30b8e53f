"""structlog: a processor that sends each event to OTel with its key/values as attributes.

    structlog.configure(processors=[..., OTelProcessor(), structlog.dev.ConsoleRenderer()])

Put it before the renderer. The event is written to the OTel logs API directly (never
through `logging`, so it cannot loop) in the caller's thread, so it carries the current
trace. When structlog's logger is a stdlib logger, the event reaches our logging bridge
anyway (with `render_to_log_kwargs`, its key/values arrive as `extra=` attributes), so
the processor leaves it to the bridge rather than writing it twice.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from tracestream.integrations.record_writer import RecordWriter
from tracestream.integrations.structured import attributes_of, exception_of, severity_of, text_of

_NOT_ATTRIBUTES = ("event", "level", "exc_info", "logger", "timestamp", "_record", "_from_structlog")


class OTelProcessor:
    def __init__(self) -> None:
        self._writers: dict[str, RecordWriter] = {}

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        if isinstance(logger, logging.Logger):
            return event_dict
        scope = text_of(event_dict.get("logger") or "structlog")
        writer = self._writers.get(scope) or self._writers.setdefault(scope, RecordWriter(scope))
        exception = exception_of(event_dict.get("exc_info"))
        if exception is None and method_name == "exception":
            exception = exception_of(True)
        writer.emit(
            text_of(event_dict.get("event", "")),
            severity_of(text_of(event_dict.get("level") or method_name)),
            attributes_of(event_dict, _NOT_ATTRIBUTES),
            exception=exception,
        )
        return event_dict
