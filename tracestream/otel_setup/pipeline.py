"""Batching between the application's threads and an exporter.

The application thread only appends to a bounded deque. One daemon thread per process
drains it in batches, so no application thread ever waits on Redis. A failed batch is
kept and retried with backoff rather than dropped; a record is dropped only when the
queue is full, and every drop is counted.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

from tracestream._internal_log import internal_logger
from tracestream.otel_setup.settings import BatchSettings

T = TypeVar("T")

_MAX_BACKOFF = 5.0


@dataclass
class Counters:
    exported: int = 0
    dropped: int = 0
    failed_attempts: int = 0


class BatchQueue(Generic[T]):
    """A bounded queue with one worker thread that hands batches to `export`."""

    def __init__(self, name: str, export: Callable[[Sequence[T]], bool], batch: BatchSettings) -> None:
        self.name = name
        self.counters = Counters()
        self._export = export
        self._batch = batch
        self._shutdown = False
        self._reset()
        reset = weakref.WeakMethod(self._reset)
        os.register_at_fork(after_in_child=lambda: (method := reset()) and method())

    def _reset(self) -> None:
        """Fresh state; also what a forked child starts from (its parent's records are not its own)."""
        self._queue: deque[T] = deque()
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._backoff = 0.0
        self._thread: threading.Thread | None = None

    def put(self, item: T) -> None:
        if self._thread is None:
            self._start()
        queue = self._queue
        if len(queue) >= self._batch.max_queue_size or self._shutdown:
            self.counters.dropped += 1
            return
        queue.append(item)
        if len(queue) == self._batch.max_export_batch_size:  # wake once per full batch, not per record
            self._wake.set()

    def _start(self) -> None:
        with self._export_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"tracestream-{self.name}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        while not self._shutdown:
            self._wake.wait(self._backoff or self._batch.schedule_delay)
            self._wake.clear()
            self._drain(deadline=None)

    def _drain(self, deadline: float | None) -> bool:
        """Export until the queue is empty; False if an export failed or time ran out."""
        with self._export_lock:
            queue = self._queue
            size = self._batch.max_export_batch_size
            while queue:
                if deadline is not None and time.monotonic() > deadline:
                    return False
                batch = [queue.popleft() for _ in range(min(size, len(queue)))]
                if not self._export_batch(batch):
                    queue.extendleft(reversed(batch))
                    return False
            return True

    def _export_batch(self, batch: list[T]) -> bool:
        try:
            ok = self._export(batch)
        except Exception as error:  # an exporter bug must not kill the worker
            internal_logger.warning("%s exporter raised %r", self.name, error)
            ok = False
        if ok:
            self.counters.exported += len(batch)
            self._backoff = 0.0
        else:
            self.counters.failed_attempts += 1
            self._backoff = min(_MAX_BACKOFF, max(0.1, self._backoff * 2))
        return ok

    def flush(self, timeout: float) -> bool:
        """Export everything queued so far, from the caller's thread, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while not self._drain(deadline):
                if time.monotonic() > deadline:
                    return False
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            return True
        finally:
            detach(token)

    def shutdown(self, timeout: float) -> bool:
        flushed = self.flush(timeout)
        self._shutdown = True
        self._wake.set()
        if not flushed:
            internal_logger.warning("%s: %d records not exported at shutdown", self.name, len(self._queue))
        return flushed

    def __len__(self) -> int:
        return len(self._queue)
