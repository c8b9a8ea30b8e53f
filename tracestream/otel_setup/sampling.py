"""Log records follow their trace's head-sampling decision, and say what they stand for.

OpenTelemetry Python samples spans but keeps every log record, so the records of dropped
traces fill the stream while their traces are missing (opentelemetry-python-contrib#3435).
Under `follow_trace`:

- a record at WARN or above is always kept, with its trace id;
- a record below WARN is kept when its trace was sampled (W3C `sampled` flag), or when it
  is outside any trace;
- below WARN in an unsampled trace, it is held back for a while in a small per-trace buffer;
  an ERROR record in that trace releases what is held (and lets the trace's later records
  through), otherwise it is dropped when the buffer fills or the hold time runs out.

Kept records of sampled traces below WARN carry `tracestream.sample_weight` (1/ratio of the
sampler), so readers can estimate true counts; records released by an error carry weight 0:
the sampled traces already stand for them (`tracestream.summary.sample_weight` reads it
back). See docs/sampling.md.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tracestream.forks import renew_in_child

__all__ = [
    "HOLD_RECORDS",
    "HOLD_RECORDS_PER_TRACE",
    "HOLD_SECONDS",
    "TraceLogGate",
    "release_trace",
    "sample_ratio",
]


WARN = 13  # OTel severity numbers
ERROR = 17
# What an unsampled trace may hold back until an error releases it: bounded per trace, in
# total and in time, so a busy process that samples 1% never keeps the other 99% in memory.
HOLD_RECORDS_PER_TRACE = 64
HOLD_RECORDS = 4096
HOLD_SECONDS = 30.0

T = TypeVar("T")


def sample_ratio(sampler: object) -> float | None:
    """The share of new traces `sampler` keeps, for the SDK's ratio samplers; None when it cannot say.

    A parent-based sampler follows the caller's decision, so its root sampler's ratio is the one
    new traces are kept at. The SDK keeps that root private (`_root`), hence the duck typing.
    """
    root = getattr(sampler, "_root", sampler)
    rate = getattr(root, "rate", None)
    if isinstance(rate, float) and 0.0 < rate <= 1.0:
        return rate
    return None


@dataclass
class _Held(Generic[T]):
    since: float
    records: deque[T] = field(default_factory=lambda: deque(maxlen=HOLD_RECORDS_PER_TRACE))


class TraceLogGate(Generic[T]):
    """Decides, on the calling thread, whether a record goes on to `forward`.

    `weigh(record, weight)` stamps the sampling weight on a record. `ratio` is read once, at
    the first record that needs it: the tracer provider is set after the log processors exist.
    Only records of unsampled traces take the lock; the common paths are a few comparisons.
    """

    def __init__(
        self,
        forward: Callable[[T], None],
        weigh: Callable[[T, float], None],
        ratio: Callable[[], float | None],
        hold_seconds: float = HOLD_SECONDS,
        hold_records: int = HOLD_RECORDS,
    ) -> None:
        self._forward = forward
        self._weigh = weigh
        self._ratio = ratio
        self._weight: float | None = None
        self._weight_known = False
        self._hold_seconds = hold_seconds
        self._hold_records = hold_records
        self._start()
        renew_in_child(self._start)
        _gates.add(self)

    def _start(self) -> None:
        """Also a forked child's start: a lock held by another thread at the fork is never released there."""
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """Forget what is held: also what a forked child starts from (its parent's traces are not its own)."""
        self._held: OrderedDict[int, _Held[T]] = OrderedDict()
        self._held_count = 0
        self._erroring: OrderedDict[int, float] = OrderedDict()
        # records of unsampled traces never kept: expired, evicted, or over their trace's bound
        self.not_sampled = 0

    def admit(self, record: T, trace_id: int, sampled: bool, severity: int) -> None:
        if not trace_id or severity >= WARN:
            if severity >= ERROR and trace_id and not sampled:
                self.release(trace_id)
            self._forward(record)
        elif sampled:
            weight = self._sampled_weight()
            if weight is not None:
                self._weigh(record, weight)
            self._forward(record)
        else:
            self._hold(record, trace_id)

    def _sampled_weight(self) -> float | None:
        if not self._weight_known:
            ratio = self._ratio()
            self._weight = 1.0 / ratio if ratio is not None and ratio < 1.0 else None
            self._weight_known = True
        return self._weight

    def _hold(self, record: T, trace_id: int) -> None:
        """Most records of a sampled-down service come here: the clock is read once per trace."""
        with self._lock:
            held = self._held.get(trace_id)
            if held is None:
                if trace_id in self._erroring:
                    self._weigh(record, 0.0)
                    self._forward(record)
                    return
                now = time.monotonic()
                self._expire(now)
                held = self._held[trace_id] = _Held(now)
            records = held.records
            if len(records) == HOLD_RECORDS_PER_TRACE:
                self.not_sampled += 1  # the oldest gives way: the lines nearest an error matter most
            else:
                self._held_count += 1
            records.append(record)
            while self._held_count > self._hold_records:
                self._drop_oldest()

    def release(self, trace_id: int) -> None:
        """The trace ended in an error: what it held goes on, and so do its records from now on."""
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            self._erroring[trace_id] = now
            held = self._held.pop(trace_id, None)
            if held is None:
                return
            self._held_count -= len(held.records)
            for record in held.records:
                self._weigh(record, 0.0)
                self._forward(record)

    def _expire(self, now: float) -> None:
        cutoff = now - self._hold_seconds
        while self._held and next(iter(self._held.values())).since < cutoff:
            self._drop_oldest()
        while self._erroring and next(iter(self._erroring.values())) < cutoff:
            self._erroring.popitem(last=False)
        while len(self._erroring) > self._hold_records:
            self._erroring.popitem(last=False)

    def _drop_oldest(self) -> None:
        _, held = self._held.popitem(last=False)
        self._held_count -= len(held.records)
        self.not_sampled += len(held.records)

    def held(self) -> int:
        """Records waiting for their trace to end in an error."""
        return self._held_count

    def status(self) -> dict[str, int]:
        """Reported with the queue's counters, in the process's status hash (`logs.not_sampled`, …)."""
        return {"held_unsampled": self._held_count, "not_sampled": self.not_sampled}


_gates: weakref.WeakSet[TraceLogGate[Any]] = weakref.WeakSet()


def release_trace(trace_id: int) -> None:
    """An error span ended in an unsampled trace that was recorded anyway (a RECORD_ONLY sampler)."""
    for gate in list(_gates):
        gate.release(trace_id)
