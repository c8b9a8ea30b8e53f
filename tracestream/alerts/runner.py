"""`alerts run`: rules evaluated as records arrive, through a consumer group; and the backtest.

Each runner reads records from the group (XREADGROUP with a short block), matches them
(matching.py), and adds their counts to Redis and acknowledges them in one step; a thread of its
own evaluates every rule against the shared counts each `tick`, so reading never waits on an
evaluation's round trips. Runners share the reading; evaluation is idempotent,
and a state change is a compare-and-set, so each notification is decided once however many
runners there are.
Windows use the records' own timestamps and the clock for "now", so absence and resolving
need no record to arrive. A restarted runner resumes from the group's position; records a
dead runner read but never counted are claimed after `claim_idle`.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from tracestream.alerts.delivery import Deliverer, DeliverySettings, claim_idle, read_group, unparsed_reads
from tracestream.alerts.evaluate import RuleState, Window, carried_over, decide, notification, reading
from tracestream.alerts.issues import REGRESSED, issue_step
from tracestream.alerts.matching import Batch, Matcher, Seen
from tracestream.alerts.rules import Rule, RuleSet, counted
from tracestream.alerts.store import (
    AlertKeys,
    Loaded,
    MemoryStore,
    RedisStore,
    ShardCounter,
    Store,
    home_stream,
)
from tracestream.connection import (
    CLUSTER_CHANGES,
    CLUSTER_ERRORS,
    Client,
    Tls,
    node_for,
    open_client,
    refresh_topology,
    reply_text,
)
from tracestream.error_issues import ErrorIssue, get_issue, list_issues
from tracestream.forwarder import default_consumer
from tracestream.query import after, parse_stream_id
from tracestream.settings import shown_url
from tracestream.shards import POLL_INTERVAL, SHARD_REFRESH_S, shards

DEFAULT_GROUP = "tracestream-alerts"


@dataclass(frozen=True)
class RunSettings:
    redis_url: str
    stream: str
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=default_consumer)
    tick: float = 0.25
    cluster: bool = False
    claim_idle: float = 30.0
    batch_size: int = 5000
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    tls: Tls | None = None


# Error issues last seen at or after a time (ms), and these fingerprints whenever last seen.
Issues = Callable[[int, Collection[str]], Sequence[ErrorIssue]]
_ISSUE_OVERLAP_MS = 60_000  # each listing of issues reaches back this far over the last one


class Evaluator:
    """Every rule, once, at one moment. `issues` lists error issues, for new_issue rules; `report`
    hears that Redis lost the rules' states."""

    def __init__(
        self,
        rules: RuleSet,
        store: Store,
        issues: Issues | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.rules = rules
        self.store = store
        self._issues = issues
        self._report = report
        self._issues_since: int | None = None
        self._watch_issues = any(rule.kind == "new_issue" for rule in rules.rules)
        # Each rule's state as this evaluator last saw or left it: what survives Redis losing it.
        self._seen: dict[str, RuleState] = {}

    def evaluate(self, now_ms: int) -> None:
        store = self.store  # `AlertRunner._discover` may replace it meanwhile
        values: dict[str, float] = {}
        estimated: set[str] = set()
        lost: list[str] = []
        kept_firing: list[str] = []
        loaded = store.load(self.rules.rules, now_ms)
        issues = self._recent_issues(loaded, now_ms)
        for rule, found in zip(self.rules.rules, loaded, strict=True):
            state = found.state
            seen = self._seen.get(rule.name)
            if seen is not None and seen.armed_ms != state.armed_ms:  # made afresh: Redis lost it
                lost.append(rule.name)
                kept = self._carry_over(store, rule, seen, state)
                if kept is None:  # another runner changed the fresh state first: read again next tick
                    self._seen[rule.name] = state
                    continue
                if kept.status == "firing":
                    kept_firing.append(rule.name)
                state = kept
            self._seen[rule.name], values[rule.name], is_estimate = self._step(
                store, rule, state, found.window, issues, now_ms
            )
            if is_estimate:
                estimated.add(rule.name)
        if lost:
            store.describe(self.rules.rules, now_ms)  # for `alerts status` and the console, lost too
            if self._report is not None:
                self._report(_state_lost(lost, kept_firing))
        store.evaluated(values, estimated, now_ms)

    def _carry_over(self, store: Store, rule: Rule, seen: RuleState, fresh: RuleState) -> RuleState | None:
        """The fresh state, with what `carried_over` keeps of the lost one stored in it; None when
        another runner changed it first."""
        step = carried_over(seen, fresh)
        if step is None:
            return fresh
        return fresh.after(step) if store.apply(rule, fresh, step, None) else None

    def _step(
        self,
        store: Store,
        rule: Rule,
        state: RuleState,
        window: Window,
        issues: Sequence[ErrorIssue],
        now_ms: int,
    ) -> tuple[RuleState, float, bool]:
        """Decide one rule and store its change: its state after, its value, whether that is an estimate."""
        value: float
        if rule.kind == "new_issue":
            step, payload, value = issue_step(self.rules, rule, state, issues, now_ms)
            is_estimate = False
        else:
            now = reading(rule, window, state, now_ms)
            value, is_estimate = now.value, now.estimated
            step = decide(rule, state, now, now_ms)
            payload = (
                notification(self.rules, rule, step, state, now, store.samples(rule), now_ms)
                if step is not None and step.notify
                else None
            )
        if step is None or not store.apply(rule, state, step, payload):
            return state, value, is_estimate
        return state.after(step), value, is_estimate

    def _recent_issues(self, loaded: Sequence[Loaded], now_ms: int) -> Sequence[ErrorIssue]:
        """Issues seen since the last listing (with some overlap); the first listing reaches back to
        when the rules were armed, so a restarted runner tells what happened while it was down."""
        if not self._watch_issues or self._issues is None:
            return ()
        watching = [
            found.state
            for rule, found in zip(self.rules.rules, loaded, strict=True)
            if rule.kind == "new_issue"
        ]
        since = self._issues_since
        if since is None:
            since = min(state.armed_ms for state in watching)
        self._issues_since = now_ms - _ISSUE_OVERLAP_MS
        # A regression told of is watched until it is resolved, however long ago it was last seen,
        # so that its next regression is news again.
        regressed = {fp for state in watching for fp, how in state.issues.items() if how == REGRESSED}
        return self._issues(since, regressed)


def _state_lost(lost: Sequence[str], kept_firing: Sequence[str]) -> str:
    """One line for the rules whose state Redis lost, naming those that stay firing."""
    firing = (
        f"still firing until they resolve: {', '.join(kept_firing)}" if kept_firing else "none was firing"
    )
    return (
        f"Redis has lost the state of {counted(len(lost), 'rule')} (restarted without persistence, or "
        "keys deleted or evicted): counts and notifications not yet delivered are gone, and rules count "
        f"again from now; {firing}"
    )


class AlertRunner:
    """Reads, counts, evaluates and delivers until `stop()`."""

    def __init__(self, rules: RuleSet, settings: RunSettings, report: Callable[[str], None] = print) -> None:
        self.rules = rules
        self.settings = settings
        self._report = report
        self._stop = threading.Event()
        self._failure: Exception | None = None  # what stopped the evaluation thread, raised by `run`
        timeout = max(5.0, settings.tick + 5.0)
        self._client = open_client(
            settings.redis_url, timeout, cluster=settings.cluster, decode=True, tls=settings.tls
        )
        home = home_stream(settings.stream, settings.cluster)
        self._home_keys = AlertKeys(home)
        self._counters: list[ShardCounter] = []
        home_client = node_for(self._client, home)
        self._matcher = Matcher(rules.rules)
        self._evaluator = Evaluator(
            rules,
            RedisStore(home_client, self._home_keys, []),
            self._issues,
            report,
        )
        self._deliverer = Deliverer(
            home_client, self._home_keys, rules.targets, settings.consumer, settings.delivery, report
        )

    def stop(self) -> None:
        self._stop.set()

    def _issues(self, since_ms: int, fingerprints: Collection[str]) -> list[ErrorIssue]:
        stream = self.settings.stream
        found = {issue.fingerprint: issue for issue in list_issues(self._client, stream, since_ms=since_ms)}
        for fingerprint in set(fingerprints) - set(found):
            issue = get_issue(self._client, stream, fingerprint)
            if issue is not None:
                found[fingerprint] = issue
        return list(found.values())

    def run(self) -> None:
        """Read and count on this thread; evaluate and deliver on one thread each, so reading never
        waits on an evaluation's round trips or a slow webhook."""
        settings = self.settings
        failing = False
        last_claim = last_discovery = 0.0
        helpers: list[threading.Thread] = []
        while not self._stop.is_set() and self._failure is None:
            try:
                if not helpers or time.monotonic() - last_discovery >= SHARD_REFRESH_S:
                    last_discovery = time.monotonic()
                    self._discover(announce=not helpers)
                if not helpers:
                    helpers = [
                        _thread(self._deliverer.run, self._stop, "tracestream-alerts-delivery"),
                        _thread(self._evaluate_every_tick, self._stop, "tracestream-alerts-evaluation"),
                    ]
                if time.monotonic() - last_claim >= settings.claim_idle / 2:
                    last_claim = time.monotonic()
                    for counter in self._counters:
                        self._count(counter, self._claimed(counter))
                self._read_and_count()
                if failing:
                    failing = False
                    self._report("Redis is reachable again")
            except CLUSTER_ERRORS as error:
                if "NOGROUP" in str(error):
                    self._discover(announce=False)  # a stream was deleted: make its group again
                    continue
                if not _transient(error):
                    self._stop.set()
                    raise
                refresh_topology(self._client)
                last_discovery = 0.0  # a failover moves shards: find their servers again
                if not failing:
                    failing = True
                    self._report(f"cannot reach Redis: {error}; retrying")
                self._stop.wait(1.0)
        self._stop.set()
        for helper in helpers:
            helper.join()
        if self._failure is not None:
            raise self._failure
        self._report("stopped")

    def _evaluate_every_tick(self, stop: threading.Event) -> None:
        """Every rule each `tick`, until `stop`. Redis out of reach is retried at the next tick;
        any other failure stops the runner, which raises it."""
        failing = False
        while not stop.is_set():
            next_evaluation = time.monotonic() + self.settings.tick
            try:
                self._evaluator.evaluate(int(time.time() * 1000))
                failing = False
            except Exception as error:
                if not isinstance(error, CLUSTER_ERRORS) or not _transient(error):
                    self._failure = error
                    return
                if not failing:
                    failing = True
                    self._report(f"cannot evaluate rules, Redis: {error}; retrying")
            stop.wait(max(0.0, next_evaluation - time.monotonic()))

    def _discover(self, announce: bool) -> None:
        """The shards to read, each with its group, and the server holding the rules' states. A group
        made at start starts at its stream's end: alerts are about what happens from now on."""
        counters = []
        # A shard that appears while running (a new service on a cluster) is read from its start.
        start = "$" if announce else "0"
        for shard in shards(self._client, self.settings.stream):
            unparsed_reads(shard.client)
            try:
                shard.client.xgroup_create(shard.keys.logs, self.settings.group, id=start, mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
            counters.append(
                ShardCounter(shard.client, shard.keys.logs, self.rules.rules, self.settings.group)
            )
        home = node_for(self._client, self._home_keys.prefix)
        self._counters = counters
        store = self._evaluator.store = RedisStore(home, self._home_keys, counters)
        if announce:
            store.describe(self.rules.rules, int(time.time() * 1000))
        self._deliverer.client = home
        self._deliverer.ensure_group()
        if announce:
            names = ", ".join(f"{t.name} ({t.shown_url})" for t in self.rules.targets.values())
            where = (
                f"{len(counters)} shard(s) of {self.settings.stream} at {shown_url(self.settings.redis_url)}"
            )
            self._report(
                f"evaluating {counted(len(self.rules.rules), 'rule')} on {where} as "
                f"{self.settings.group}/{self.settings.consumer}; notifying {names}"
            )

    def _read_and_count(self) -> None:
        """One shard blocks in XREADGROUP; several (a cluster) are polled until one has records."""
        settings = self.settings
        block_ms = int(settings.tick * 1000) if len(self._counters) == 1 else None
        got = 0
        for counter in self._counters:
            entries = read_group(
                counter.client,
                settings.group,
                settings.consumer,
                counter.records,
                settings.batch_size,
                block_ms,
            )
            got += len(entries)
            self._count(counter, entries)
        if block_ms is None and not got:
            self._stop.wait(POLL_INTERVAL if self._counters else settings.tick)

    def _claimed(self, counter: ShardCounter) -> list[Any]:
        """Records a dead runner read but never counted."""
        settings = self.settings
        return claim_idle(
            counter.client,
            settings.group,
            settings.consumer,
            counter.records,
            settings.batch_size,
            settings.claim_idle,
        )

    def _count(self, counter: ShardCounter, entries: Sequence[Any]) -> None:
        if not entries:
            return
        batch = Batch()
        read_ms = int(time.time() * 1000)
        add = self._matcher.add
        for entry_id, fields in entries:
            add(Seen(entry_id, fields), batch, read_ms)
        counter.add(batch)


def _thread(target: Callable[[threading.Event], None], stop: threading.Event, name: str) -> threading.Thread:
    thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
    thread.start()
    return thread


def _transient(error: Exception) -> bool:
    """Redis out of reach, or a cluster moving slots: retried. Credentials refused, or any other
    reply, is a bug or a misconfiguration, and stops the runner."""
    if isinstance(error, redis.AuthenticationError):
        return False
    return not isinstance(error, redis.ResponseError) or isinstance(error, CLUSTER_CHANGES)


# ---------------------------------------------------------------------------
# backtest


class Replay:
    """Rules run over records in time order, the clock moving in `step_ms` steps: state in memory.

    Each step counts the records timestamped before it, then evaluates every rule.
    """

    def __init__(
        self, rules: RuleSet, start_ms: int, step_ms: int = 1000, issues: Sequence[ErrorIssue] = ()
    ) -> None:
        self.store = MemoryStore()
        self.clock = start_ms
        self._step_ms = step_ms
        self._matcher = Matcher(rules.rules)
        self._evaluator = Evaluator(rules, self.store, lambda _since, _watched: self._issues_by_now(issues))
        self._batch = Batch()

    def feed(self, records: Iterable[Seen]) -> None:
        for record in records:
            self.advance(record.at_ms)
            self._matcher.add(record, self._batch)

    def _issues_by_now(self, issues: Sequence[ErrorIssue]) -> list[ErrorIssue]:
        """Issues as they were at the clock, as far as the stored ones tell: first seen by then, and
        new (when an issue regressed is not kept, so a backtest shows no regression)."""
        return [
            replace(issue, status="open", regression=False)
            for issue in issues
            if issue.first_seen_ms <= self.clock
        ]

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
    watched = any(rule.kind == "new_issue" for rule in rules.rules)
    issues = list_issues(client, stream, since_ms=since_ms) if watched else []
    replay = Replay(rules, since_ms, step_ms, issues)
    replay.feed(_stored_records(client, stream, since_ms, until_ms))
    replay.advance(until_ms)
    return [dict(payload) for payload in replay.store.notifications]


def _stored_records(client: Client, stream: str, since_ms: int, until_ms: int) -> Iterator[Seen]:
    """Every shard's records in the range, merged oldest first by stream id."""

    def one_shard(shard_client: redis.Redis, key: str) -> Iterator[Seen]:
        low: str | None = f"{since_ms}-0"
        while low is not None:
            page: Any = shard_client.xrange(key, low, f"{until_ms}-{2**64 - 1}", count=5000)
            for entry_id, fields in page:
                yield Seen(reply_text(entry_id), fields)
            low = after(reply_text(page[-1][0])) if len(page) == 5000 else None

    readers = [one_shard(shard.client, shard.keys.logs) for shard in shards(client, stream)]
    yield from heapq.merge(*readers, key=lambda record: parse_stream_id(record.stream_id))
