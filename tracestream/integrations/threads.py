"""Threads a request or a task starts run in its trace.

A thread starts with an empty context: without this, what it logs carries no trace id and each
call it makes begins a trace of its own (the concurrent.futures docs' `ThreadPoolExecutor`
example in a view, `loop.run_in_executor`, a `threading.Thread`). Under the launcher,
upstream's threading instrumentation, which `opentelemetry-bootstrap` installs everywhere,
carries the context across; we stand in for it there, so `configure()` and the launcher give
an app the same traces.

As upstream's, the OpenTelemetry context current at `Thread.start()` is the one the thread
runs in (a `Timer` and a subclass's own `run()` too), and the one current at
`ThreadPoolExecutor.submit()` the one the task runs in (`map` and `run_in_executor` submit).
Only that context goes across, not the app's other context variables. Unlike upstream's, no
frame of ours runs in the thread: it runs through `Context.run`, so the tracebacks the app
prints are unchanged. A thread started inside a span keeps that span's trace for its whole life.

A process multiprocessing forks (a `ProcessPoolExecutor`'s or a `Pool`'s worker, a `Process`)
starts with no trace, as a spawned one does: it would go on in the context of the call that
forked it, and an executor forks its worker at the first `submit()`, inside a request, whose
trace then collected the lines of every later task.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import Context
from functools import partial
from types import MethodType
from typing import Any

import wrapt
from opentelemetry import context as otel_context

from tracestream.forks import renew_in_child

__all__ = ["context_of", "install"]

# The context a thread was started in, for its uncaught exception: Python reports that after
# `run()` has returned, outside the context the thread ran in.
_STARTED_IN = "_tracestream_started_in"

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    wrapt.wrap_function_wrapper(threading.Thread, "start", _start_in_context)
    wrapt.wrap_function_wrapper(ThreadPoolExecutor, "submit", _submit_in_context)
    renew_in_child(_leave_the_trace_in_the_parent)


def context_of(thread: threading.Thread | None) -> otel_context.Context | None:
    """The OpenTelemetry context `thread` was started in, if it was started inside one."""
    started_in: otel_context.Context | None = getattr(thread, _STARTED_IN, None)
    return started_in


def _start_in_context(
    start: Callable[[], None], thread: threading.Thread, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    current = otel_context.get_current()
    if current and context_of(thread) is None:
        setattr(thread, _STARTED_IN, current)
        thread.run = _run_in(_carrying(current), thread)  # type: ignore[method-assign]
    start(*args, **kwargs)


def _run_in(carrier: Context, thread: threading.Thread) -> Callable[[], None]:
    """`thread.run` inside `carrier`. A method stays a method of the thread, whose `__func__`
    takes the thread, as wrappers of `run` started after ours expect (Sentry's threading
    integration calls `run.__func__(thread)`); any other callable is called as it is."""
    run = thread.run
    function = getattr(run, "__func__", None)
    if function is not None and getattr(run, "__self__", None) is thread:
        return MethodType(partial(carrier.run, function), thread)
    return partial(carrier.run, run)


def _submit_in_context(
    submit: Callable[..., Any], executor: ThreadPoolExecutor, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    current = otel_context.get_current()
    if current and args:
        return submit(_carrying(current).run, *args, **kwargs)
    return submit(*args, **kwargs)


def _carrying(current: otel_context.Context) -> Context:
    """A fresh context holding only `current`: one thread or task enters it, once."""
    carrier = Context()
    carrier.run(otel_context.attach, current)
    return carrier


# Where multiprocessing's fork start method forks (Celery's billiard is a fork of it).
_FORKING_MODULES = frozenset({"multiprocessing.popen_fork", "billiard.popen_fork"})


def _leave_the_trace_in_the_parent() -> None:
    """In a child forked by multiprocessing: no trace from here on (the forking call's frame is
    a few above this one, which `forks` calls from Python's fork hook)."""
    frame = sys._getframe(1)
    for _ in range(4):
        if frame.f_code.co_name == "_launch" and frame.f_globals.get("__name__") in _FORKING_MODULES:
            otel_context.attach(otel_context.Context())
            return
        if frame.f_back is None:
            return
        frame = frame.f_back
