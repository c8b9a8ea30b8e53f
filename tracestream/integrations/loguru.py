"""loguru: a sink that sends each message to OTel with its bound key/values as attributes.

`install()` adds it to loguru's logger as loguru is imported, at `TRACESTREAM_LOG_LEVEL`,
so loguru's messages reach the stream with no code, as stdlib records do. It prints nothing,
takes no handler id the app's own `logger.add()` calls would get, runs after the app's sinks,
and stays through the app's `logger.remove()`. An app that adds the sink itself, as

    from loguru import logger
    from tracestream.integrations.loguru import otel_sink
    logger.add(otel_sink)

chooses its level, filter and `enqueue`: ours steps aside while such a sink is there.

The sink writes to the OTel logs API directly (never through `logging`, so it cannot loop).
loguru calls it in the logging thread, so the record carries the current trace; added with
`enqueue=True`, loguru calls it later from its queue's thread, outside any span, so those
records carry none, and one line says so. A stdlib record that loguru's InterceptHandler recipe
hands to loguru was seen by the stdlib capture already (in the stream, or kept out of it on
purpose): the sink leaves it out, enqueued or not. So it does a loguru message that a sink
before ours handed to `logging` (the PropagateHandler recipe, with `format="{message}"`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from types import FrameType, ModuleType
from typing import Any

import wrapt
from opentelemetry._logs import SeverityNumber
from opentelemetry.instrumentation.log_utils import std_to_otel

from tracestream._internal_log import internal_logger
from tracestream.integrations.record_writer import records_reach_a_provider, writer_for
from tracestream.otel_setup.log_capture import count_seen_records, current, was_seen
from tracestream.otel_setup.structured import attributes_of
from tracestream.otel_setup.telemetry import installed
from tracestream.scrubbing import REDACTED, KeyPolicy, secret_names_for
from tracestream.settings import Settings

_queue_met = threading.Event()
# Our sink's key in loguru's handlers: never an id `logger.add()` returns.
_OURS = -1
# loguru's levels that are stdlib's too: stored with the severity text stdlib's records get (WARN, FATAL).
_STDLIB_LEVEL_NAMES = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


def otel_sink(message: Any) -> None:
    record = message.record
    if was_seen(record["thread"].id, record["file"].path, record["line"], record["message"]):
        return
    if current() is not None and _handed_on_by_a_logging_handler():
        return
    if not _queue_met.is_set() and _called_from_loguru_queue(record):
        _meet_loguru_queue()
    scope = record["name"] or "loguru"
    writer = writer_for(scope)
    exception = record["exception"]
    level = record["level"]
    severity, severity_text = severity_of_level(level.no, level.name)
    writer.emit(
        _without_secret_values(record["message"], record["extra"]),
        severity,
        {
            **attributes_of(record["extra"]),
            "code.file.path": record["file"].path,
            "code.line.number": record["line"],
            "code.function.name": record["function"],
        },
        exception=exception.value if exception is not None else None,
        severity_text=severity_text,
    )


def _without_secret_values(message: str, extra: dict[str, Any]) -> str:
    """loguru formats its keyword arguments into the message (`logger.info("login {user}
    {password}", user=u, password=p)`) and keeps them as `extra`: the text of one whose name is
    a secret's is redacted in the message too, where its attribute is. Texts under 4 characters
    are left: they would redact unrelated text."""
    telemetry = installed()
    names = _secret_names(telemetry.settings) if telemetry is not None and extra else None
    if names is None:
        return message
    for key, value in extra.items():
        if isinstance(value, str) and len(value) >= 4 and value in message and names.secret(str(key)):
            message = message.replace(value, REDACTED)
    return message


@functools.lru_cache(maxsize=1)
def _secret_names(settings: Settings) -> KeyPolicy | None:
    return secret_names_for(settings)


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


@functools.cache
def severity_of_level(number: int, name: str) -> tuple[SeverityNumber, str | None]:
    """loguru's level numbers are stdlib's (SUCCESS 25, a custom level its own); TRACE is 5. A level
    of loguru's own keeps its name as the severity text, as a stdlib custom level does."""
    severity = SeverityNumber.TRACE if number < logging.DEBUG else std_to_otel(number)
    return severity, None if name in _STDLIB_LEVEL_NAMES else name


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
            "records carry no trace id, and those logged in another process carry this one's pid. "
            "Add the sink without enqueue; tracestream sends records from a thread of its own"
        )


def _drain_loguru_queues() -> None:
    from loguru import logger

    logger.complete()


def _count_seen_records(loguru: ModuleType) -> None:
    count_seen_records()


# Only a process that uses loguru pays for remembering the stdlib records the capture sees.
wrapt.register_post_import_hook(_count_seen_records, "loguru")


def install() -> None:
    """Add our sink to loguru's logger once the app imports loguru (at once if it has)."""
    wrapt.register_post_import_hook(_join_loguru, "loguru")


def _join_loguru(loguru: ModuleType) -> None:
    try:
        logger_class = type(loguru.logger)
        add, remove = logger_class.add, logger_class.remove
        logger_class.add = _adding_beside_ours(add, remove)
        logger_class.remove = _removing_all_but_ours(add, remove)
        if _holds_an_otel_sink_of_the_app(loguru.logger._core):
            _stepped_aside.add(loguru.logger._core)
        else:
            _add_ours(add, loguru.logger)
    except Exception as error:  # a loguru we cannot join must not cost the process its telemetry
        internal_logger.warning("the loguru integration failed to install: %r", error)


# loguru's handler stores (its `_core`) where the app added `otel_sink` itself, in place of ours.
_stepped_aside: weakref.WeakSet[Any] = weakref.WeakSet()


def _add_ours(add: Callable[..., int], logger: Any) -> None:
    """Added as any sink is, then filed under a key of ours, with loguru's count of handler ids
    as it was: the app's next `logger.add()` returns the id it returns without tracestream."""
    telemetry = installed()
    level = telemetry.settings.log_level if telemetry is not None else logging.INFO
    core = logger._core
    added = add(logger, otel_sink, level=level, format="{message}", backtrace=False, diagnose=False)
    with core.lock:
        _file_ours_last(core, added)
        if core.handlers_count == added + 1:
            core.handlers_count = added


def _file_ours_last(core: Any, key: int = _OURS) -> None:
    """With loguru's lock held: our handler, filed under `key`, goes under ours, after the others,
    and shows that id where loguru lists its handlers (`print(logger)`, `diagnose` tracebacks)."""
    handlers = dict(core.handlers)
    ours = handlers[_OURS] = handlers.pop(key)
    ours._id = _OURS
    core.handlers = handlers


def _adding_beside_ours(add: Callable[..., int], remove: Callable[..., None]) -> Callable[..., int]:
    """loguru calls its sinks in the order they were added: ours stays last, to find the stdlib
    record a PropagateHandler before it handed to the capture. The app's own `otel_sink` takes
    our place, with the level, filter and `enqueue` the app chose."""

    @functools.wraps(add)
    def adding(self: Any, sink: Any, *args: Any, **kwargs: Any) -> int:
        handler_id = add(self, sink, *args, **kwargs)
        with _never_failing_the_app():
            core = self._core
            if sink is otel_sink and _OURS in core.handlers:
                _stepped_aside.add(core)
                remove(self, _OURS)
            with core.lock:
                if _OURS in core.handlers and next(reversed(core.handlers)) != _OURS:
                    _file_ours_last(core)
        return handler_id

    return adding


def _removing_all_but_ours(add: Callable[..., int], remove: Callable[..., None]) -> Callable[..., None]:
    """`logger.remove()` removes the app's sinks and keeps ours; where the app's own `otel_sink`
    stood in for ours and none is left, ours is back."""

    @functools.wraps(remove)
    def removing(self: Any, handler_id: int | None = None) -> None:
        core = self._core
        if handler_id is not None or _OURS not in core.handlers:
            remove(self, handler_id)
        else:
            for each in [key for key in core.handlers if key != _OURS]:
                with contextlib.suppress(ValueError):  # another thread removed it meanwhile
                    remove(self, each)
        with _never_failing_the_app():
            if core in _stepped_aside and not _holds_an_otel_sink_of_the_app(core):
                _stepped_aside.discard(core)
                _add_ours(add, self)

    return removing


@contextlib.contextmanager
def _never_failing_the_app() -> Iterator[None]:
    """Our part of the app's `logger.add()` or `logger.remove()`, which relies on loguru's
    internals: where they changed, the app's call still does what it did, and one line says so."""
    try:
        yield
    except Exception as error:
        internal_logger.warning("the loguru integration cannot keep its sink in place: %r", error)


def _holds_an_otel_sink_of_the_app(core: Any) -> bool:
    return any(
        getattr(handler._sink, "_function", None) is otel_sink
        for key, handler in list(core.handlers.items())
        if key != _OURS
    )
