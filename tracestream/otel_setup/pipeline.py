"""Batching between the application's threads and an exporter.

The application thread only appends to a bounded deque. One daemon thread per process
drains it in batches, so no application thread ever waits on Redis; it encodes each batch
while a sender thread has the previous one with Redis. When Redis fails, the
worker keeps going: encoded batches go to an on-disk spool (if the exporter can encode
rows) and are replayed, oldest first, once Redis answers again. Without a spool, or with
a full one, the failed batch is held and retried with backoff while newer records wait in
the queue. A batch Redis refuses for what is in it (see `tracestream.redis_errors`) is not
retried whole: its halves are sent until the refused records stand alone, and those go to
the spool's dead-letter file, so one bad record never holds up the records behind it. A
record is dropped only when there is no room left anywhere, it cannot be encoded at all,
or Redis refused it and it could not be kept; every drop is counted with its reason.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cache, partial
from typing import Any, Generic, TypeVar

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

from tracestream._internal_log import internal_logger
from tracestream.connection import follow_a_late_select_patch
from tracestream.disk_spool import Destination, Spool, replay_command
from tracestream.forks import follow_uwsgi_forks, forks_strand_threads, renew_in_child
from tracestream.otel_setup import native_threads
from tracestream.otel_setup.log_capture import writing_to_redis
from tracestream.redis_errors import describe, error_code, is_reply, is_transient
from tracestream.settings import BatchSettings

T = TypeVar("T")

_MAX_BACKOFF = 5.0
_JOIN_TIMEOUT = 5.0
_DEADLINE_CHECK = 0.02  # seconds: how often a wait for Redis looks at its deadline again
STATUS_INTERVAL = 5.0


@dataclass
class Counters:
    """Records by fate.

    `exported` includes replayed records; `replayed` counts records taken off the spool
    (delivered, or dead-lettered when refused), so it catches up with `spooled`. `refused`
    counts records Redis refused, by error code: each was either `dead_lettered` or
    `dropped_refused`.
    """

    exported: int = 0
    spooled: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    dropped_queue_full: int = 0
    dropped_invalid: int = 0
    dropped_at_shutdown: int = 0
    dropped_refused: int = 0
    dropped_torn: int = 0
    failed_attempts: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return (
            self.dropped_queue_full
            + self.dropped_invalid
            + self.dropped_at_shutdown
            + self.dropped_refused
            + self.dropped_torn
        )

    def as_dict(self) -> dict[str, int]:
        counts = {name: value for name, value in asdict(self).items() if isinstance(value, int)}
        counts.update({f"refused.{code}": count for code, count in self.refused.items()})
        return {**counts, "dropped": self.dropped}


@dataclass(frozen=True)
class Refused:
    """Redis refused a batch for what is in it, or sending it raised where no retry will help (the
    Redis client broken in this process): sending the same records again will not help."""

    code: str  # WRONGTYPE, ERR, … (bounded: it names a counter)
    reason: str
    by_redis: bool = True


# What an export attempt came to: True (taken), False (a transient failure: try again later), or a refusal.
Outcome = bool | Refused


class Overtaken:
    """The worker stopped waiting for a call still in flight, as the queue filled up behind it:
    the batch goes to the spool ahead of what follows it, and the call's end is awaited before
    anything more is sent."""

    def __bool__(self) -> bool:
        return False


OVERTAKEN = Overtaken()


StatusReport = Callable[[dict[str, int]], None]


@dataclass(frozen=True)
class Sending:
    batch: list[Any]
    result: native_threads.Result[Outcome]


def _first(queue: deque[T], count: int) -> list[T]:
    """The first `count` items, left in the queue until they are handed on (`_take_off`). A
    signal handler that exits (gunicorn's SIGQUIT calls `sys.exit`) may raise in the middle of a
    flush: what it interrupts is still queued for the exit's own flush, which sends it. One that
    lands between the hand-off and `_take_off`, a few instructions, has the batch sent twice."""
    return list(itertools.islice(queue, count))


def _take_off(queue: deque[T], count: int) -> None:
    for _ in range(count):
        queue.popleft()


def _last_job() -> None:
    """The job that ends the sender: given at shutdown, after the others."""


class Sender:
    """The one thread that talks to the exporter: exports, replays and status reports all run
    here, one at a time. While it waits on Redis (without the GIL), the worker encodes the next
    batch; and under gevent or eventlet, where a connection works only in the thread that opened
    it, no other thread ever uses one. Started with the worker (or at its first job), so also
    after a fork; where no thread starts (at exit on Python 3.12.0 to 3.12.2) each job runs on the
    thread that gives it."""

    def __init__(self, name: str, export: Callable[[list[Any]], Outcome]) -> None:
        self._name = name
        self._export = export
        self._jobs: native_threads.Jobs[Callable[[], None]] = native_threads.Jobs()
        self._thread: native_threads.Worker | None = None
        self._report_failed = False
        self._stopping = False

    def send(self, batch: list[Any]) -> Sending:
        sending = Sending(batch, native_threads.Result())
        self._submit(partial(self._send, sending))
        return sending

    def report(self, report: StatusReport, status: dict[str, int], *, last_word: bool = False) -> None:
        self._submit(partial(self._report_safely, report, status, last_word))

    def refuse_calls(self) -> None:
        """What is queued from now on starts no Redis call, but for the last status report: at
        exit, after the flush's deadline, each call could wait out a whole Redis timeout (a
        Redis that accepts connections and never answers), and a batch refused here is spooled."""
        self._stopping = True

    def stop(self, timeout: float) -> None:
        """Within `timeout` seconds, refusing calls."""
        self.refuse_calls()
        thread = self._thread
        if thread is not None and thread.ident != native_threads.get_ident():
            self._jobs.put(_last_job)
            thread.join(timeout)

    def start(self) -> None:
        if self._thread is None:
            self._thread = native_threads.start(self._run)

    def _submit(self, job: Callable[[], None]) -> None:
        self.start()
        if self._thread is None:
            with _exporting():
                follow_a_late_select_patch()
                job()
            return
        self._jobs.put(job)

    def _run(self) -> None:
        with _exporting():
            while (job := self._jobs.get()) is not _last_job:
                follow_a_late_select_patch()
                job()

    def _send(self, sending: Sending) -> None:
        outcome: Outcome = False
        try:
            if not self._stopping:
                outcome = self._export(sending.batch)
        finally:  # the worker waits on this result: it must always come
            sending.result.set(outcome)

    def _report_safely(self, report: StatusReport, status: dict[str, int], last_word: bool) -> None:
        if self._stopping and not last_word:
            return
        try:
            report(status)
        except Exception as error:  # a status report must never stop the exports behind it
            if not self._report_failed:
                self._report_failed = True
                internal_logger.warning("%s: cannot report its status: %r", self._name, error)


class BatchQueue(Generic[T]):
    """A bounded queue with one worker thread that hands batches to `export`.

    With `encode`, batches of items are turned into JSON-able rows on the worker before `export`
    sees them, which is what lets a failed batch be spooled and replayed unchanged (same
    record ids, so readers can drop the duplicates an ambiguous failure may leave).
    """

    def __init__(
        self,
        name: str,
        export: Callable[[Sequence[Any]], bool],
        batch: BatchSettings,
        *,
        encode: Callable[[list[T]], list[Any]] | None = None,
        spool: Spool | None = None,
        report: StatusReport | None = None,
        interrupt: Callable[[], object] | None = None,
        why_failing: Callable[[], str] | None = None,
    ) -> None:
        self.name = name
        self._interrupt = interrupt
        self._why_failing = why_failing
        self.counters = Counters()
        self.spool = spool if encode is not None else None
        self._export = export
        self._encode = encode
        self._report = report
        # Counts kept in front of the queue (records sampling held back or let go), reported with its own.
        self.status_before: Callable[[], dict[str, int]] | None = None
        # Called as the worker starts: in each process, at its first record.
        self.on_start: Callable[[], object] | None = None
        self._batch = batch
        self._shutdown = False
        self._told_of_late_records = False
        self._reset()
        renew_in_child(self._reset)

    def _reset(self) -> None:
        """Fresh state; also what a forked child starts from (its parent's records are not its own)."""
        self._queue: deque[T] = deque()
        self._held: list[Any] | None = None  # a failed batch with nowhere else to go
        self._replaying: list[Any] | None = None  # what is left of the spool's head batch, when partly in
        self._refusing_all: str | None = None  # why Redis refused every record of the last refused batch
        self._overtaken: Sending | None = None  # a call the worker stopped waiting for, maybe still in flight
        self._wake = native_threads.Event()
        self._export_lock = native_threads.lock()
        self._deadline: float | None = None  # the current drain's, set under the export lock
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._next_report = 0.0
        self._thread: native_threads.Worker | None = None
        self._sender = Sender(self.name, self._export_safely)

    def put(self, item: T) -> None:
        if self._shutdown:  # first: no thread starts for a record that can no longer go out
            self._drop()
            return
        if self._thread is None:
            self.start()
            if self._thread is None and forks_strand_threads():
                _say_the_master_keeps_its_records()
        queue = self._queue
        if len(queue) >= self._batch.max_queue_size:
            self._drop()
            return
        queue.append(item)
        if len(queue) == self._batch.max_export_batch_size:  # wake once per full batch, not per record
            self._wake.set()

    @property
    def closed(self) -> bool:
        return self._shutdown

    def count_late(self) -> None:
        """An item that came after the close, lost: counted (`put`'s also say so, once)."""
        self.counters.dropped_at_shutdown += 1

    def _drop(self) -> None:
        if not self._shutdown:
            self.counters.dropped_queue_full += 1
            if self.counters.dropped_queue_full == 1:
                self._say_the_queue_is_full()
            return
        self.count_late()
        if not self._told_of_late_records:
            self._told_of_late_records = True
            internal_logger.warning(
                "%s: a record logged after tracestream closed at exit is lost: an atexit handler "
                "registered before configure() runs after tracestream's (register it after), as "
                "does what the garbage collector ends then",
                self.name,
            )

    def _say_the_queue_is_full(self) -> None:
        """Once a process; the count comes at exit, and in the status doctor reads."""
        setting = self._batch.queue_size_variable
        internal_logger.warning(
            "%s: the queue is full (%d records): new records are dropped until it drains, as "
            "the app logs faster than they reach Redis or the spool%s",
            self.name,
            self._batch.max_queue_size,
            f"; {setting} raises the limit" if setting else "",
        )

    def start(self) -> None:
        """Start the worker now rather than at the first record (there may be a spool to replay).
        Where no thread starts (at exit on Python 3.12.0 to 3.12.2) the records wait for the exit's
        flush, which sends them from its own thread."""
        follow_uwsgi_forks()
        if forks_strand_threads():  # its records wait in the queue, which its workers drop
            return
        with self._export_lock:
            if self._thread is None:
                self._thread = native_threads.start(self._run)
                if self._thread is None:
                    return
                # Now rather than at the first batch: an exit that comes first may start no thread,
                # and a send on the exit's own thread cannot be cut off at the flush's deadline.
                self._sender.start()
                if self.on_start is not None:
                    self.on_start()

    def _run(self) -> None:
        with _exporting():
            while True:
                self._wake.wait(self._batch.schedule_delay)
                if self._shutdown:  # shutdown has flushed; nothing may touch Redis from here on
                    return
                self._wake.clear()
                self._drain(deadline=None)
                report = self._report
                if report is not None and time.monotonic() >= self._next_report:
                    self._next_report = time.monotonic() + STATUS_INTERVAL
                    self._sender.report(report, self.status())

    def _drain(self, deadline: float | None, retry_failing: bool = True) -> bool:
        """Move everything towards Redis; True once the spool, held batch and queue are all in."""
        if not self._export_lock.acquire(timeout=-1 if deadline is None else remaining(deadline)):
            return False
        try:
            self._deadline = deadline
            delivering = self._replay(deadline, retry_failing)
            if self._held is not None:
                return False
            return self._drain_queue(deadline, delivering)
        finally:
            self._export_lock.release()

    def _outcome(self, sending: Sending) -> Outcome | Overtaken:
        """What became of a batch the sender has, waited for until the drain's deadline, which
        `stop_waiting` may bring forward while the worker waits. Past it the batch counts as not
        taken, and goes again later (Redis keeps each record once): the app thread flushing may
        hold a lock the sender waits for (logging's, in a signal handler), and must not wait for
        ever. A Redis that takes a call and answers late (frozen, or slower than the app logs)
        would have the queue drop records while the spool has room: the call is overtaken."""
        while (outcome := sending.result.get(self._until_deadline(_DEADLINE_CHECK))) is None:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                return False
            if self._filling_up():
                self._overtaken = sending
                return OVERTAKEN
        return outcome

    def _filling_up(self) -> bool:
        """The queue is half full and the spool can take it: the batch in flight goes there
        first, so what follows stays behind it, which the writer's mark relies on (a record stored
        ahead of an older one would have that one skipped as stored). Half, not a batch short of
        full: on a busy machine the worker may not run for tens of milliseconds, while the app
        goes on logging. An empty queue is never full: `spool replay`'s holds one record."""
        spool = self.spool
        return (
            spool is not None
            and self._held is None
            and len(self._queue) >= max(1, self._batch.max_queue_size // 2)
            and spool.size < spool.max_bytes
        )

    def _until_deadline(self, longest: float) -> float:
        deadline = self._deadline
        return longest if deadline is None else min(longest, remaining(deadline))

    def _drain_queue(self, deadline: float | None, delivering: bool) -> bool:
        """Batches in order; each is encoded while the one before it is with the exporter.

        After the first batch only full ones follow (a flush takes everything): chasing a
        trickle of records would pay a round trip per handful of them.
        """
        queue = self._queue
        size = self._batch.max_export_batch_size
        sending: Sending | None = None
        try:
            while queue and (sending is None or deadline is not None or len(queue) >= size):
                if deadline is not None and time.monotonic() > deadline:
                    return False
                items = _first(queue, size)
                settled = sending is not None
                batch = self._encode_batch(items)
                if sending is not None:
                    delivering, sending = self._settle(sending), None
                if settled and self._held is not None:  # the batch before could go nowhere: these wait
                    return False
                if delivering and batch:
                    sending = self._sender.send(batch)
                elif not self._set_aside(batch):
                    _take_off(queue, len(items))  # held
                    return False
                _take_off(queue, len(items))
            if sending is not None:
                delivering, sending = self._settle(sending), None
            return delivering
        finally:
            if sending is not None:  # an early return: the batch still gets its fate
                self._settle(sending)

    def _settle(self, sending: Sending) -> bool:
        """Wait for a batch sent ahead; what the exporter did not take is set aside (or held)."""
        left = self._settle_outcome(sending.batch, self._outcome(sending))
        if left is None:
            return True
        self._set_aside(left)
        return False

    def _replay(self, deadline: float | None, retry_failing: bool = True) -> bool:
        """Older batches first: the spool, then the held batch. False while Redis is failing."""
        if not self._overtaken_call_ended():
            return False
        if (deadline is None or not retry_failing) and time.monotonic() < self._next_attempt:
            return False  # backing off; a flush tries anyway, it has its own deadline
        spool = self.spool
        while spool:
            self._spill()
            rows = self._replaying if self._replaying is not None else spool.peek()
            self.counters.dropped_torn = spool.torn.rows
            if rows is None:
                break
            if deadline is not None and time.monotonic() > deadline:
                return False
            left = self._deliver(rows)
            self.counters.replayed += len(rows) - len(left or ())
            self._replaying = left
            if left is not None:
                return False
            spool.pop()
        if self._held is not None:
            self._held = self._deliver(self._held)
            if self._held is not None:
                return False
        return True

    def _overtaken_call_ended(self) -> bool:
        """Nothing is sent behind an overtaken call until it ends (a flush waits for it within
        its deadline). Its batch is in the spool: a failure counts, and backs off; a success
        counts when the spool's copy is replayed, which Redis then skips as stored."""
        overtaken = self._overtaken
        if overtaken is None:
            return True
        if self._deadline is not None:
            self._outcome(overtaken)
        outcome = overtaken.result.get(0)
        if outcome is None:
            return False
        self._overtaken = None
        if outcome is False:
            self._account([], False)
        return True

    def _spill(self) -> None:
        """While a backlog replays, full batches join its tail, so the queue never fills meanwhile."""
        queue = self._queue
        size = self._batch.max_export_batch_size
        while len(queue) >= size and self._held is None:
            self._set_aside(self._encode_batch(_first(queue, size)))
            _take_off(queue, size)

    def _encode_batch(self, items: list[T]) -> list[Any]:
        encode = self._encode
        if encode is None:
            return items
        try:
            return encode(items)
        except Exception:
            return self._encode_each(encode, items)

    def _encode_each(self, encode: Callable[[list[T]], list[Any]], items: list[T]) -> list[Any]:
        """The slow path: find the records that cannot be encoded, count and drop only those."""
        rows = []
        for item in items:
            try:
                rows += encode([item])
            except Exception as error:
                if not self.counters.dropped_invalid:
                    internal_logger.warning("%s: cannot encode a record, dropped: %r", self.name, error)
                self.counters.dropped_invalid += 1
        return rows

    def _deliver(self, batch: list[Any]) -> list[Any] | None:
        """Send `batch` now; None once every record is in Redis or dead-lettered, else those still waiting."""
        if not batch:
            return None
        return self._settle_outcome(batch, self._outcome(self._sender.send(batch)))

    def _settle_outcome(self, batch: list[Any], outcome: Outcome | Overtaken) -> list[Any] | None:
        if isinstance(outcome, Refused):
            return self._isolate(batch, outcome)
        self._account(batch, outcome)
        return None if outcome else batch

    def _isolate(self, batch: list[Any], refusal: Refused) -> list[Any] | None:
        """Halves of a refused batch are sent until each refused record stands alone; those are
        dead-lettered and the rest is in Redis. A transient failure on the way stops this: the
        records not settled yet are returned, in order.

        When Redis refused every record of the last batch for one reason (a key of the stream
        holds the wrong type), a batch refused for the same reason costs one probe, not a search.
        """
        if len(batch) > 1 and refusal.reason == self._refusing_all:
            probe = self._outcome(self._sender.send(batch[:1]))
            if probe == refusal:
                self._dead_letter(batch, refusal)
                return None
            self._refusing_all = None
            left = self._settle_outcome(batch[:1], probe)
            return batch if left is not None else self._deliver(batch[1:])
        pending, other_fate = deque([batch]), False
        outcome: Outcome | Overtaken = refusal
        while pending:
            piece = pending.popleft()
            if piece is not batch:
                outcome = self._outcome(self._sender.send(piece))
            if not isinstance(outcome, Refused):
                self._account(piece, outcome)
                if not outcome:
                    return [record for part in (piece, *pending) for record in part]
                other_fate = True
            elif len(piece) == 1:
                self._dead_letter(piece, outcome)
                other_fate = other_fate or outcome != refusal
            else:
                pending.extendleft(reversed(_halves(piece)))
        self._refusing_all = None if other_fate else refusal.reason
        return None

    def _dead_letter(self, records: list[Any], refusal: Refused) -> None:
        """Refused records go to the spool's dead-letter file, or are counted as dropped."""
        refused = self.counters.refused
        first = refusal.code not in refused
        refused[refusal.code] = refused.get(refusal.code, 0) + len(records)
        kept = self.spool is not None and self.spool.dead_letter(records, refusal.reason)
        if kept:
            self.counters.dead_lettered += len(records)
        else:
            self.counters.dropped_refused += len(records)
        if first:
            fate = "kept in the spool's dead-letter file" if kept else "dropped"
            what = "Redis refused a record" if refusal.by_redis else "sending a record failed in this process"
            internal_logger.warning("%s: %s (%s); %s", self.name, what, refusal.reason, fate)

    def _export_safely(self, batch: list[Any]) -> Outcome:
        try:
            return self._export(batch)
        except Exception as error:  # an exporter bug must not kill the worker
            if is_transient(error):
                internal_logger.warning("%s exporter raised %r", self.name, error)
                return False
            return Refused(error_code(error), describe(error), is_reply(error))

    def _account(self, batch: list[Any], outcome: bool | Overtaken) -> None:
        if outcome is True:
            self.counters.exported += len(batch)
            self._backoff = 0.0
        elif outcome is False:
            self.counters.failed_attempts += 1
            self._backoff = min(_MAX_BACKOFF, max(0.1, self._backoff * 2))
            self._next_attempt = time.monotonic() + self._backoff

    def _set_aside(self, batch: list[Any]) -> bool:
        """A batch Redis did not take goes to the spool; if it cannot, it is held (and draining stops)."""
        if not batch:
            return True
        if self.spool is not None and self.spool.append(batch):
            self.counters.spooled += len(batch)
            return True
        self._held = batch
        return False

    def wake(self) -> None:
        """Have the worker drain now, without waiting for it."""
        self._wake.set()

    def flush(self, timeout: float, *, retry_failing: bool = True) -> bool:
        """Export everything queued so far, from the caller's thread, within `timeout` seconds.

        False if Redis did not take it all in time; when Redis is failing this returns as
        soon as every record is at least in the spool, rather than waiting out the timeout.
        Without `retry_failing`, a Redis that is failing is not tried again before its backoff
        ends (see `secure`).
        """
        if self._shutdown or forks_strand_threads():  # nothing may be sent from here
            return self._pending() == 0
        deadline = time.monotonic() + timeout
        with _exporting():
            while not self._drain(deadline, retry_failing):
                if (
                    not retry_failing
                    or time.monotonic() > deadline
                    or (self.spool is not None and self._pending() == 0)
                ):
                    return False
                time.sleep(min(0.05, remaining(deadline)))
            return True

    def secure(self, timeout: float) -> bool:
        """Get what is in memory out of it within `timeout`: into Redis, or straight into the
        spool while Redis is failing, for a caller that must not wait on a failing Redis."""
        return self.flush(timeout, retry_failing=False)

    def stop_waiting(self) -> None:
        """From a signal handler too: no Redis call starts from here, and no thread waits any
        longer for one in flight; what it sent counts as not taken, and goes to the spool."""
        self._sender.refuse_calls()
        self._next_attempt = math.inf  # as though backing off: nothing is tried again
        self._deadline = 0.0

    def spool_without_waiting(self) -> None:
        """After `stop_waiting`: what memory holds goes to the spool, the batch in flight too."""
        self.secure(_JOIN_TIMEOUT)

    def close_without_waiting(self) -> None:
        """After `spool_without_waiting`: the queue shuts down. The sender is seen out even where
        the interrupted shutdown had not got to it: its call in flight ends within its timeout."""
        self.shutdown(0.0, report_status=False, tell_left=False)
        self._sender.stop(_JOIN_TIMEOUT)

    def shutdown(self, timeout: float, *, report_status: bool = True, tell_left: bool = True) -> bool:
        """Flush within `timeout`, then stop the worker. The last status report goes out only
        where this flush and, with `report_status`, the caller's others took everything: with
        Redis not answering, it would wait out a Redis timeout more. With `tell_left`, a line says
        what stays in the spool; a caller closing several queues says it once for them all.

        `interrupt`, given for another exporter, is that exporter's own shutdown. An export may
        block inside it (OTLP's retries while its collector is down) past the timeout: it then
        runs at the timeout, which ends that export, or else once the flush is done; once
        either way.
        """
        if self._shutdown:  # at exit both our hook and the SDK's providers get here
            return self._pending() == 0
        interrupt = _at_the_latest(timeout, self._interrupt) if self._interrupt is not None else None
        flushed = self.flush(timeout)
        self._shutdown = True
        self._sender.refuse_calls()  # the worker's drain and the status reports it queued
        self._wake.set()
        if interrupt is not None:
            interrupt()
        # At exit the interpreter freezes daemon threads where they stand: one frozen inside
        # redis-py would hold its connection pool's lock, and a client's __del__ would then
        # wait for it forever. So the worker (it may be mid-drain) and then the sender (it may
        # still have a batch the flush stopped waiting for) are seen out before we return.
        worker = self._thread
        if worker is not None and worker.ident != native_threads.get_ident():
            worker.join(_JOIN_TIMEOUT)
        lost = self._pending()
        if lost:
            self.counters.dropped_at_shutdown += lost
            records = "1 record" if lost == 1 else f"{lost} records"
            internal_logger.warning("%s: %s not exported or spooled at shutdown", self.name, records)
        if full := self.counters.dropped_queue_full:
            internal_logger.warning("%s: %d records were dropped while the queue was full", self.name, full)
        # The last word doctor reads, from a process that exported: a forked child that wrote
        # nothing (a job queue's work horse) would connect only to say so, 16 ms a fork.
        if self._report is not None and flushed and report_status and self._thread is not None:
            self._sender.report(self._report, self.status(), last_word=True)
        self._sender.stop(_JOIN_TIMEOUT)
        if tell_left and (left := self.left_in_spool()) is not None:
            tell_left_in_spool([left])
        return flushed

    def left_in_spool(self) -> LeftInSpool | None:
        """What waits in the spool for Redis to take it; None when nothing does."""
        if self.spool is None or not (waiting := self.spool.rows_waiting()):
            return None
        why = self._why_failing() if self._why_failing is not None else ""
        return LeftInSpool(self.spool.destination, waiting, why)

    def _pending(self) -> int:
        """Records only in memory: queued or held."""
        return len(self._queue) + len(self._held or ())

    def status(self) -> dict[str, int]:
        """Counters and backlog, as `tracestream doctor` and the metrics show them."""
        spool = self.spool
        before = self.status_before
        return {
            **self.counters.as_dict(),
            "queued": self._pending(),
            "spool_bytes": spool.size if spool is not None else 0,
            **(before() if before is not None else {}),
        }

    def __len__(self) -> int:
        return len(self._queue)


@dataclass(frozen=True)
class LeftInSpool:
    """Records a queue leaves in its spool, and why Redis did not take them ("" when unknown)."""

    destination: Destination
    count: int
    why: str


def tell_left_in_spool(left: Sequence[LeftInSpool]) -> None:
    """One line per stream and Redis: how many records wait, why, and what sends them."""
    by_stream: dict[tuple[str, str], list[LeftInSpool]] = {}
    for one in left:
        by_stream.setdefault((one.destination.server_url, one.destination.stream_name), []).append(one)
    for group in by_stream.values():
        destination = group[0].destination
        waiting = sum(one.count for one in group)
        why = next((one.why for one in group if one.why), "")
        replay = replay_command(destination)
        internal_logger.warning(
            "%s in the spool for %s%s: the next process writing there sends %s%s",
            "1 record waits" if waiting == 1 else f"{waiting} records wait",
            destination.describe(_each_signal(group)),
            f", which failed: {why}" if why else "",
            "it" if waiting == 1 else "them",
            f", or `{replay}`" if replay else "",
        )


def _each_signal(group: Sequence[LeftInSpool]) -> str:
    """How many records of each signal, where there are several; "" for one."""
    if len(group) == 1:
        return ""
    counts = []
    for one in group:
        noun = "span" if one.destination.is_spans else "log record"
        counts.append(f"{one.count} {noun}{'' if one.count == 1 else 's'}")
    return ", ".join(counts)


@contextmanager
def _exporting() -> Iterator[None]:
    """What runs inside is tracestream's own export: no instrumentation traces it (an HTTP
    client under an OTLP exporter), and what redis-py logs is ours, not the app's."""
    token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    writing = writing_to_redis.set(True)
    try:
        yield
    finally:
        writing_to_redis.reset(writing)
        detach(token)


@cache
def _say_the_master_keeps_its_records() -> None:
    internal_logger.warning(
        "records made in uWSGI's master are not sent: it forks its workers without Python's fork "
        "hooks, and one forked while an export thread ran there would hang; run uWSGI with "
        "--py-call-uwsgi-fork-hooks"
    )


def _at_the_latest(timeout: float, action: Callable[[], object]) -> Callable[[], None]:
    """Runs `action` once: after `timeout` seconds on a thread of its own, or sooner by a call;
    only by the call where no thread starts (at exit on Python 3.12.0 to 3.12.2)."""
    first = native_threads.lock()
    called = native_threads.Event()

    def run() -> None:
        called.set()
        if first.acquire(False):
            action()

    def run_when_due() -> None:
        if not called.wait(timeout):
            run()

    native_threads.start(run_when_due)
    return run


def _halves(batch: list[Any]) -> tuple[list[Any], list[Any]]:
    middle = len(batch) // 2
    return batch[:middle], batch[middle:]


def remaining(deadline: float) -> float:
    """Seconds left until `deadline` (of `time.monotonic()`), never below zero."""
    return max(0.0, deadline - time.monotonic())
