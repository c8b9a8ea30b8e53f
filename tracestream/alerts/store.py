"""Where rule state lives: in Redis for `alerts run`, in memory for a backtest.

In Redis, a batch's counts and the acknowledgement of its records are one transaction, so a
runner killed at any point has counted a record exactly once or not at all (it is then read
again). A state change is a compare-and-set on the rule's change counter in one script that
also queues the notification: of several runners deciding the same change, one wins, and
the notification is queued exactly once, under the id `<rule>:<change number>`.
On a Redis Cluster, counts live next to each shard's records and states in one home slot
(`{<stream>}:alerts:...`); evaluation sums the shards' counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import redis

from tracestream.alerts.evaluate import MATCHED, SAMPLES, TOTAL, Batch, RuleState, Step, Window, sample
from tracestream.alerts.rules import Rule
from tracestream.connection import reply_text
from tracestream.schema import Keyspace

HISTORY_MAX = 10_000
# Buckets outlive their window by this much, for records that arrive a little late.
_BUCKET_GRACE_MS = 60_000


@dataclass(frozen=True)
class Loaded:
    """One rule as the store holds it now."""

    state: RuleState
    window: Window
    samples: list[dict[str, Any]]


class Store(Protocol):
    def load(self, rules: Sequence[Rule], now_ms: int) -> list[Loaded]: ...

    def apply(self, rule: Rule, state: RuleState, step: Step, payload: Mapping[str, Any] | None) -> bool:
        """Store `step` unless another evaluator changed the rule first; True when it was stored."""
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

    def durations(self, rule: Rule) -> str:
        return f"{self.prefix}:durations:{rule.name}"

    def samples(self, rule: Rule) -> str:
        return f"{self.prefix}:samples:{rule.name}"

    def matched(self, rule: Rule) -> str:
        return f"{self.prefix}:matched:{rule.name}"

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
    def state_pattern(self) -> str:
        return f"{self.prefix}:state:*"

    def sent(self, notification_id: str, target: str) -> str:
        return f"{self.prefix}:sent:{notification_id}:{target}"


# KEYS: state, outbox, history. ARGV: expected seq, history length, the notification JSON ('' for
# a silent change), number of field pairs, the pairs, the targets.
_APPLY = """
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq ~= tonumber(ARGV[1]) then return 0 end
local payload = ARGV[3]
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], 'seq', seq + 1)
if payload ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'payload', payload)
  for j = i, #ARGV do
    redis.call('XADD', KEYS[2], '*', 'target', ARGV[j], 'payload', payload, 'attempt', '1')
  end
end
return 1
"""


class ShardCounter:
    """One shard's counts, durations and samples, kept next to its records (one slot on a cluster),
    so `add` can acknowledge the records it counted in the same transaction."""

    def __init__(self, client: redis.Redis, records: str, rules: Sequence[Rule], group: str) -> None:
        self.client = client
        self.records = records
        self.keys = AlertKeys(records)
        self._rules = {rule.name: rule for rule in rules}
        self._group = group

    def add(self, batch: Batch) -> None:
        """Counts, durations and samples, and the acknowledgement of the batch, all or nothing."""
        pipe = self.client.pipeline(transaction=True)
        for (name, series, bucket), count in batch.counts.items():
            rule = self._rules[name]
            key = self.keys.bucket(rule, series, bucket)
            pipe.incrby(key, count)
            pipe.pexpire(key, rule.window_ms + 2 * rule.bucket_ms + _BUCKET_GRACE_MS)
        for name, durations in batch.durations.items():
            pipe.zadd(self.keys.durations(self._rules[name]), {f"{d}:{sid}": at for at, d, sid in durations})
        for name, samples in batch.samples.items():
            key = self.keys.samples(self._rules[name])
            pipe.lpush(key, *[orjson.dumps(sample(entry)) for entry in samples])
            pipe.ltrim(key, 0, SAMPLES - 1)
        for name, count in batch.matched.items():
            pipe.incrby(self.keys.matched(self._rules[name]), count)
        if batch.stream_ids:
            pipe.xack(self.records, self._group, *batch.stream_ids)
        pipe.execute()

    def load(self, rules: Sequence[Rule], now_ms: int) -> list[tuple[Window, list[dict[str, Any]]]]:
        pipe = self.client.pipeline(transaction=False)
        for rule in rules:
            buckets = rule.buckets(now_ms)
            pipe.mget([self.keys.bucket(rule, MATCHED, b) for b in buckets])
            if rule.kind == "ratio":
                pipe.mget([self.keys.bucket(rule, TOTAL, b) for b in buckets])
            durations = self.keys.durations(rule)
            pipe.zremrangebyscore(durations, "-inf", f"({now_ms - rule.window_ms}")
            pipe.zrangebyscore(durations, now_ms - rule.window_ms, "+inf")
            pipe.get(self.keys.matched(rule))
            pipe.lrange(self.keys.samples(rule), 0, SAMPLES - 1)
        replies = iter(pipe.execute())
        loaded = []
        for rule in rules:
            matched = next(replies)
            totals = next(replies) if rule.kind == "ratio" else []
            _, durations, ever, samples = (next(replies) for _ in range(4))
            window = Window(
                matched=[int(n or 0) for n in matched],
                totals=[int(n or 0) for n in totals],
                durations=[float(member.split(":", 1)[0]) for member in durations],
                matched_ever=int(ever or 0),
            )
            loaded.append((window, [orjson.loads(s) for s in samples]))
        return loaded

    def clear_samples(self, rule: Rule) -> None:
        self.client.delete(self.keys.samples(rule))


class RedisStore:
    """Rule states, decided in one place (`home`), over the counts of every shard.

    On a single Redis, the home and the one shard are the same server and key prefix.
    """

    def __init__(self, home: redis.Redis, keys: AlertKeys, shards: Sequence[ShardCounter]) -> None:
        self.home = home
        self.keys = keys
        self.shards = shards
        self._apply = home.register_script(_APPLY)

    def load(self, rules: Sequence[Rule], now_ms: int) -> list[Loaded]:
        pipe = self.home.pipeline(transaction=False)
        for rule in rules:
            pipe.hsetnx(self.keys.state(rule.name), "armed_ms", now_ms)
            pipe.hgetall(self.keys.state(rule.name))
        states = pipe.execute()[1::2]
        per_shard = [shard.load(rules, now_ms) for shard in self.shards]
        loaded = []
        for index in range(len(rules)):
            found = [shard[index] for shard in per_shard]
            window = Window(
                matched=[sum(counts) for counts in zip(*(w.matched for w, _ in found), strict=True)],
                totals=[sum(counts) for counts in zip(*(w.totals for w, _ in found), strict=True)],
                durations=[d for w, _ in found for d in w.durations],
                matched_ever=sum(w.matched_ever for w, _ in found),
            )
            samples = sorted(
                (s for _, shard in found for s in shard), key=lambda s: s["timestamp"], reverse=True
            )
            loaded.append(Loaded(RuleState.of(states[index], now_ms), window, samples[:SAMPLES]))
        return loaded

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
    """Every rule's stored state, by rule name: for `alerts status`. `stream`: see `home_stream`."""
    keys = AlertKeys(stream)
    names = sorted(reply_text(key) for key in client.scan_iter(keys.state_pattern, count=1000))
    start = len(keys.state(""))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    states = pipe.execute()
    return {
        name[start:]: {reply_text(k): reply_text(v) for k, v in state.items()}
        for name, state in zip(names, states, strict=True)
    }


@dataclass
class MemoryStore:
    """The same, in this process: a backtest replays stored records without writing to Redis."""

    counts: defaultdict[tuple[str, str, int], int] = field(default_factory=lambda: defaultdict(int))
    durations: defaultdict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    samples: defaultdict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    matched: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    states: dict[str, dict[str, str]] = field(default_factory=dict)
    notifications: list[Mapping[str, Any]] = field(default_factory=list)

    def add(self, batch: Batch) -> None:
        for key, count in batch.counts.items():
            self.counts[key] += count
        for name, durations in batch.durations.items():
            self.durations[name] += [(at_ms, duration) for at_ms, duration, _ in durations]
        for name, samples in batch.samples.items():
            self.samples[name] = ([sample(entry) for entry in reversed(samples)] + self.samples[name])[
                :SAMPLES
            ]
        for name, count in batch.matched.items():
            self.matched[name] += count

    def load(self, rules: Sequence[Rule], now_ms: int) -> list[Loaded]:
        loaded = []
        for rule in rules:
            buckets = rule.buckets(now_ms)
            since = now_ms - rule.window_ms
            kept = self.durations[rule.name] = [d for d in self.durations[rule.name] if d[0] >= since]
            window = Window(
                matched=[self.counts[(rule.name, MATCHED, b)] for b in buckets],
                totals=[self.counts[(rule.name, TOTAL, b)] for b in buckets],
                durations=[duration for _, duration in kept],
                matched_ever=self.matched[rule.name],
            )
            state = self.states.setdefault(rule.name, {"armed_ms": str(now_ms)})
            loaded.append(Loaded(RuleState.of(state, now_ms), window, self.samples[rule.name]))
        return loaded

    def apply(self, rule: Rule, state: RuleState, step: Step, payload: Mapping[str, Any] | None) -> bool:
        stored = self.states[rule.name]
        stored.update(step.fields, seq=str(state.seq + 1))
        if step.notify == "resolved":
            self.samples[rule.name] = []
        if payload is not None:
            self.notifications.append(payload)
        return True
