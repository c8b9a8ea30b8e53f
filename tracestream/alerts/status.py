"""What the alerts are doing, for readers without the rule file: the console's Alerts page.

Everything comes from Redis: each rule's state, what the newest runner to start said the rule
is, its value at the last evaluation and whether that was an estimate (docs/sampling.md), the
notifications decided and the deliveries given up on.
Only HGETALL and XREVRANGE, which the console's read-only user may run (docs/security.md).
Webhook URLs are never stored with a notification; a failed delivery holds the masked one only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
from redis.cluster import RedisCluster

from tracestream.alerts.delivery import failed_deliveries
from tracestream.alerts.store import AlertKeys, home_stream
from tracestream.connection import Client, node_for, reply_text
from tracestream.timeparse import iso_utc

__all__ = ["alerts_status"]


def alerts_status(
    client: Client, stream: str, *, notifications: int = 20, failures: int = 20
) -> dict[str, Any]:
    """Rules (name order) with their state and last value, the newest notifications and the newest
    deliveries given up on (newest first), and when the rules were last evaluated ('' if never)."""
    home = home_stream(stream, isinstance(client, RedisCluster))
    node = node_for(client, home)
    keys = AlertKeys(home)
    pipe = node.pipeline(transaction=False)
    pipe.hgetall(keys.rules)
    pipe.hgetall(keys.values)
    pipe.hgetall(keys.evaluated)
    pipe.hgetall(keys.estimated)
    pipe.xrevrange(keys.history, count=notifications)
    described, values, evaluated, estimated, history = pipe.execute()
    described = {reply_text(name): orjson.loads(text) for name, text in described.items()}
    values = {reply_text(name): float(value) for name, value in values.items()}
    estimated = {reply_text(name) for name, flag in estimated.items() if reply_text(flag) == "1"}
    names = sorted(described)
    for name in names:
        pipe.hgetall(keys.state(name))
    states = pipe.execute()
    rules = [
        _rule(name, state, described[name], values.get(name), name in estimated)
        for name, state in zip(names, states, strict=True)
    ]
    at_ms = int(evaluated.get("at_ms") or 0)
    return {
        "evaluated": _iso_ms(at_ms) if at_ms else "",
        "rules": rules,
        "notifications": [_notification(orjson.loads(fields["payload"])) for _, fields in history],
        "failed_deliveries": [
            {**failed, "at": _iso_ms(int(failed["at"].split("-")[0]))}  # a stream id: when it was given up
            for failed in failed_deliveries(node, home, failures)
        ],
    }


def _rule(
    name: str, state: dict[str, str], described: dict[str, Any], value: float | None, estimated: bool
) -> dict[str, Any]:
    status = state.get("status") or "ok"
    since_field = {"firing": "fired_ms", "pending": "since_ms"}.get(status, "resolved_ms")
    since = int(state.get(since_field) or 0)
    return {
        "rule": name,
        "kind": described.get("kind", ""),
        "condition": described.get("condition", ""),
        "notify": described.get("notify", []),
        "status": status,
        "since": _iso_ms(since) if since else "",
        "changes": int(state.get("seq") or 0),
        "value": value,
        "estimated": estimated,
    }


def _notification(payload: dict[str, Any]) -> dict[str, Any]:
    """A notification as sent, its links made relative to the console showing it."""
    search = payload.get("links", {}).get("search", "")
    return {
        "id": payload["id"],
        "rule": payload["rule"],
        "state": payload["state"],
        "repeat": payload.get("repeat", False),
        "value": payload.get("value"),
        "estimated": payload.get("estimated", False),
        "count": payload.get("count"),
        "count_estimated": payload.get("count_estimated", False),
        "condition": payload.get("condition", ""),
        "at": payload["at"],
        "search": f"search?{urlsplit(search).query}" if search else "",
        "samples": [
            {name: found.get(name, "") for name in ("timestamp", "service", "severity", "body", "trace_id")}
            for found in payload.get("samples", [])
        ],
    }


def _iso_ms(ms: int) -> str:
    return iso_utc(ms * 1_000_000)
