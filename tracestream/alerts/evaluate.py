"""What a rule makes of its window and of time: its value, its next state, and what to tell.

Records are matched once, where they are read (matching.py), and only their counts go to the
store; each rule's value is then computed from its window's buckets.
Nothing here talks to Redis: the live runner and the backtest share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from tracestream.alerts.histogram import percentile
from tracestream.alerts.rules import Rule, RuleSet
from tracestream.summary import shown_count
from tracestream.timeparse import iso_utc

ISSUE_FIELD = "issue:"  # a new_issue rule's state: issue:<fingerprint> -> new or regressed

# ---------------------------------------------------------------------------
# values and states


@dataclass(frozen=True)
class Window:
    """A rule's window as the store read it. Each record counted for its sample weight
    (docs/sampling.md), so the sums estimate what the services logged; `sampled` counts, per
    bucket, the records among them whose weight is not 1 (for a ratio: among its totals)."""

    matched: Sequence[float] = ()
    totals: Sequence[float] = ()
    sampled: Sequence[float] = ()
    histogram: Mapping[int, float] = field(default_factory=dict)  # a latency rule's durations
    matched_ever: float = 0.0
    sampled_ever: float = 0.0  # of the matches ever, those whose weight is not 1


@dataclass(frozen=True)
class Reading:
    value: float
    holds: bool
    estimated: bool = False  # sampled-down records went into `value`
    window: Window = field(default_factory=Window)


def reading(rule: Rule, window: Window, state: RuleState, now_ms: int) -> Reading:
    matched = _figure(sum(window.matched))
    estimated = any(window.sampled)
    # Whether any record is in the window, whatever its weight, even 0 (released by an error): one
    # of weight 1 adds to `matched`, one of any other weight to `sampled`.
    stored = matched > 0 or estimated
    if rule.kind == "match":
        return Reading(matched, stored, estimated, window)
    if rule.kind == "rate":
        return Reading(matched, matched > rule.above, estimated, window)
    if rule.kind == "ratio":
        total = _figure(sum(window.totals))
        value = round(sum(window.matched) / total, 6) if total else 0.0
        holds = total >= rule.min_count and value > rule.above
        return Reading(value, holds, estimated, window)
    if rule.kind == "absence":
        # A firing carried over a loss of Redis's state (runner.py) stays firing until a record comes.
        watched_long_enough = state.status == "firing" or now_ms - state.armed_ms >= rule.window_ms
        return Reading(matched, not stored and watched_long_enough, estimated, window)
    value, count = percentile(window.histogram, rule.percentile)
    holds = count >= rule.min_count and value > rule.above
    return Reading(round(value, 3), holds, estimated, window)


def _figure(count: float) -> float:
    """A sum of weights as shown: whole numbers stay integers, as counts of stored records were,
    and float noise (a sum of thirds) is rounded off before it is compared or shown."""
    rounded = round(count, 6)
    return int(rounded) if rounded.is_integer() else rounded


@dataclass(frozen=True)
class RuleState:
    """A rule's firing state, as stored (all text); `seq` counts its changes since `armed_ms`, when
    the state was made, so the two together name a change however often Redis loses the state."""

    status: str = "ok"  # ok, pending or firing
    seq: int = 0
    since_ms: int = 0  # pending: when the condition began to hold
    fired_ms: int = 0
    last_sent_ms: int = 0
    resolved_ms: int = 0
    matched_at_fire: float = 0.0  # matches ever, weighted, before the firing began
    sampled_at_fire: float = 0.0  # of those, the ones whose weight is not 1
    armed_ms: int = 0  # when a runner first started with the rule: absence and news count from then
    # new_issue rules: each fingerprint told of, and how ("new" or "regressed")
    issues: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, stored: Mapping[str, str], now_ms: int) -> RuleState:
        def number(name: str) -> int:
            return int(stored.get(name) or 0)

        told = {name[len(ISSUE_FIELD) :]: how for name, how in stored.items() if name.startswith(ISSUE_FIELD)}

        return cls(
            status=stored.get("status") or "ok",
            seq=number("seq"),
            since_ms=number("since_ms"),
            fired_ms=number("fired_ms"),
            last_sent_ms=number("last_sent_ms"),
            resolved_ms=number("resolved_ms"),
            matched_at_fire=float(stored.get("matched_at_fire") or 0),
            sampled_at_fire=float(stored.get("sampled_at_fire") or 0),
            armed_ms=number("armed_ms") or now_ms,
            issues=told,
        )

    def stored(self) -> dict[str, str]:
        """The state as its hash holds it: the inverse of `of`."""
        numbers = ("seq", "since_ms", "fired_ms", "last_sent_ms", "resolved_ms", "armed_ms")
        return {
            "status": self.status,
            **{name: str(getattr(self, name)) for name in numbers},
            "matched_at_fire": str(self.matched_at_fire),
            "sampled_at_fire": str(self.sampled_at_fire),
            **{ISSUE_FIELD + fingerprint: how for fingerprint, how in self.issues.items()},
        }

    def after(self, step: Step) -> RuleState:
        """This state once `step` is stored."""
        return RuleState.of({**self.stored(), **step.fields, "seq": str(self.seq + 1)}, self.armed_ms)


@dataclass(frozen=True)
class Step:
    """A state change: the fields to store and, when it is news, what to tell (`firing`/`resolved`)."""

    fields: dict[str, str]
    notify: str = ""
    repeat: bool = False


def decide(rule: Rule, state: RuleState, now: Reading, now_ms: int) -> Step | None:
    """The next state, or None when nothing changes."""
    if now.holds:
        if state.status == "ok":
            if state.resolved_ms and now_ms - state.resolved_ms < rule.cooldown_ms:
                return None
            if rule.for_ms > 0:
                return Step({"status": "pending", "since_ms": str(now_ms)})
            return _fire(rule, now, now_ms)
        if state.status == "pending":
            return _fire(rule, now, now_ms) if now_ms - state.since_ms >= rule.for_ms else None
        if now_ms - state.last_sent_ms >= rule.repeat_ms:
            return Step({"last_sent_ms": str(now_ms)}, "firing", repeat=True)
        return None
    if state.status == "pending":
        return Step({"status": "ok"})
    if state.status == "firing":
        return Step({"status": "ok", "resolved_ms": str(now_ms)}, "resolved")
    return None


def _fire(rule: Rule, now: Reading, now_ms: int) -> Step:
    window = now.window
    counted_now = rule.kind in ("match", "rate")  # their firing's count starts with their window
    fields = {
        "status": "firing",
        "fired_ms": str(now_ms),
        "last_sent_ms": str(now_ms),
        "matched_at_fire": str(window.matched_ever - (sum(window.matched) if counted_now else 0)),
        "sampled_at_fire": str(window.sampled_ever - (sum(window.sampled) if counted_now else 0)),
    }
    return Step(fields, "firing")


def carried_over(seen: RuleState, state: RuleState) -> Step | None:
    """What a runner keeps of a rule's state as it last `seen` it, once Redis has lost it and made
    `state` afresh (a restart without persistence, keys deleted or evicted): a firing stays firing,
    to resolve as usual when the condition clears (its counts are gone, so mostly at once), so the
    channel hears its end. A fresh state already changed is another runner's doing: left alone."""
    if seen.status != "firing" or state.seq != 0:
        return None
    fields = {"status": "firing", "fired_ms": str(seen.fired_ms), "last_sent_ms": str(seen.last_sent_ms)}
    return Step(fields)


# ---------------------------------------------------------------------------
# what a notification says


def notification(
    rules: RuleSet,
    rule: Rule,
    step: Step,
    state: RuleState,
    now: Reading,
    samples: Sequence[Mapping[str, Any]],
    now_ms: int,
) -> dict[str, Any]:
    """The generic webhook's JSON body; Slack's text is made from it."""
    seq = state.seq + 1
    fired_ms = int(step.fields.get("fired_ms", state.fired_ms))
    matched_at_fire = float(step.fields.get("matched_at_fire", state.matched_at_fire))
    sampled_at_fire = float(step.fields.get("sampled_at_fire", state.sampled_at_fire))
    base = rules.console_url
    links = {"search": f"{base}/search?{urlencode(_search_params(rule, now_ms))}"} if base else {}
    return {
        "id": f"{rule.name}:{state.armed_ms}:{seq}",
        "rule": rule.name,
        "kind": rule.kind,
        "state": step.notify,
        "repeat": step.repeat,
        "value": now.value,
        "estimated": now.estimated,
        "threshold": rule.above,
        "condition": rule.describe(),
        "window": rule.window_ms / 1000,
        "count": _figure(now.window.matched_ever - matched_at_fire),
        "count_estimated": now.window.sampled_ever > sampled_at_fire,
        "at": iso_utc(now_ms * 1_000_000),
        "firing_since": iso_utc(fired_ms * 1_000_000),
        "samples": [
            {
                **found,
                "trace_url": f"{base}/trace?id={found['trace_id']}" if base and found["trace_id"] else "",
            }
            for found in samples
        ],
        "links": links,
    }


def _search_params(rule: Rule, now_ms: int) -> list[tuple[str, str]]:
    params = [("since", iso_utc((now_ms - max(rule.window_ms, 60_000)) * 1_000_000))]
    for name, value in rule.filter_params.items():
        values = value if isinstance(value, list) else [value]
        key = {"attribute": "attr", "route": "attr", "task": "attr"}.get(name, name)
        prefix = {"route": "http.route=", "task": "celery.task.name="}.get(name, "")
        params += [(key, prefix + item) for item in values]
    return params


def slack_text(payload: Mapping[str, Any]) -> str:
    mark = ":red_circle:" if payload["state"] == "firing" else ":white_check_mark:"
    lines = [
        f"{mark} *{_slack_escaped(payload['rule'])}* {payload['state']}: {payload['condition']} "
        f"(value {'~' if payload.get('estimated') else ''}{payload['value']:g}, "
        f"{shown_count(payload['count'], payload.get('count_estimated', False))} matching)"
    ]
    if payload["links"]:
        lines.append(f"<{payload['links']['search']}|search>")
    for found in payload["samples"]:
        trace = f" <{found['trace_url']}|trace {found['trace_id'][:8]}>" if found["trace_url"] else ""
        text = _slack_escaped(f"{found['service']} {found['severity']}: {found['body'][:200]}")
        lines.append(f"• {text}{trace}")
    return "\n".join(lines)


def _slack_escaped(text: str) -> str:
    """Record text cannot form Slack links or mentions (`<!channel>`)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
