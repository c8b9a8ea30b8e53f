"""The new_issue kind: an error issue (tracestream.error_issues) first seen after the rule was
armed, or one that regresses (seen again after it was resolved).

The writer keeps the issues; a runner lists those seen lately and tells each fingerprint once.
Which fingerprints a rule has told of lives in its state hash, written by the same
compare-and-set that queues the notification, so of several runners one tells, once, and a
restarted runner tells what became news while it was down. A burst of new issues is one firing
per evaluation that finds news; the rule resolves after `cooldown` (default 1m) without news.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tracestream.alerts.evaluate import ISSUE_FIELD, Reading, RuleState, Step, notification
from tracestream.alerts.rules import Rule, RuleSet
from tracestream.error_issues import ErrorIssue
from tracestream.timeparse import iso_utc

__all__ = ["NEW", "REGRESSED", "issue_step"]

NEW, REGRESSED = "new", "regressed"
_BODY_LIMIT = 500


def issue_step(
    rules: RuleSet, rule: Rule, state: RuleState, issues: Sequence[ErrorIssue], now_ms: int
) -> tuple[Step | None, dict[str, Any] | None, int]:
    """The rule's next step, its notification, and its value: how many issues are news."""
    wanted = set(rule.filter.services)
    news: list[tuple[ErrorIssue, str]] = []
    forgotten: dict[str, str] = {}  # regressions resolved since: a next regression is news again
    for issue in issues:
        if wanted and not wanted & set(issue.services):
            continue
        told = state.issues.get(issue.fingerprint)
        if told == REGRESSED and not (issue.status == "open" and issue.regression):
            forgotten[ISSUE_FIELD + issue.fingerprint] = NEW  # resolved or reopened since
        elif issue.status != "open":
            continue
        elif issue.regression and told != REGRESSED:
            news.append((issue, REGRESSED))
        elif told is None and issue.first_seen_ms >= state.armed_ms:
            news.append((issue, NEW))
    if news:
        fields = {**forgotten, **{ISSUE_FIELD + issue.fingerprint: how for issue, how in news}}
        fields["last_sent_ms"] = str(now_ms)
        if state.status != "firing":
            fields.update(status="firing", fired_ms=str(now_ms), matched_at_fire="0")
        step = Step(fields, "firing")
        return step, _payload(rules, rule, step, state, news, now_ms), len(news)
    if state.status == "firing" and now_ms - state.last_sent_ms >= rule.window_ms:
        step = Step({**forgotten, "status": "ok", "resolved_ms": str(now_ms)}, "resolved")
        return step, _payload(rules, rule, step, state, [], now_ms), 0
    return (Step(forgotten) if forgotten else None), None, 0


def _payload(
    rules: RuleSet,
    rule: Rule,
    step: Step,
    state: RuleState,
    news: Sequence[tuple[ErrorIssue, str]],
    now_ms: int,
) -> dict[str, Any]:
    """The usual notification; its samples are the issues' newest records, and `issues` says which."""
    samples = [
        {
            "timestamp": iso_utc(issue.last_seen_ms * 1_000_000),
            "service": issue.service,
            "severity": "ERROR",
            "body": f"{issue.type}: {issue.message}"[:_BODY_LIMIT]
            if issue.type
            else issue.message[:_BODY_LIMIT],
            "trace_id": issue.trace_id,
            "id": issue.newest_record_id,
        }
        for issue, _ in news
    ]
    payload = notification(rules, rule, step, state, Reading(len(news), bool(news)), samples, now_ms)
    payload["count"] = len(news)
    payload["issues"] = [
        {
            "fingerprint": issue.fingerprint,
            "how": how,
            "service": issue.service,
            "type": issue.type,
            "message": issue.message[:_BODY_LIMIT],
            "count": issue.count,
            "first_seen": iso_utc(issue.first_seen_ms * 1_000_000),
            "url": f"{rules.console_url}/errors?fingerprint={issue.fingerprint}" if rules.console_url else "",
        }
        for issue, how in news
    ]
    return payload
