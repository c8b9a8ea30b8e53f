"""multiprocessing's children, and what a `Pool` worker needs instead of our signal handlers.

`Pool.terminate()` (which `with Pool()` runs as its block ends) sends SIGTERM to workers that
may be on their way to block on the pool's queue lock. Python runs a signal handler only
between bytecodes, so a handler of ours that came just before the worker blocked never runs,
and the parent waits for that worker for ever. A worker therefore keeps the action the pool
gave it (death), and has nothing left to lose to it: what it logged is written, to Redis or
the spool, before it hands back a result and before it waits for a task.

tracestream never imports multiprocessing: a process that has not loaded it is no child of it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["pool_queues", "started_by_multiprocessing", "write_records_first"]


def started_by_multiprocessing() -> bool:
    """True in a multiprocessing child, from the moment a spawned one imports the main module."""
    process = sys.modules.get("multiprocessing.process")
    if process is None:
        return False
    current = process.current_process()
    return bool(getattr(current, "_inheriting", False)) or process.parent_process() is not None


def pool_queues() -> tuple[Any, Any] | None:
    """The queues a `Pool` worker takes tasks from and hands results back on; None in any other
    process."""
    process = sys.modules.get("multiprocessing.process")
    pool = sys.modules.get("multiprocessing.pool")
    if process is None or pool is None:
        return None
    current = process.current_process()
    if getattr(current, "_target", None) is not pool.worker:
        return None
    tasks, results = current._args[:2]  # worker(inqueue, outqueue, initializer, ...)
    return tasks, results


def write_records_first(tasks: Any, results: Any, flush: Callable[[], object]) -> None:
    """`flush` before each result and each wait for a task. The worker bound the queues' `get`
    and `put` before any record, but each takes its queue's lock as it runs: there it can
    still be held back."""
    for queue, name in ((tasks, "_rlock"), (results, "_wlock")):
        lock = getattr(queue, name, None)
        if lock is not None and not isinstance(lock, _RecordsFirst):
            setattr(queue, name, _RecordsFirst(lock, flush))


class _RecordsFirst:
    """A queue lock of the worker's, taken once the worker's records are out of its memory."""

    def __init__(self, lock: Any, flush: Callable[[], object]) -> None:
        self._lock = lock
        self._flush = flush

    def __enter__(self) -> bool:
        self._flush()
        return bool(self._lock.__enter__())

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._lock.__exit__(kind, error, trace)
