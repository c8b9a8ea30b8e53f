"""OpenTelemetry's own logging handlers, which bridge stdlib records as the capture does.

The SDK's `LoggingHandler`, and opentelemetry-instrumentation-logging's, turn each record they
get into an OTel record for their provider. An app's own (feeding its own exporters) stays where
the app put it. What such a handler hands to tracestream's processors is a stdlib record the
capture has already decided on (taken, excluded, or below its level), so they leave it out.
"""

from __future__ import annotations

import logging
import sys
from types import CodeType, FrameType

__all__ = ["emitted_by_an_otel_logging_handler", "is_otel_logging_handler"]

# Between a processor's `on_emit` and the handler's `emit`: the provider's multi-processor, the
# SDK logger's `emit` and, in some SDK versions, a wrapper of it.
_FRAMES_UP = 8
# Per `emit` code object met on the way up: whether it is an OTel logging handler's.
_handler_emits: dict[CodeType, bool] = {}


def is_otel_logging_handler(handler: logging.Handler) -> bool:
    """The SDK's, the logging instrumentation's, or a subclass of either."""
    return any(
        cls.__name__ == "LoggingHandler" and cls.__module__.startswith("opentelemetry")
        for cls in type(handler).__mro__
    )


def emitted_by_an_otel_logging_handler() -> bool:
    """Whether the OTel record being emitted comes from an OTel logging handler's `emit` on
    this thread's stack, a few frames above the caller."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_FRAMES_UP):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name == "emit":
            verdict = _handler_emits.get(code)
            if verdict is None:
                owner = frame.f_locals.get("self")
                verdict = isinstance(owner, logging.Handler) and is_otel_logging_handler(owner)
                _handler_emits[code] = verdict
            if verdict:
                return True
        frame = frame.f_back
    return False
