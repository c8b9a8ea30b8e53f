"""Real threads and locks for the export path, whatever green-thread library the app patched in.

gevent and eventlet turn `threading` into greenlets. Our queues can be made before the patch
(the launcher loads us first; gunicorn's gevent worker patches after it forks) and used after
it, and a greenlet that waits on a real lock blocks every greenlet of its thread. So the
export path always runs on a real thread and waits only on real locks, patched or not: the
app's greenlets only append to a queue and, at exit, wait for a flush.
"""

from __future__ import annotations

import _thread
import signal
import sys
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Event", "Jobs", "Result", "Worker", "get_ident", "lock", "start"]


def _original(name: str) -> Any:
    """`_thread.name` as the interpreter made it, before gevent or eventlet replaced it."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None:
        return gevent_monkey.get_original("_thread", name)
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None:
        return getattr(eventlet_patcher.original("_thread"), name)
    return getattr(_thread, name)


# Looked up as this module loads (a patch made later replaces them in `_thread`, not here): a
# lookup at call time can import, which fails at the interpreter's teardown (a record logged
# from a `__del__` there).
_allocate_lock = _original("allocate_lock")
_get_ident = _original("get_ident")
_start_new_thread = _original("start_new_thread")


def lock() -> Any:
    """A real `_thread.lock`."""
    return _allocate_lock()


def get_ident() -> int:
    """The calling thread's real id: one for all the greenlets of a thread."""
    return int(_get_ident())


class Event:
    """`threading.Event` on a real lock: the gate is locked while the event is clear."""

    def __init__(self) -> None:
        self._mutex = lock()
        self._gate = lock()
        self._gate.acquire()

    def is_set(self) -> bool:
        return not self._gate.locked()

    def set(self) -> None:
        with self._mutex:
            if self._gate.locked():
                self._gate.release()

    def clear(self) -> None:
        with self._mutex:
            self._gate.acquire(False)

    def wait(self, timeout: float | None = None) -> bool:
        if not self._gate.acquire(True, -1 if timeout is None else timeout):
            return False
        self.set()  # waiting does not clear it
        return True


class Result(Generic[T]):
    """A value one thread sets once and another waits for."""

    def __init__(self) -> None:
        self._ready = Event()
        self._value: T | None = None

    def set(self, value: T) -> None:
        self._value = value
        self._ready.set()

    def get(self, timeout: float | None = None) -> T | None:
        """The value, or None if it was not set within `timeout` seconds."""
        return self._value if self._ready.wait(timeout) else None


class Jobs(Generic[T]):
    """A queue with one consumer, which waits for the next item."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._ready = Event()

    def put(self, item: T) -> None:
        self._items.append(item)
        self._ready.set()

    def get(self) -> T:
        while True:
            self._ready.clear()
            if self._items:
                return self._items.popleft()
            self._ready.wait()


# A signal sent to the process goes to any thread not blocking it. On ours it would not
# interrupt the main thread's blocking call, and only there does Python run its handler: a
# `Pool` worker waiting on a lock lived on after `terminate()`, and its parent waited for ever.
# Our threads are born blocking them (the starting thread's mask is theirs): a thread that
# blocked them only once it ran could take one sent before, and the main thread sleep on.
_SENT_TO_THE_PROCESS = signal.valid_signals() - {
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGFPE,
    signal.SIGILL,
    signal.SIGTRAP,
    signal.SIGABRT,
    signal.SIGSYS,
}


class Worker:
    """A daemon thread running `target`, which can be waited for; it takes no signal sent to
    the process."""

    def __init__(self, target: Callable[[], object]) -> None:
        self._done = lock()
        self._done.acquire()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SENT_TO_THE_PROCESS)  # inherited by the thread
        try:
            self.ident: int = _start_new_thread(self._run, (target,))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _run(self, target: Callable[[], object]) -> None:
        try:
            target()
        finally:
            self._done.release()

    def is_alive(self) -> bool:
        return bool(self._done.locked())

    def join(self, timeout: float) -> None:
        if self._done.acquire(True, timeout):
            self._done.release()


def _import_what_gevent_imports_at_first_lookup() -> None:
    """Import, in the calling thread, what gevent imports the first time a thread looks up a
    host: its resolver, its thread pool and the idna codec.

    Once gevent has patched `_thread`, each import holds a greenlet lock. Were our thread the
    one importing, an app greenlet importing the same module then would wait on a lock held in
    a thread its hub cannot see, and gevent raises LoopExit: a Celery gevent worker died at
    start connecting to its broker while our thread connected to Redis."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is None or not gevent_monkey.is_module_patched("socket"):
        return
    config = sys.modules["gevent"].config
    for setting in ("resolver", "threadpool"):
        getattr(config, setting)  # imports the class the setting names
    "localhost".encode("idna")


def start(target: Callable[[], object]) -> Worker | None:
    """A `Worker` running `target`, or None where the interpreter starts no thread: Python 3.12.0
    to 3.12.2 refuse them once the exit has begun, atexit callbacks included (CPython gh-104690),
    and a system out of threads refuses them at any time. The caller then does the work itself."""
    _import_what_gevent_imports_at_first_lookup()
    try:
        return Worker(target)
    except RuntimeError:
        return None
