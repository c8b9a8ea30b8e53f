"""Exceptions nothing caught: the one that ends the program, and those that end a thread or a
`multiprocessing` child.

Python hands them to `sys.excepthook` and `threading.excepthook`, which print the traceback
and write nothing anywhere else: a script, a management command or a worker that crashes at
start left no record. Like Sentry's excepthook integration we wrap both hooks, once a process:
each such exception becomes an ERROR record with its traceback (an error issue), then the
hook the app had runs, so what it prints and its exit status are unchanged. A hook the app
sets afterwards (rich's `traceback.install()`, Typer's) replaces ours: the exception that
ended the program is then recorded at exit, from `sys.last_value`. A `multiprocessing` child
hands its exception to no hook: it prints it with `traceback.print_exc()`, which we wrap to
record it first (an app that fails to load in uvicorn's `--workers` and `--reload` children).

Under the launcher we stand in for upstream's instrumentation of the same hooks, which
`opentelemetry-bootstrap` installs everywhere: beside ours it recorded each crash twice, and
asyncio's "Task exception was never retrieved" beside asyncio's own logged line.
"""

from __future__ import annotations

import functools
import sys
import threading
import traceback
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.trace import Span, set_span_in_context

from tracestream._internal_log import internal_logger
from tracestream.integrations import threads
from tracestream.integrations.record_writer import RecordWriter
from tracestream.otel_setup.shutdown import before_closing

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = ["install"]

SCOPE = "tracestream.uncaught"
# Not failures: Ctrl-C, and a thread's `sys.exit()`, which Python's own hook passes over too.
_NOT_CRASHES = (KeyboardInterrupt, SystemExit)

_writer = RecordWriter(SCOPE, located_by_exception=True)
_installed = False
# The id, not the exception: held here, it and the stack it ended would outlive the modules
# Python tears down before ours, and the `__del__` of what that stack held would find them gone.
_recorded_end: int | None = None


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    app_hook = sys.excepthook
    app_thread_hook = threading.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        if not hasattr(sys, "ps1"):  # at an interactive prompt (`python -i`, a shell) it ends nothing
            _record_the_end(error)
        app_hook(kind, error, trace)

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            name = args.thread.name if args.thread is not None else "?"
            body = f"uncaught exception in thread {name}: the thread ends"
            _record(args.exc_value, body, {"thread.name": name}, threads.context_of(args.thread))
        app_thread_hook(args)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    before_closing(_record_an_end_another_hook_took)
    print_exc = traceback.print_exc

    @functools.wraps(print_exc)
    def print_exc_recording_a_child_process_end(
        limit: int | None = None, file: SupportsWrite[str] | None = None, chain: bool = True
    ) -> None:
        # The traceback printed is the exception's own, whose stack this frame is not on.
        error = sys.exc_info()[1]
        name = _child_process_printing(sys._getframe(1))
        if error is not None and name is not None:
            _record(error, f"uncaught exception in process {name}: the process ends", {})
        print_exc(limit=limit, file=file, chain=chain)

    traceback.print_exc = print_exc_recording_a_child_process_end


def _child_process_printing(caller: FrameType) -> str | None:
    """The name of the multiprocessing child whose bootstrap is `caller`, printing what its
    `run()` raised. Looked up, not imported: a process that runs a child has imported it."""
    process = sys.modules.get("multiprocessing.process")
    if process is None or caller.f_code is not process.BaseProcess._bootstrap.__code__:
        return None
    return str(process.current_process().name)


def _record_the_end(error: BaseException) -> None:
    global _recorded_end
    if id(error) != _recorded_end:  # `sys.last_value` keeps it alive: its id is not reused
        _recorded_end = id(error)
        _record(error, "uncaught exception: the program ends", {}, _span_it_went_through(error))


def _span_it_went_through(error: BaseException) -> Context | None:
    """The trace of the innermost span a frame on the exception's way up held (contrib's click
    instrumentation around a command, an app's `with tracer.start_as_current_span(...) as
    span`): those spans have ended, and recorded it, before Python hands it to the hook. Told by
    type alone, so a lazy object in a frame is never evaluated."""
    found: Span | None = None
    frames = error.__traceback__
    while frames is not None:
        for value in frames.tb_frame.f_locals.values():
            if issubclass(type(value), Span) and value.get_span_context().is_valid:
                found = value
        frames = frames.tb_next
    return set_span_in_context(found) if found is not None else None


def _record_an_end_another_hook_took() -> None:
    """Python keeps the exception that ends the program in `sys.last_value` as it hands it to
    `sys.excepthook`. A hook set after ours that does not call the one it replaced (rich's
    `traceback.install()`, Typer's, which the `fastapi` command sets) printed it: it is
    recorded as the queues close."""
    if hasattr(sys, "ps1"):  # an interactive session keeps its prompt's last exception there
        return
    error = getattr(sys, "last_value", None)
    if isinstance(error, BaseException) and _reached_the_top(error):
        _record_the_end(error)


# Where the program's own code begins: its main module, or runpy, which runs it for `-m`.
_TOP_LEVEL = frozenset({"__main__", "runpy"})


def _reached_the_top(error: BaseException) -> bool:
    """An exception that ended the program went up through its first frame. One caught on the
    way and kept in `sys.last_value` for post-mortem debugging (pytest keeps each failed test's)
    did not: its traceback starts where it was caught."""
    tb = error.__traceback__
    return tb is not None and tb.tb_frame.f_globals.get("__name__") in _TOP_LEVEL


def _record(
    error: BaseException, body: str, attributes: dict[str, str], context: Context | None = None
) -> None:
    """`context`: a thread's crash is reported after it left the context it ran in."""
    if isinstance(error, _NOT_CRASHES):
        return
    try:
        _writer.emit(body, SeverityNumber.ERROR, attributes, exception=error, context=context)
    except Exception as failure:  # the app's own hook must run whatever happens here
        internal_logger.warning("cannot record an uncaught exception: %r", failure)
