"""Where rule state lives: in Redis for `alerts run`, in memory for a backtest.

In Redis, a batch's counts and the acknowledgement of its records are one script call
(lua/alerts_count.lua), so a runner killed at any point has counted a record exactly once or not
at all (it is then read again). A latency rule keeps histograms of its durations (histogram.py),
so reading its window costs its bins, not its records. Counts and bins are sums of sample
weights (docs/sampling.md), kept with INCRBYFLOAT. A state change is a compare-and-set on
the rule's change counter in one script that also queues the notification: of several runners
deciding the same change, one wins, and the notification is queued exactly once, under the id
`<rule>:<armed_ms>:<change number>`: when the state was made names it, so the ids of a state Redis
lost and made again never repeat.
On a Redis Cluster, counts live next to each shard's records and states in one home slot
(`{<stream>}:alerts:...`); evaluation sums the shards' counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import redis

from tracestream.alerts.evaluate import RuleState, Step, Window
from tracestream.alerts.matching import MATCHED, SAMPLED, SAMPLES, TOTAL, Batch
from tracestream.alerts.rules import Rule
from tracestream.connection import reply_text
from tracestream.lua import script_source
from tracestream.schema import Keyspace

HISTORY_MAX = 10_000
# Buckets outlive their window by this much, for records that arrive a little late.
_BUCKET_GRACE_MS = 60_000


@dataclass(frozen=True)
class Loaded:
    """One rule as the store holds it now."""

    state: RuleState
    window: Window


class Store(Protocol):
    def load(self, rules: Sequence[Rule], now_ms: int) -> list[Loaded]: ...

    def samples(self, rule: Rule) -> list[dict[str, Any]]:
        """The newest matching records since the rule last resolved, newest first: read only when
        a notification needs them."""
        ...

    def evaluated(self, values: Mapping[str, float], estimated: Collection[str], now_ms: int) -> None:
        """Every rule's value at `now_ms`, and which are estimates: for `alerts status` and the console."""
        ...

    def apply(self, rule: Rule, state: RuleState, step: Step, payload: Mapping[str, Any] | None) -> bool:
        """Store `step` unless another evaluator changed the rule first; True when it was stored."""
        ...

    def describe(self, rules: Sequence[Rule], now_ms: int) -> None:
        """What each rule is, for readers that have no rule file; a rule seen for the first time is armed."""
        ...


@dataclass(frozen=True)
class AlertKeys:
    """Every key of the alerts of one stream."""

    stream: str

    @property
    def prefix(self) -> str:
        return f"{self.stream}:alerts"

    def bucket(self, rule: Rule, series: str, bucket: int) -> str:
        return f"{self.prefix}:b:{rule.name}:{rule.bucket_ms}:{series}:{bucket}"

    def histogram(self, rule: Rule, bucket: int) -> str:
        """A latency rule's durations in one bucket: histogram bin -> count (histogram.py)."""
        return f"{self.prefix}:h:{rule.name}:{rule.bucket_ms}:{bucket}"

    def samples(self, rule: Rule) -> str:
        return f"{self.prefix}:samples:{rule.name}"

    def matched(self, rule: Rule) -> str:
        return f"{self.prefix}:matched:{rule.name}"

    def sampled(self, rule: Rule) -> str:
        """Of the matches ever, how many were counted for a sample weight other than 1."""
        return f"{self.prefix}:sampled:{rule.name}"

    def state(self, rule_name: str) -> str:
        return f"{self.prefix}:state:{rule_name}"

    @property
    def outbox(self) -> str:
        """Notifications to deliver: one entry per firing and target, read through a consumer group."""
        return f"{self.prefix}:outbox"

    @property
    def history(self) -> str:
        """Every notification decided, newest last."""
        return f"{self.prefix}:history"

    @property
    def retry(self) -> str:
        """Deliveries waiting for their next attempt, scored by when it is due."""
        return f"{self.prefix}:retry"

    @property
    def deliveries(self) -> str:
        """Every delivery attempt and its outcome (`doctor` shows the failed ones)."""
        return f"{self.prefix}:deliveries"

    @property
    def rules(self) -> str:
        """Each rule's kind, condition and targets, as the newest runner to start read them."""
        return f"{self.prefix}:rules"

    @property
    def values(self) -> str:
        """Each rule's value at the last evaluation."""
        return f"{self.prefix}:values"

    @property
    def estimated(self) -> str:
        """Hash: rule -> 1 when its value at the last evaluation was an estimate, else 0."""
        return f"{self.prefix}:estimated"

    @property
    def evaluated(self) -> str:
        """Hash: `at_ms`, when any runner last evaluated the rules."""
        return f"{self.prefix}:evaluated"

    def sent(self, notification_id: str, target: str) -> str:
        return f"{self.prefix}:sent:{notification_id}:{target}"

    def stalled(self, rule_name: str, target: str) -> str:
        """The id of the notification of a rule to a target that waits for a retry: later ones
        of that rule to that target wait behind it (`waiting`), so a resolve never overtakes its
        firing."""
        return f"{self.prefix}:stalled:{_line(rule_name, target)}"

    def waiting(self, rule_name: str, target: str) -> str:
        """List: notifications of a rule to a target, in order, behind a stalled one."""
        return f"{self.prefix}:waiting:{_line(rule_name, target)}"


def _line(rule_name: str, target: str) -> str:
    """A rule and a target in one key part: JSON, so no name can pass for another pair."""
    return orjson.dumps([rule_name, target]).decode()


@dataclass(frozen=True)
class _WindowKeys:
    first: int  # the window's oldest bucket
    # its matched counts, a ratio's totals, the sampled-down counts, then matches and sampled-down ever
    counts: list[str]
    histograms: list[str]  # one per bucket, read by latency rules only


class ShardCounter:
    """One shard's counts, durations and samples, kept next to its records (one slot on a cluster),
    so `add` can acknowledge the records it counted in the same step."""

    def __init__(self, client: redis.Redis, records: str, rules: Sequence[Rule], group: str) -> None:
        self.client = client
        self.records = records
        self.keys = AlertKeys(records)
        self._rules = {rule.name: rule for rule in rules}
        self._group = group
        self._count = client.register_script(script_source("alerts_count"))
        self._histogram = client.register_script(script_source("alerts_histogram"))
        self._windows: dict[str, _WindowKeys] = {}

    def add(self, batch: Batch) -> None:
        """Counts, durations and samples, and the acknowledgement of the batch: one script call,
        however many rules and records, so the cost per record stays small."""
        if not batch.stream_ids:
            return
        keys: list[str] = [self.records]
        args: list[str | int | float | bytes] = [self._group, len(batch.stream_ids), *batch.stream_ids]
        for (name, series, bucket), count in batch.counts.items():
            rule = self._rules[name]
            keys.append(self.keys.bucket(rule, series, bucket))
            args += ("n", _bucket_ttl_ms(rule), 1, count)
        for (name, bucket), bins in batch.latency.items():
            rule = self._rules[name]
            keys.append(self.keys.histogram(rule, bucket))
            args += ("h", _bucket_ttl_ms(rule), 2 * len(bins), *(n for pair in bins.items() for n in pair))
        for name, samples in batch.samples.items():
            keys.append(self.keys.samples(self._rules[name]))
            args += ("l", SAMPLES, len(samples), *(record.sample_json() for record in samples))
        for name, weights in batch.matched.items():
            keys.append(self.keys.matched(self._rules[name]))
            args += ("n", 0, 1, weights)
        for name, count in batch.sampled.items():
            keys.append(self.keys.sampled(self._rules[name]))
            args += ("n", 0, 1, count)
        self._count(keys=keys, args=args)

    def load(self, rules: Sequence[Rule], now_ms: int) -> list[Window]:
        """Each rule's window: one MGET for every count, one script call per latency rule."""
        pipe = self.client.pipeline(transaction=False)
        keys: list[str] = []
        windows = [self._window_keys(rule, now_ms) for rule in rules]
        for rule, window in zip(rules, windows, strict=True):
            if rule.kind == "new_issue":
                continue  # no counts: the writer keeps the issues
            keys += window.counts
            if rule.kind == "latency":
                self._histogram(keys=window.histograms, client=pipe)
        pipe.mget(keys or [self.records])  # (new_issue rules only: nothing counted, a key of this slot)
        *histograms, counts = pipe.execute()
        numbers = iter([float(n or 0) for n in counts])
        replies = iter(histograms)
        loaded = []
        for rule, window in zip(rules, windows, strict=True):
            if rule.kind == "new_issue":
                loaded.append(Window())
                continue
            size = len(window.histograms)
            matched = [next(numbers) for _ in range(size)]
            totals = [next(numbers) for _ in range(size)] if rule.kind == "ratio" else []
            sampled = [next(numbers) for _ in range(size)]
            histogram: dict[int, float] = {}
            if rule.kind == "latency":
                flat = next(replies)
                histogram = {int(flat[i]): float(flat[i + 1]) for i in range(0, len(flat), 2)}
            matched_ever, sampled_ever = next(numbers), next(numbers)
            loaded.append(Window(matched, totals, sampled, histogram, matched_ever, sampled_ever))
        return loaded

    def _window_keys(self, rule: Rule, now_ms: int) -> _WindowKeys:
        """The keys of a rule's window, named again only when it slides a bucket."""
        buckets = rule.buckets(now_ms)
        known = self._windows.get(rule.name)
        if known is None or known.first != buckets.start:
            counts = [self.keys.bucket(rule, MATCHED, b) for b in buckets]
            if rule.kind == "ratio":
                counts += [self.keys.bucket(rule, TOTAL, b) for b in buckets]
            counts += [self.keys.bucket(rule, SAMPLED, b) for b in buckets]
            counts += [self.keys.matched(rule), self.keys.sampled(rule)]
            histograms = [self.keys.histogram(rule, b) for b in buckets]
            known = self._windows[rule.name] = _WindowKeys(buckets.start, counts, histograms)
        return known

    def samples(self, rule: Rule) -> list[dict[str, Any]]:
        return [orjson.loads(s) for s in self.client.lrange(self.keys.samples(rule), 0, SAMPLES - 1)]  # type: ignore[union-attr]

    def clear_samples(self, rule: Rule) -> None:
        self.client.delete(self.keys.samples(rule))


def _summed(histograms: Iterable[Mapping[int, float]]) -> dict[int, float]:
    """Latency bins added up, over shards or buckets."""
    total: defaultdict[int, float] = defaultdict(float)
    for histogram in histograms:
        for index, weights in histogram.items():
            total[index] += weights
    return total


def _bucket_ttl_ms(rule: Rule) -> int:
    """Buckets outlive their window a little, for records that arrive late."""
    return rule.window_ms + 2 * rule.bucket_ms + _BUCKET_GRACE_MS


class RedisStore:
    """Rule states, decided in one place (`home`), over the counts of every shard.

    On a single Redis, the home and the one shard are the same server and key prefix.
    """

    def __init__(self, home: redis.Redis, keys: AlertKeys, shards: Sequence[ShardCounter]) -> None:
        self.home = home
        self.keys = keys
        self.shards = shards
        self._apply = home.register_script(script_source("alerts_apply"))

    def load(self, rules: Sequence[Rule], now_ms: int) -> list[Loaded]:
        pipe = self.home.pipeline(transaction=False)
        for rule in rules:
            pipe.hgetall(self.keys.state(rule.name))
        states: list[dict[str, str]] = pipe.execute()
        unarmed = [index for index, state in enumerate(states) if "armed_ms" not in state]
        if unarmed:  # absence is judged from a rule's first evaluation by any runner
            for index in unarmed:
                pipe.hsetnx(self.keys.state(rules[index].name), "armed_ms", now_ms)
                pipe.hgetall(self.keys.state(rules[index].name))
            # Read again: another runner may have armed it first, and `armed_ms` names the state.
            armed = pipe.execute()[1::2]
            for index, state in zip(unarmed, armed, strict=True):
                states[index] = state
        per_shard = [shard.load(rules, now_ms) for shard in self.shards]
        loaded = []
        for index, state in enumerate(states):
            found = [shard[index] for shard in per_shard]
            window = Window(
                matched=[sum(counts) for counts in zip(*(w.matched for w in found), strict=True)],
                totals=[sum(counts) for counts in zip(*(w.totals for w in found), strict=True)],
                sampled=[sum(counts) for counts in zip(*(w.sampled for w in found), strict=True)],
                histogram=_summed(w.histogram for w in found),
                matched_ever=sum(w.matched_ever for w in found),
                sampled_ever=sum(w.sampled_ever for w in found),
            )
            loaded.append(Loaded(RuleState.of(state, now_ms), window))
        return loaded

    def samples(self, rule: Rule) -> list[dict[str, Any]]:
        found = [s for shard in self.shards for s in shard.samples(rule)]
        return sorted(found, key=lambda s: s["timestamp"], reverse=True)[:SAMPLES]

    def evaluated(self, values: Mapping[str, float], estimated: Collection[str], now_ms: int) -> None:
        pipe = self.home.pipeline(transaction=False)
        pipe.hset(self.keys.values, items=[item for pair in values.items() for item in pair])
        pipe.hset(self.keys.estimated, mapping={name: int(name in estimated) for name in values})
        pipe.hset(self.keys.evaluated, "at_ms", now_ms)
        pipe.execute()

    def describe(self, rules: Sequence[Rule], now_ms: int) -> None:
        """What each rule is, for readers that have no rule file (the console); and a rule seen for
        the first time is armed now, as the runner starts, so what happens from then on counts."""
        described = {
            rule.name: orjson.dumps({"kind": rule.kind, "condition": rule.describe(), "notify": rule.notify})
            for rule in rules
        }
        pipe = self.home.pipeline(transaction=False)
        pipe.hset(self.keys.rules, mapping=described)  # type: ignore[arg-type]
        for rule in rules:
            pipe.hsetnx(self.keys.state(rule.name), "armed_ms", now_ms)
        pipe.execute()

    def apply(self, rule: Rule, state: RuleState, step: Step, payload: Mapping[str, Any] | None) -> bool:
        pairs = [item for pair in step.fields.items() for item in pair]
        text = orjson.dumps(payload).decode() if payload is not None else ""
        targets = rule.notify if payload is not None else ()
        args: list[str | int] = [state.seq, HISTORY_MAX, text, len(step.fields), *pairs, *targets]
        applied = bool(
            self._apply(keys=[self.keys.state(rule.name), self.keys.outbox, self.keys.history], args=args)
        )
        if applied and step.notify == "resolved":
            for shard in self.shards:  # the next firing shows its own records, not this one's
                shard.clear_samples(rule)
        return applied


def home_stream(stream: str, cluster: bool) -> str:
    """The name rule states are kept under: the stream's own, or on a cluster its hash-tagged
    unsharded name, so they stay in one slot whatever shards the records are in."""
    return Keyspace(stream, cluster=cluster).shard("").logs


def rule_states(client: redis.Redis, stream: str) -> dict[str, dict[str, str]]:
    """Every rule's stored state, by rule name: for `alerts status`. `stream`: see `home_stream`.
    The rules are those runners described (each one's state is made as it is described), read
    as the console reads them: a SCAN for the state keys is no right of the read-only user."""
    keys = AlertKeys(stream)
    names = sorted(reply_text(name) for name in client.hgetall(keys.rules))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.state(name))
    states = pipe.execute()
    return {
        name: {reply_text(k): reply_text(v) for k, v in state.items()}
        for name, state in zip(names, states, strict=True)
        if state
    }


@dataclass
class MemoryStore:
    """The same, in this process: a backtest replays stored records without writing to Redis."""

    counts: defaultdict[tuple[str, str, int], float] = field(default_factory=lambda: defaultdict(float))
    latency: defaultdict[tuple[str, int], dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    kept_samples: defaultdict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    matched: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    sampled: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    states: dict[str, dict[str, str]] = field(default_factory=dict)
    notifications: list[Mapping[str, Any]] = field(default_factory=list)

    def add(self, batch: Batch) -> None:
        for key, count in batch.counts.items():
            self.counts[key] += count
        for rule_bucket, bins in batch.latency.items():
            self.latency[rule_bucket] = _summed((self.latency[rule_bucket], bins))
        for name, samples in batch.samples.items():
            newest = [record.sample() for record in reversed(samples)]
            self.kept_samples[name] = (newest + self.kept_samples[name])[:SAMPLES]
        for name, weights in batch.matched.items():
            self.matched[name] += weights
        for name, count in batch.sampled.items():
            self.sampled[name] += count

    def load(self, rules: Sequence[Rule], now_ms: int) -> list[Loaded]:
        loaded = []
        for rule in rules:
            buckets = rule.buckets(now_ms)
            latency = buckets if rule.kind == "latency" else ()
            window = Window(
                matched=[self.counts[(rule.name, MATCHED, b)] for b in buckets],
                totals=[self.counts[(rule.name, TOTAL, b)] for b in buckets],
                sampled=[self.counts[(rule.name, SAMPLED, b)] for b in buckets],
                histogram=_summed(self.latency.get((rule.name, b), {}) for b in latency),
                matched_ever=self.matched[rule.name],
                sampled_ever=self.sampled[rule.name],
            )
            state = self.states.setdefault(rule.name, {"armed_ms": str(now_ms)})
            loaded.append(Loaded(RuleState.of(state, now_ms), window))
        return loaded

    def samples(self, rule: Rule) -> list[dict[str, Any]]:
        return self.kept_samples[rule.name]

    def evaluated(self, values: Mapping[str, float], estimated: Collection[str], now_ms: int) -> None:
        pass  # a backtest reports notifications only

    def describe(self, rules: Sequence[Rule], now_ms: int) -> None:
        pass  # nothing reads a backtest's rules but the backtest

    def apply(self, rule: Rule, state: RuleState, step: Step, payload: Mapping[str, Any] | None) -> bool:
        stored = self.states[rule.name]
        stored.update(step.fields, seq=str(state.seq + 1))
        if step.notify == "resolved":
            self.kept_samples[rule.name] = []
        if payload is not None:
            self.notifications.append(payload)
        return True
