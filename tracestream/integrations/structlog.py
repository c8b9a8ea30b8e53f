"""structlog: a processor that sends each event to OTel with its key/values as attributes.

    structlog.configure(processors=[..., OTelProcessor(), structlog.dev.ConsoleRenderer()])

Put it before the renderer. The event is written to the OTel logs API directly (never
through `logging`, so it cannot loop) in the caller's thread, so it carries the current
trace. When structlog's logger is a stdlib logger, the event reaches our logging bridge
anyway (ended with `render_to_log_kwargs` or `ProcessorFormatter.wrap_for_formatter`, with
its key/values as attributes), so the processor leaves it to the bridge rather than writing
it twice. So it does inside a `ProcessorFormatter`, which renders stdlib records that the
bridge took as they were logged: it hands their processors no logger, or the record itself.

configure(), and so the launcher, joins one to each chain that has none (`install`), so an
app that never adds it still has its events in the stream. Under `opentelemetry-instrument`,
upstream's structlog instrumentation (which `opentelemetry-bootstrap` installs) would put its own
processor in every chain, and beside the bridge or ours write each event twice: the launcher
runs `install` in its place.

A Celery worker logs what it prints, structlog's PrintLogger included, as `celery.redirected`
records: the line of an event the processor wrote is left out (`printed_after_being_written`).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
import threading
import warnings
from collections.abc import Iterable, Mapping, MutableMapping
from types import CodeType, FrameType, ModuleType
from typing import Any

import wrapt

from tracestream._internal_log import internal_logger
from tracestream.exporters.encoding import qualified_name
from tracestream.integrations.record_writer import writer_for
from tracestream.otel_setup.structured import (
    exception_from_text,
    exception_of,
    read_structlog_event,
    severity_of,
    text_of,
)
from tracestream.schema import EXCEPTION_KEYS

_installed = False
# Per thread: the logger the processor last wrote an event for, until a Celery worker's
# redirected stdout logs a line (`printed_after_being_written`).
_written = threading.local()


class OTelProcessor:
    def __init__(self) -> None:
        self._said_misplaced = False
        self._chain_checked = False

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        if not isinstance(event_dict, Mapping):
            return self._after_the_renderer(event_dict)
        if logger is None or "_record" in event_dict:
            return event_dict
        if isinstance(logger, logging.Logger):
            if not self._chain_checked:
                self._check_what_the_chain_hands_logging()
            return event_dict
        scope = text_of(event_dict.get("logger") or "structlog")
        writer = writer_for(scope)
        event = read_structlog_event(event_dict)
        exception = event.exception
        if exception is None and method_name == "exception":
            exception = exception_of(True)
        rendered = event.rendered_exception
        if exception is None and rendered is not None:
            fields = exception_from_text(rendered)
            exception = _the_one_being_handled(fields[0])
            if exception is None:
                event.attributes.update(zip(EXCEPTION_KEYS, fields, strict=True))
        event.attributes.update(_where_the_app_logged())
        writer.emit(
            event.body,
            severity_of(text_of(event_dict.get("level") or method_name)),
            event.attributes,
            exception=exception,
        )
        _written.logger = logger
        return event_dict

    def _check_what_the_chain_hands_logging(self) -> None:
        """Once: the bridge reads the event structlog hands a stdlib logger only as the event dict
        (`wrap_for_formatter`) or key/values (`render_to_log_kwargs`); a chain of ours that ends
        in a renderer hands it text, and the stream gets that text alone."""
        import structlog

        self._chain_checked = True
        chain = list(structlog.get_config()["processors"])
        handing_the_event_on = (
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            structlog.stdlib.render_to_log_kwargs,
            getattr(structlog.stdlib, "render_to_log_args_and_kwargs", None),
        )
        if self in chain and chain[-1] not in handing_the_event_on:
            internal_logger.warning(
                "structlog renders its events to text before they reach logging: the stream gets that "
                "text, without their key/values; end structlog's processors with "
                "structlog.stdlib.ProcessorFormatter.wrap_for_formatter or render_to_log_kwargs"
            )

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


def _where_the_app_logged() -> dict[str, Any]:
    """`code.*` attributes of the app's logging call: the first frame past structlog's and ours,
    from where an async method was awaited (as structlog's `CallsiteParameterAdder` finds it).
    A stdlib logger's record has its own: structlog hands logging a `stacklevel`. None where that
    frame is the standard library's, as when an executor runs the method with no caller noted."""
    frame: FrameType | None = _awaited_from().get(sys._getframe(1))
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_NOT_THE_CALLER):
        frame = frame.f_back
    if frame is None or frame.f_globals.get("__name__", "").partition(".")[0] in sys.stdlib_module_names:
        return {}
    code = frame.f_code
    return {
        "code.file.path": code.co_filename,
        "code.line.number": frame.f_lineno,
        "code.function.name": code.co_name,
    }


def _the_one_being_handled(type_name: str) -> BaseException | None:
    """The exception this thread handles, when it is the one structlog rendered to text
    (`format_exc_info`, `dict_tracebacks` take `exc_info` away): read from it, the record's
    type is named as the stdlib's records name it (`shop.PaymentError`, not `PaymentError`),
    and a message of several lines, its notes and a group's members are its own."""
    handled = sys.exc_info()[1]
    if handled is None or not type_name:
        return None
    cls = type(handled)
    return handled if type_name in (cls.__qualname__, qualified_name(cls)) else None


_NOT_THE_CALLER = ("structlog", "tracestream.")


@functools.cache
def _awaited_from() -> contextvars.ContextVar[FrameType]:
    """Where structlog notes the frame that awaited its async method; a variable nothing sets
    where a structlog version keeps no such note."""
    import structlog.contextvars

    noted = getattr(structlog.contextvars, "_ASYNC_CALLING_STACK", None)
    return noted if isinstance(noted, contextvars.ContextVar) else contextvars.ContextVar("unset")


def install() -> None:
    """Once a process: our processor joins every structlog chain as the app imports structlog
    (at once, if it has), so configure() and the launcher build the same pipeline."""
    global _installed
    if not _installed:
        _installed = True
        wrapt.register_post_import_hook(_join_every_chain_or_say_why, "structlog")


def _join_every_chain_or_say_why(module: ModuleType) -> None:
    try:
        _join_every_chain()
    except Exception as error:  # the app's import of structlog goes on
        internal_logger.warning("the structlog integration failed to install: %r", error)


def _join_every_chain() -> None:
    """Ours before the last of structlog's processors (its renderer), in the chain in use and in
    each later one the app sets (`configure`, `configure_once`, `stdlib.recreate_defaults`,
    `reset_defaults`), as upstream's instrumentation places its own. A chain holding an
    OTelProcessor of the app's own (one built from `get_config()` holds ours too) keeps the
    app's alone. Only the processors change: `is_configured()` answers as without us, since
    apps configure structlog when it is not."""
    import structlog
    from structlog import _config

    processor = OTelProcessor()
    configure, reset_defaults = structlog.configure, structlog.reset_defaults
    recreate_defaults = structlog.stdlib.recreate_defaults

    def with_ours(chain: Iterable[Any]) -> list[Any]:
        chain = [step for step in chain if step is not processor]
        if not any(isinstance(step, OTelProcessor) for step in chain):
            chain.insert(_before_the_renderer(chain), processor)
        return chain

    def join_the_chain_in_use() -> None:
        """In place where it is a list: a logger cached on first use (`cache_logger_on_first_use`)
        before we came holds that list, and would never see a new one."""
        chain = _config._CONFIG.default_processors
        if isinstance(chain, list):
            chain[:] = with_ours(chain)
        else:
            _config._CONFIG.default_processors = with_ours(chain)

    def configured(processors: Iterable[Any] | None = None, *args: Any, **kwargs: Any) -> None:
        configure(None if processors is None else with_ours(processors), *args, **kwargs)

    def configured_once(*args: Any, **kwargs: Any) -> None:
        if structlog.is_configured():  # structlog's own warning, pointing at the app's call
            warnings.warn("Repeated configuration attempted.", RuntimeWarning, stacklevel=2)
        else:
            configured(*args, **kwargs)

    def reset() -> None:
        reset_defaults()
        join_the_chain_in_use()

    def recreated(*args: Any, **kwargs: Any) -> None:
        """structlog's `recreate_defaults` sets its chain without `configure()`."""
        recreate_defaults(*args, **kwargs)
        join_the_chain_in_use()

    join_the_chain_in_use()
    structlog.configure = configured
    structlog.configure_once = configured_once
    structlog.reset_defaults = reset
    structlog.stdlib.recreate_defaults = recreated


def _before_the_renderer(chain: list[Any]) -> int:
    """Where ours goes: before the last processor, or before an `ExceptionPrettyPrinter`, which
    prints the exception and takes it out of the event."""
    from structlog.processors import ExceptionPrettyPrinter

    printers = [at for at, step in enumerate(chain) if isinstance(step, ExceptionPrettyPrinter)]
    return min([*printers, max(len(chain) - 1, 0)])


def printed_after_being_written(record: logging.LogRecord) -> bool:
    """A Celery worker logs what its tasks print (`worker_redirect_stdouts`) as `celery.redirected`
    records, structlog's default PrintLogger among them: a line that is an event the processor
    wrote, printed by that event's logger, is in the stream already. This thread's note is used up
    either way, so a line the app prints later is never taken for an event."""
    logger, _written.logger = getattr(_written, "logger", None), None
    return logger is not None and _printing_logger(sys._getframe(1)) is logger


# From this predicate to structlog's print: our bridge handler and its filters, the capture,
# logging's `log`, `_log` and `handle`, and Celery's `LoggingProxy.write`.
_FRAMES_UP_TO_THE_PRINT = 24


def _printing_logger(frame: FrameType | None) -> object:
    """The structlog logger whose `msg` is printing, if one is, a few frames up."""
    printing = _printing_methods()
    for _ in range(_FRAMES_UP_TO_THE_PRINT):
        if frame is None:
            return None
        if frame.f_code in printing:
            return frame.f_locals.get("self")
        frame = frame.f_back
    return None


@functools.cache
def _printing_methods() -> frozenset[CodeType]:
    """structlog's loggers that write text to a stream: sys.stdout, unless given a file."""
    import structlog

    return frozenset({structlog.PrintLogger.msg.__code__, structlog.WriteLogger.msg.__code__})
