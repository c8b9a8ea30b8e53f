"""Export what was logged before the process ends, within a bounded time.

Four ways out, four hooks:
- a normal exit (including uvicorn's, gunicorn workers' and a framework's own signal
  handling, which end in one) runs `atexit`, where every queue is flushed and shut down
  against one shared deadline;
- SIGTERM, SIGINT or SIGHUP (a terminal closing) whose action is death: ours closes the queues,
  as at exit, and the process dies of the same signal, so exit statuses do not change. In a PID
  namespace's init, where the kernel ignores the default action, a default one is left alone
  (a handler would wake a `signal.pause()` there). A framework's handler is left in place: its
  graceful shutdown ends in one of these ways, and a flush of ours ahead of it let the next
  signal overtake this one (uvicorn's reloader sends SIGTERM after Ctrl-C, and uvicorn took the
  Ctrl-C that came second for another, and quit without the app's lifespan shutdown). Python's
  own SIGINT handler is left alone: its KeyboardInterrupt ends at `atexit`;
- a server that handled the signal itself and, its shutdown done, puts the default action
  back and raises the signal again (uvicorn's workers under `--workers` and `--reload`, which
  load the app inside that handling) dies without `atexit`: `signal.raise_signal` closes the
  queues first. Where the raised signal is Ctrl-C's KeyboardInterrupt, the deadly defaults that
  server put back get our handler again: Python waits for the app's threads before `atexit`,
  and a SIGTERM meanwhile (uvicorn's supervisor's, to a worker still alive) killed it unflushed;
- `os._exit` skips `atexit`: it closes the queues first (a daemon's parents leaving after
  each fork, a forked child done with its work, multiprocessing's fork children, `Process`
  and `Pool` workers, after their exit hooks ran). Celery's prefork children close them from
  its shutdown hook (integrations/celery.py); by `os._exit` there is nothing left.
When Redis is down the flush ends as soon as everything is in the spool. The queues close
once at a time: a deadly signal that comes while they close (multiprocessing's
`Pool.terminate()`, as its workers exit; uvicorn's supervisor, to a worker still flushing)
waits for the close, then kills the process. Ctrl-C while they close, where Python's own
handler would raise KeyboardInterrupt into the flush, ends the wait for Redis instead.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any, NoReturn

import wrapt

from tracestream.forks import renew_in_child
from tracestream.otel_setup import pool_workers
from tracestream.otel_setup.pipeline import BatchQueue, remaining, tell_left_in_spool

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_queues: list[BatchQueue[Any]] = []
_before_closing: list[Callable[[], None]] = []
_joined_providers: list[Any] = []  # another setup's, its own exporters beside our queues
_timeout = 5.0
_closing = False
_held_signal: int | None = None  # a deadly signal that came while the queues were closing
_mask_before_fork: set[int | signal.Signals] | None = None  # set while a fork holds signals
_raise_signal = signal.raise_signal
_exit = os._exit
_Handler = Callable[[int, FrameType | None], Any] | int | None
_handlers: dict[int, tuple[_Handler, _Handler]] = {}  # each signal we chained: (ours, what it replaced)
_disarmed: set[int] = set()  # in a forked child: the signals whose inherited handler we took back
_left_to_init: set[int] = set()  # in PID 1: the signals whose default we left alone (see `_kills`)


def install(queues: Sequence[BatchQueue[Any]], timeout: float) -> None:
    """Once per process: flush `queues` at exit and on SIGTERM/SIGINT/SIGHUP, within `timeout` seconds."""
    global _timeout
    first = not _queues
    _queues.extend(queues)
    _timeout = timeout
    if not first:
        return
    atexit.register(close_queues)
    signal.raise_signal = _flushing_raise_signal
    os._exit = _closing_exit
    for queue in queues:
        queue.on_start = _on_first_record
    if threading.current_thread() is threading.main_thread():
        for number in _SIGNALS:
            _chain(number)
        wrapt.register_post_import_hook(_take_back_from_asyncio, "asyncio.unix_events")
        if pool_workers.started_by_multiprocessing():  # a spawned child, as a forked one
            _start_unarmed()
        os.register_at_fork(
            before=_hold_signals, after_in_parent=_release_signals, after_in_child=_start_unarmed
        )
        renew_in_child(_release_signals)  # also from uWSGI's postfork, when it ran our before-fork hook


def before_closing(callback: Callable[[], None]) -> None:
    """`callback` runs as the queues start to close (at exit, a deadly signal, `os._exit`): the
    records it writes then go out with the rest."""
    _before_closing.append(callback)


def flush_joined_provider(provider: Any) -> None:
    """Flushed as the queues close: at a deadly signal or `os._exit` nothing else would flush the
    exporters another setup (upstream's configurator) gave `provider`, and what their batch
    processors held was lost. At a normal exit the SDK flushes it again, with nothing left."""
    _joined_providers.append(provider)


def _secure_queues() -> None:
    """What a `Pool` worker holds in memory, out of it (pool_workers.py)."""
    _every_queue(BatchQueue.secure)


def _every_queue(step: Callable[[BatchQueue[Any], float], bool], timeout: float | None = None) -> bool:
    """`step` on each queue in turn, all within one `timeout` (default: the shutdown timeout)."""
    deadline = time.monotonic() + (_timeout if timeout is None else timeout)
    results = [step(queue, remaining(deadline)) for queue in _queues]
    return all(results)


def close_queues(kill: Kill | None = None) -> None:
    """At exit: flush, then stop accepting records; anything left in memory is counted as dropped.
    Once per process: a Celery child's shutdown hook closes them, and its `os._exit` would again,
    saying again what waits in the spool. With a `kill` coming, the wait for Redis is shorter."""
    global _closing, _closed
    if _closing or _closed:  # a signal handler, inside the close it interrupted; or closed
        return
    _closing = True
    replaced = _hold_deadly_signals()
    try:
        _close_every_queue_or_stop_waiting(kill or _reloaders_kill())
    finally:
        _closing = False
        _closed = True
        for number, handler in replaced.items():
            signal.signal(number, handler)
    if _held_signal is not None:
        _die_of(_held_signal)


@dataclass(frozen=True)
class Kill:
    """A SIGKILL `after` seconds into the close, which `sender` sends: what Redis has not taken
    by 40% of that time goes to the spool, or it would be lost without a line."""

    after: float
    sender: str

    @property
    def wait_for_redis(self) -> float:
        return self.after * 0.4

    @property
    def why(self) -> str:
        return f"{self.sender}, so the exit waited {self.wait_for_redis:g} s for it"


def _reloaders_kill() -> Kill | None:
    """Django's runserver and Werkzeug (Flask's `--debug`) serve from a child of their reloader,
    which it kills a quarter of a second after Ctrl-C (subprocess's rule)."""
    if os.environ.get("RUN_MAIN") == "true" or os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return _KILLED_BY_ITS_RELOADER
    return None


def _close_every_queue_or_stop_waiting(kill: Kill | None) -> None:
    """Every queue closed, and one line for what waits in the spool. When the wait for Redis
    is given up, the shortest queues are spooled first (a task's span before its log lines),
    and the line comes before the calls in flight are seen out: a kill may come sooner."""
    global _waiting
    _waiting = True
    try:
        _close_every_queue(kill)
    except _StopWaiting as stopped:
        for queue in sorted(_queues, key=len):
            queue.spool_without_waiting()
        _tell_left_in_spool(why=stopped.why)
        for queue in _queues:
            queue.close_without_waiting()
    else:
        _tell_left_in_spool()
    finally:
        _waiting = False


def _close_every_queue(kill: Kill | None) -> None:
    deadline = time.monotonic() + _timeout
    # With a kill coming, Redis is waited for only part of its time, then the spool takes the rest.
    waits_until = min(deadline, time.monotonic() + kill.wait_for_redis) if kill is not None else deadline
    for callback in _before_closing:
        callback()
    for provider in _joined_providers:
        provider.force_flush(int(remaining(waits_until) * 1000))
    # Every queue flushed first: one Redis did not take everything from is not tried again,
    # and the last status reports go out only where Redis took everything.
    flushed = []
    failing: set[str] = set()  # the servers a queue found not taking its records
    for queue in _queues:
        server = queue.spool.destination.server_url if queue.spool is not None else None
        if server in failing:
            # Another writer to it waited out its Redis timeout: a frozen Redis is not waited
            # for again, on a connection of this writer's own; its records go to the spool.
            queue.stop_waiting()
            flushed.append(queue.secure(remaining(waits_until)))
            continue
        flushed.append(queue.flush(remaining(waits_until)))
        if not flushed[-1] and server is not None:
            failing.add(server)
    if not all(flushed) and kill is not None and waits_until < deadline and _give_up_waiting():
        raise _StopWaiting(kill.why)
    for queue, out in zip(_queues, flushed, strict=True):
        queue.shutdown(remaining(deadline) if out else 0.0, report_status=all(flushed), tell_left=False)


def _tell_left_in_spool(why: str = "") -> None:
    """What waits in the spool, and why, where Redis gave no reason of its own."""
    left = [left for queue in _queues if (left := queue.left_in_spool()) is not None]
    tell_left_in_spool([replace(one, why=one.why or why) for one in left])


class _StopWaiting(BaseException):
    """Raised into the flush (where Ctrl-C's KeyboardInterrupt would be) to end the wait for Redis."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


_INTERRUPTED = "Ctrl-C ended the wait for it at exit"
_KILLED_BY_ITS_RELOADER = Kill(0.25, "its reloader kills this process 0.25 s after Ctrl-C")
_closed = False
_waiting = False  # for Redis, as the queues close
_gave_up = False


def _hold_deadly_signals() -> dict[int, _Handler]:
    """While the queues close, a signal whose action is death waits for the close. Our handler
    holds it, where it is in place; a server that set its own handlers and put back what it
    found (uvicorn's workers, which load the app inside its signal handling) has left the
    default, and its supervisor's SIGTERM to a worker still alive would kill it mid-flush.
    Python's own SIGINT handler would raise KeyboardInterrupt into the flush, and an impatient
    user's Ctrl-C then printed our traceback and made the exit longer: it ends the wait for
    Redis instead, and what memory holds goes to the spool."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    replaced: dict[int, _Handler] = {
        number: signal.signal(number, _hold)
        for number in _SIGNALS
        if signal.getsignal(number) is signal.SIG_DFL
    }
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        replaced[signal.SIGINT] = signal.signal(signal.SIGINT, _stop_waiting)
    return replaced


def _hold(signum: int, frame: FrameType | None) -> None:
    global _held_signal
    _held_signal = signum


def _stop_waiting(signum: int, frame: FrameType | None) -> None:
    """Once, while the queues wait for Redis: another Ctrl-C changes nothing."""
    if _waiting and _give_up_waiting():
        raise _StopWaiting(_INTERRUPTED)


def _give_up_waiting() -> bool:
    """Once: no Redis call starts from here, nor is one in flight waited for."""
    global _gave_up
    if _gave_up:
        return False
    _gave_up = True
    for queue in _queues:
        queue.stop_waiting()
    return True


def _flushing_raise_signal(signum: int) -> None:
    """Raising SIGTERM, SIGINT or SIGHUP at a process whose action for it is the default kills it
    without `atexit`: the queues are closed first, as at exit. Raised into a handler, it sets the
    process on its way out: the deadly defaults close the queues first until `atexit`."""
    if signum in _SIGNALS and _kills(signal.getsignal(signum)):
        close_queues()
    elif signum in _SIGNALS:
        _arm_deadly_defaults()
    _raise_signal(signum)


def _arm_deadly_defaults() -> None:
    """Our handler where a signal's action is death again (see `_flushing_raise_signal`)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in _SIGNALS:
        if number not in _disarmed and _kills(signal.getsignal(number)):
            signal.signal(number, _close_then_die)


def _kills(action: _Handler) -> bool:
    """Whether a signal with this action ends the process. Not the default action in the init
    process of a PID namespace (a container's `CMD ["python", "app.py"]` without an init),
    where the kernel ignores it: that app lives on until SIGKILL, and logs on meanwhile."""
    return action is signal.SIG_DFL and os.getpid() != 1


def _closing_exit(status: int) -> NoReturn:
    """`os._exit`, the queues closed first, as at exit."""
    try:
        close_queues()
    finally:
        _exit(status)


def _chain(number: int) -> None:
    previous = signal.getsignal(number)
    if previous is signal.SIG_IGN or previous is None:
        return  # ignored, or set outside Python: leave it alone
    if previous is signal.default_int_handler:
        # Python's KeyboardInterrupt ends at `atexit`, which flushes. Called from a handler of
        # ours, it would carry our frame in its traceback, and `asyncio.run()` puts its own
        # (cancel the main task, then interrupt) only in place of this one.
        return
    if previous is not signal.SIG_DFL:
        return  # a framework's: its graceful shutdown ends at `atexit` or in one of our hooks
    _handlers[number] = (_close_then_die, previous)
    if _kills(previous):
        signal.signal(number, _close_then_die)
    else:  # PID 1, where the signal does nothing: a handler would wake the app's `signal.pause()`
        _left_to_init.add(number)


def _close_then_die(signum: int, frame: FrameType | None) -> None:
    """In place of a deadly default: die of the same signal, as without us, once the queues are
    closed; during the close, the close this signal interrupted ends it."""
    global _held_signal
    if _closing:
        _held_signal = signum
    else:
        close_queues()
        _die_of(signum)


def _take_back_from_asyncio(unix_events: Any) -> None:
    """asyncio's `remove_signal_handler` (`loop.close()` runs it, so every `asyncio.run()` whose
    loop set a handler) puts the default action back, not the handler it replaced: ours, for
    SIGTERM. A SIGTERM after the loop then killed the process without its flush. Where the
    default is back, ours goes back in front of it, as at `configure()`. (uvloop's loop, in C,
    cannot be reached.)"""

    def remove_signal_handler(wrapped: Callable[[int], bool], loop: Any, args: Any, kwargs: Any) -> bool:
        removed = wrapped(*args, **kwargs)
        number = args[0] if args else kwargs.get("sig")
        if removed and number in _handlers and number not in _disarmed:
            ours, replaced = _handlers[number]
            if _kills(replaced) and signal.getsignal(number) is replaced:  # as arm_signals
                signal.signal(number, ours)
        return removed

    wrapt.wrap_function_wrapper(
        unix_events, "_UnixSelectorEventLoop.remove_signal_handler", remove_signal_handler
    )


def _on_first_record() -> None:
    """In each process, as its queues start: a `Pool` worker stays unarmed and writes its
    records before each result and each wait for a task (pool_workers.py); any other child
    gets our handlers back."""
    queues = pool_workers.pool_queues()
    if queues is None:
        arm_signals()
        return
    pool_workers.write_records_first(*queues, _secure_queues)
    _disarmed.clear()


def arm_signals() -> None:
    """From the main thread: in a child, the handlers we took back as it started, where it has
    set none of its own since."""
    if not _disarmed or threading.current_thread() is not threading.main_thread():
        return
    for number in _disarmed:
        ours, replaced = _handlers[number]
        if signal.getsignal(number) is replaced:
            signal.signal(number, ours)
    _disarmed.clear()


def _hold_signals() -> None:
    """Before a fork: Python forgets a signal that reaches the child before its fork hooks run.
    Held, it waits until our renewals have run there."""
    global _mask_before_fork
    _mask_before_fork = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)


def _release_signals() -> None:
    global _mask_before_fork
    if _mask_before_fork is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, _mask_before_fork)
        _mask_before_fork = None


def _start_unarmed() -> None:
    """A child has nothing to flush yet: until its first record a signal does to it what it
    would without us. A Python handler runs only between bytecodes, so a signal that comes just
    before the child blocks (a `Pool` worker reaching for its first task when `Pool.terminate()`
    sends SIGTERM) is never acted on: the worker lived on, and its parent waited for it for
    ever. (uWSGI sets its workers' handlers in C, behind Python's record of them: there they
    stay.)"""
    _disarmed.clear()
    if "uwsgi" in sys.modules:
        return
    for number, (ours, replaced) in _handlers.items():
        if signal.getsignal(number) is ours:
            signal.signal(number, replaced)
            _disarmed.add(number)
    _disarmed.update(number for number in _left_to_init if signal.getsignal(number) is signal.SIG_DFL)
    _left_to_init.clear()  # a child of PID 1, where the default kills: ours at its first record


def _die_of(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
