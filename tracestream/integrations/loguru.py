"""loguru: a sink that sends each message to OTel with its bound key/values as attributes.

    from loguru import logger
    from tracestream.integrations.loguru import otel_sink
    logger.add(otel_sink)

The sink writes to the OTel logs API directly (never through `logging`, so it cannot loop).
loguru calls it in the logging thread, so the record carries the current trace; added with
`enqueue=True`, loguru calls it later from its queue's thread, outside any span, so those
records carry none, and one line says so. A stdlib record that loguru's InterceptHandler recipe
hands to loguru was seen by the stdlib capture already (in the stream, or kept out of it on
purpose): the sink leaves it out, enqueued or not. Forwarding loguru into `logging` as well (a
PropagateHandler) writes each message twice: pick one route.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from types import FrameType
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.instrumentation.log_utils import std_to_otel

from tracestream._internal_log import internal_logger
from tracestream.integrations.record_writer import RecordWriter, records_reach_a_provider
from tracestream.otel_setup.log_capture import count_seen_records, current, was_seen
from tracestream.otel_setup.structured import attributes_of

_writers: dict[str, RecordWriter] = {}
_queue_met = threading.Event()

count_seen_records()


def otel_sink(message: Any) -> None:
    record = message.record
    if was_seen(record["thread"].id, record["file"].path, record["line"], record["message"]):
        return
    if current() is not None and _handed_on_by_a_logging_handler():
        return
    if not _queue_met.is_set() and _called_from_loguru_queue(record):
        _meet_loguru_queue()
    scope = record["name"] or "loguru"
    writer = _writers.get(scope) or _writers.setdefault(scope, RecordWriter(scope))
    exception = record["exception"]
    writer.emit(
        record["message"],
        severity_of_level(record["level"].no),
        {
            **attributes_of(record["extra"]),
            "code.file.path": record["file"].path,
            "code.line.number": record["line"],
            "code.function.name": record["function"],
        },
        exception=exception.value if exception is not None else None,
    )


_HANDLE = logging.Handler.handle.__code__
# The sink's caller, loguru's handler, its `_log` and `log`, InterceptHandler.emit, then
# `Handler.handle`: a few frames more for a handler of the app's own making.
_FRAMES_UP_TO_A_HANDLER = 10


def _handed_on_by_a_logging_handler() -> bool:
    """A message loguru got from a stdlib handler (InterceptHandler), for a record made in this
    process: the capture, installed, saw it as it was logged, even where a filter on the handler
    rewrote its message, or a QueueListener's thread handed it on, which `was_seen` cannot tell.
    A record from another process (a listener for a pool's queue) is not the capture's."""
    frame: FrameType | None = sys._getframe(2)  # past this and the sink
    for _ in range(_FRAMES_UP_TO_A_HANDLER):
        if frame is None:
            return False
        if frame.f_code is _HANDLE:
            handled = frame.f_locals.get("record")
            return isinstance(handled, logging.LogRecord) and handled.process == os.getpid()
        frame = frame.f_back
    return False


def severity_of_level(number: int) -> SeverityNumber:
    """loguru's level numbers are stdlib's (SUCCESS 25, a custom level its own); TRACE is 5."""
    return SeverityNumber.TRACE if number < logging.DEBUG else std_to_otel(number)


def _called_from_loguru_queue(record: Any) -> bool:
    return bool(record["thread"].id != threading.get_ident() or record["process"].id != os.getpid())


def _meet_loguru_queue() -> None:
    """Once: say what `enqueue=True` costs, and have loguru's queue drained into the sink at
    exit before ours close (loguru's own drain, `logger.remove()` at exit, comes after them)."""
    _queue_met.set()
    atexit.register(_drain_loguru_queues)
    if records_reach_a_provider():
        internal_logger.warning(
            "loguru calls otel_sink from its queue (enqueue=True), after the logging call: those "
            "records carry no trace id. Add the sink without enqueue; tracestream sends records "
            "from a thread of its own"
        )


def _drain_loguru_queues() -> None:
    from loguru import logger

    logger.complete()
