"""structlog: a processor that sends each event to OTel with its key/values as attributes.

    structlog.configure(processors=[..., OTelProcessor(), structlog.dev.ConsoleRenderer()])

Put it before the renderer. The event is written to the OTel logs API directly (never
through `logging`, so it cannot loop) in the caller's thread, so it carries the current
trace. When structlog's logger is a stdlib logger, the event reaches our logging bridge
anyway (ended with `render_to_log_kwargs` or `ProcessorFormatter.wrap_for_formatter`, with
its key/values as attributes), so the processor leaves it to the bridge rather than writing
it twice. So it does inside a `ProcessorFormatter`, which renders stdlib records that the
bridge took as they were logged: it hands their processors no logger, or the record itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from tracestream._internal_log import internal_logger
from tracestream.integrations.record_writer import RecordWriter
from tracestream.otel_setup.structured import (
    exception_from_text,
    exception_of,
    read_structlog_event,
    severity_of,
    text_of,
)
from tracestream.schema import EXCEPTION_KEYS


class OTelProcessor:
    def __init__(self) -> None:
        self._writers: dict[str, RecordWriter] = {}
        self._said_misplaced = False

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        if not isinstance(event_dict, Mapping):
            return self._after_the_renderer(event_dict)
        if logger is None or isinstance(logger, logging.Logger) or "_record" in event_dict:
            return event_dict
        scope = text_of(event_dict.get("logger") or "structlog")
        writer = self._writers.get(scope) or self._writers.setdefault(scope, RecordWriter(scope))
        event = read_structlog_event(event_dict)
        exception = event.exception
        if exception is None and method_name == "exception":
            exception = exception_of(True)
        rendered = event.rendered_exception
        if exception is None and rendered is not None:
            event.attributes.update(zip(EXCEPTION_KEYS, exception_from_text(rendered), strict=True))
        writer.emit(
            event.body,
            severity_of(text_of(event_dict.get("level") or method_name)),
            event.attributes,
            exception=exception,
        )
        return event_dict

    def _after_the_renderer(self, rendered: Any) -> Any:
        """A renderer before us made the event text: it goes on as the app meant, and is not in
        the stream. Said once, since every event after it is the same."""
        if not self._said_misplaced:
            self._said_misplaced = True
            internal_logger.warning(
                "OTelProcessor got a rendered %s, not an event dict: put it before the renderer in "
                "structlog's processors; until then structlog's events are not in the stream",
                type(rendered).__name__,
            )
        return rendered
