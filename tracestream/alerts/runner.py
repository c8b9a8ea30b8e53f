"""`alerts run`: rules evaluated as records arrive, through a consumer group; and the backtest.

Each runner reads records from the group (XREADGROUP with a short block), adds their counts to
Redis and acknowledges them in one transaction, then evaluates every rule against the shared
counts each `tick`. Runners share the reading; evaluation is idempotent, and a state change is
a compare-and-set, so each notification is decided once however many runners there are.
Windows use the records' own timestamps and the clock for "now", so absence and resolving
need no record to arrive. A restarted runner resumes from the group's position; records a
dead runner read but never counted are claimed after `claim_idle`.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from tracestream.alerts.delivery import Deliverer, DeliverySettings, claim_idle, read_group
from tracestream.alerts.evaluate import Batch, Matcher, decide, notification, reading, record_ms
from tracestream.alerts.rules import RuleSet
from tracestream.alerts.store import AlertKeys, MemoryStore, RedisStore, Store
from tracestream.connection import CLUSTER_ERRORS, Client, connect, reply_text
from tracestream.forwarder import default_consumer
from tracestream.query import after, parse_stream_id
from tracestream.schema import LogEntry, StreamKeys
from tracestream.shards import shards

DEFAULT_GROUP = "tracestream-alerts"


@dataclass(frozen=True)
class RunSettings:
    redis_url: str
    stream: str
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=default_consumer)
    tick: float = 0.25
    claim_idle: float = 30.0
    batch_size: int = 2000
    delivery: DeliverySettings = field(default_factory=DeliverySettings)


class Evaluator:
    """Every rule, once, at one moment."""

    def __init__(self, rules: RuleSet, store: Store) -> None:
        self.rules = rules
        self.store = store

    def evaluate(self, now_ms: int) -> None:
        for rule, loaded in zip(self.rules.rules, self.store.load(self.rules.rules, now_ms), strict=True):
            now = reading(rule, loaded.window, loaded.state, now_ms)
            step = decide(rule, loaded.state, now, now_ms)
            if step is None:
                continue
            payload = (
                notification(self.rules, rule, step, loaded.state, now, loaded.samples, now_ms)
                if step.notify
                else None
            )
            self.store.apply(rule, loaded.state, step, payload)


class AlertRunner:
    """Reads, counts, evaluates and delivers until `stop()`."""

    def __init__(self, rules: RuleSet, settings: RunSettings, report: Callable[[str], None] = print) -> None:
        self.rules = rules
        self.settings = settings
        self._report = report
        self._stop = threading.Event()
        self._client = connect(settings.redis_url, timeout=max(5.0, settings.tick + 5.0), decode=True)
        self._records = StreamKeys(settings.stream).logs
        keys = AlertKeys(settings.stream)
        self._store = RedisStore(self._client, keys, rules.rules, self._records, settings.group)
        self._matcher = Matcher(rules.rules)
        self._evaluator = Evaluator(rules, self._store)
        self._deliverer = Deliverer(
            self._client, keys, rules.targets, settings.consumer, settings.delivery, report
        )

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        settings = self.settings
        failing = False
        last_claim = 0.0
        next_evaluation = 0.0
        sender: threading.Thread | None = None
        while not self._stop.is_set():
            try:
                if sender is None:
                    self._start()
                    sender = threading.Thread(
                        target=self._deliverer.run,
                        args=(self._stop,),
                        name="tracestream-alerts-delivery",
                        daemon=True,
                    )
                    sender.start()
                if time.monotonic() - last_claim >= settings.claim_idle / 2:
                    last_claim = time.monotonic()
                    self._count(self._claimed())
                self._count(self._read())
                if time.monotonic() >= next_evaluation:
                    next_evaluation = time.monotonic() + settings.tick
                    self._evaluator.evaluate(int(time.time() * 1000))
                if failing:
                    failing = False
                    self._report("Redis is reachable again")
            except CLUSTER_ERRORS as error:
                if "NOGROUP" in str(error):
                    self._start()  # the stream was deleted: make the group again
                    continue
                if isinstance(error, redis.ResponseError):
                    raise
                if not failing:
                    failing = True
                    self._report(f"cannot reach Redis: {error}; retrying")
                self._stop.wait(1.0)
        if sender is not None:
            sender.join()
        self._report("stopped")

    def _start(self) -> None:
        try:
            # A new group starts at the stream's end: alerts are about what happens from now on.
            self._client.xgroup_create(self._records, self.settings.group, id="$", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._deliverer.ensure_group()
        names = ", ".join(f"{t.name} ({t.shown_url})" for t in self.rules.targets.values())
        self._report(
            f"evaluating {len(self.rules.rules)} rules on {self._records} as "
            f"{self.settings.group}/{self.settings.consumer}; notifying {names}"
        )

    def _read(self) -> list[Any]:
        settings = self.settings
        block_ms = int(settings.tick * 1000)
        return read_group(
            self._client, settings.group, settings.consumer, self._records, settings.batch_size, block_ms
        )

    def _claimed(self) -> list[Any]:
        """Records a dead runner read but never counted."""
        settings = self.settings
        return claim_idle(
            self._client,
            settings.group,
            settings.consumer,
            self._records,
            settings.batch_size,
            settings.claim_idle,
        )

    def _count(self, entries: Sequence[Any]) -> None:
        if not entries:
            return
        batch = Batch()
        read_ms = int(time.time() * 1000)
        for entry_id, fields in entries:
            stream_id = reply_text(entry_id)
            fields.pop("resource", None)  # no rule looks at it: not worth decoding
            try:
                entry = LogEntry.from_fields(stream_id, fields)
            except ValueError as error:  # not written by tracestream: acknowledged, matched by no rule
                batch.stream_ids.append(stream_id)
                self._report(f"record {stream_id} skipped: {error}")
                continue
            self._matcher.add(entry, batch, read_ms)
        self._store.add(batch)


# ---------------------------------------------------------------------------
# backtest


class Replay:
    """Rules run over records in time order, the clock moving in `step_ms` steps: state in memory.

    Each step counts the records timestamped before it, then evaluates every rule.
    """

    def __init__(self, rules: RuleSet, start_ms: int, step_ms: int = 1000) -> None:
        self.store = MemoryStore()
        self.clock = start_ms
        self._step_ms = step_ms
        self._matcher = Matcher(rules.rules)
        self._evaluator = Evaluator(rules, self.store)
        self._batch = Batch()

    def feed(self, entries: Iterable[LogEntry]) -> None:
        for entry in entries:
            self.advance(record_ms(entry))
            self._matcher.add(entry, self._batch)

    def advance(self, until_ms: int) -> None:
        """Evaluate at every step up to `until_ms`."""
        while self.clock + self._step_ms <= until_ms:
            self.clock += self._step_ms
            self.store.add(self._batch)
            self._batch = Batch()
            self._evaluator.evaluate(self.clock)


def backtest(
    client: Client, stream: str, rules: RuleSet, since_ms: int, until_ms: int, step_ms: int = 1000
) -> list[dict[str, Any]]:
    """The notifications the rules would have sent over the stored records, oldest first; writes nothing."""
    replay = Replay(rules, since_ms, step_ms)
    replay.feed(_stored_records(client, stream, since_ms, until_ms))
    replay.advance(until_ms)
    return [dict(payload) for payload in replay.store.notifications]


def _stored_records(client: Client, stream: str, since_ms: int, until_ms: int) -> Iterator[LogEntry]:
    """Every shard's records in the range, merged oldest first by stream id."""

    def one_shard(shard_client: redis.Redis, key: str) -> Iterator[LogEntry]:
        low: str | None = f"{since_ms}-0"
        while low is not None:
            page: Any = shard_client.xrange(key, low, f"{until_ms}-{2**64 - 1}", count=5000)
            for entry_id, fields in page:
                yield LogEntry.from_fields(reply_text(entry_id), fields)
            low = after(reply_text(page[-1][0])) if len(page) == 5000 else None

    readers = [one_shard(shard.client, shard.keys.logs) for shard in shards(client, stream)]
    yield from heapq.merge(*readers, key=lambda entry: parse_stream_id(entry.stream_id))
