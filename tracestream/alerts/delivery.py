"""Delivering notifications from the outbox stream to webhooks, with retries recorded in Redis.

Runners read the outbox through their own consumer group, so each entry goes to one of them;
a runner that dies holding one leaves it pending, and another claims it after `claim_idle`.
A delivered notification is marked `sent` before it is acknowledged, and a marked one is never
posted again: the only window for a second post is a runner dying between the endpoint's answer
and that mark (a few milliseconds), and each request carries an `Idempotency-Key` for it.
A failed attempt is acknowledged together with its retry, queued in a sorted set by due time;
due retries go back to the outbox in one script, so a retry is never lost or doubled either.
The notifications of one rule to one target go out in order: while one waits for its retry the
later ones wait behind it, so a resolve never reaches a channel before the firing it ends.
Each target is posted to from a thread of its own, so a webhook that answers slowly or not at
all holds up only its own notifications.
"""

from __future__ import annotations

import base64
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import orjson
import redis

from tracestream.alerts.evaluate import slack_text
from tracestream.alerts.rules import Target
from tracestream.alerts.store import AlertKeys
from tracestream.connection import CLUSTER_ERRORS, reply_text
from tracestream.lua import script_source

DELIVERY_GROUP = "tracestream-alerts-delivery"
DELIVERIES_MAX = 10_000
SENT_TTL_S = 7 * 86400
_BLOCK_MS = 200  # a due retry waits at most this long on an idle outbox
_HELD_MAX = 1_000  # notifications read and not yet posted, beyond which reading waits


@dataclass(frozen=True)
class DeliverySettings:
    timeout: float = 5.0
    max_attempts: int = 8
    first_backoff: float = 1.0
    max_backoff: float = 300.0
    claim_idle: float = 30.0


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed delivery: following one would hand the credentials to another URL."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post(target: Target, payload: Mapping[str, Any], timeout: float) -> str:
    """'' when the endpoint took it, else what went wrong, without the URL (it may hold secrets)."""
    body = {"text": slack_text(payload)} if target.slack else payload
    url, authorization = _without_userinfo(target.url)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "tracestream-alerts",
        "Idempotency-Key": quote(f"{payload['id']}:{target.name}", safe=":"),  # any rule name, as ASCII
    }
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(url, data=orjson.dumps(body), method="POST", headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            answer.read()
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"{type(error).__name__}: {reason}".replace(target.url, target.shown_url).replace(
            url, target.shown_url
        )
    return ""


def read_group(
    client: redis.Redis, group: str, consumer: str, key: str, count: int, block_ms: int | None
) -> list[tuple[str, dict[str, str]]]:
    """New entries for this consumer: `(id, fields)` pairs."""
    replies: Any = client.xreadgroup(group, consumer, {key: ">"}, count=count, block=block_ms)
    per_stream = replies.values() if isinstance(replies, dict) else [entries for _, entries in replies or []]
    return [(entry_id, _paired(fields)) for entries in per_stream for entry_id, fields in entries]


def _paired(fields: dict[str, str] | list[str]) -> dict[str, str]:
    """A field list as Redis sends it (`unparsed_reads`) as a dict, as redis-py would make it."""
    if isinstance(fields, dict):
        return fields
    names = iter(fields)
    return dict(zip(names, names, strict=False))


def unparsed_reads(client: redis.Redis) -> None:
    """XREADGROUP replies left as the protocol parser gives them (a map of streams, each entry's
    fields a flat list): `read_group` pairs the fields in C, at a third of what redis-py's pairing
    costs per record, which counts at tens of thousands of records a second."""
    client.set_response_callback("XREADGROUP", lambda reply, **options: reply)


def claim_idle(
    client: redis.Redis, group: str, consumer: str, key: str, count: int, idle: float
) -> list[Any]:
    """Entries another consumer of `group` read and left unacknowledged for `idle` seconds."""
    reply: Any = client.xautoclaim(key, group, consumer, min_idle_time=int(idle * 1000), count=count)
    return [(entry_id, fields) for entry_id, fields in reply[1] if fields]


def _without_userinfo(url: str) -> tuple[str, str]:
    """`https://user:pw@host/x` as `https://host/x` and a Basic authorization header for it."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, ""
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc)), "Basic " + base64.b64encode(credentials).decode()


class Deliverer:
    """Sends what the outbox holds; call `step()` often, from one thread."""

    def __init__(
        self,
        client: redis.Redis,
        keys: AlertKeys,
        targets: Mapping[str, Target],
        consumer: str,
        settings: DeliverySettings,
        report: Callable[[str], None],
    ) -> None:
        self.client = client
        self.keys = keys
        self.targets = targets
        self.consumer = consumer
        self.settings = settings
        self._report = report
        self._due = client.register_script(script_source("due_deliveries"))
        self._release = client.register_script(script_source("alerts_release"))
        self._last_claim = 0.0
        self._lanes: dict[str, _Lane] = {}
        self._held: set[str] = set()  # outbox entries handed to a lane and not yet done with
        self._held_lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set, on a thread of its own: a slow webhook never holds up evaluation."""
        failing = False
        try:
            while not stop.is_set():
                try:
                    self.step(block_ms=_BLOCK_MS)
                    failing = False
                except CLUSTER_ERRORS as error:
                    if "NOGROUP" in str(error):
                        self.ensure_group()
                        continue
                    if not failing:
                        failing = True
                        self._report(_cannot_deliver(error))
                    stop.wait(1.0)
        finally:
            for lane in self._lanes.values():
                lane.close()

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys.outbox, DELIVERY_GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def step(self, block_ms: int) -> int:
        """Hand what is due to the targets' lanes, waiting up to `block_ms` for news; the number of
        notifications handed over."""
        self._due(
            keys=[self.keys.retry, self.keys.outbox], args=[int(time.time() * 1000)], client=self.client
        )
        if len(self._held) >= _HELD_MAX:
            time.sleep(block_ms / 1000)
            return 0
        entries = (
            self._claimed() if time.monotonic() - self._last_claim >= self.settings.claim_idle / 2 else []
        )
        entries += read_group(self.client, DELIVERY_GROUP, self.consumer, self.keys.outbox, 100, block_ms)
        handed = 0
        for raw_id, raw_fields in entries:
            entry_id = reply_text(raw_id)
            with self._held_lock:
                if entry_id in self._held:  # claimed back while it waits in its lane
                    continue
                self._held.add(entry_id)
            fields = {reply_text(k): reply_text(v) for k, v in raw_fields.items()}
            self._lane(fields["target"]).put(entry_id, fields)
            handed += 1
        return handed

    def _lane(self, target: str) -> _Lane:
        lane = self._lanes.get(target)
        if lane is None:
            lane = self._lanes[target] = _Lane(target, self._deliver_held, self._report)
        return lane

    def _deliver_held(self, entry_id: str, fields: Mapping[str, str] | None) -> None:
        """Deliver one entry of a lane, or (fields None) let go of one a failure left pending: a
        later claim hands it back, in the outbox's order."""
        try:
            if fields is not None:
                self._deliver(entry_id, fields)
        finally:
            with self._held_lock:
                self._held.discard(entry_id)

    def _claimed(self) -> list[Any]:
        self._last_claim = time.monotonic()
        return claim_idle(
            self.client, DELIVERY_GROUP, self.consumer, self.keys.outbox, 100, self.settings.claim_idle
        )

    def _deliver(self, entry_id: str, fields: Mapping[str, str]) -> None:
        payload = orjson.loads(fields["payload"])
        name, attempt = fields["target"], int(fields["attempt"])
        sent = self.keys.sent(payload["id"], name)
        target = self.targets.get(name)
        stalled, waiting = self.keys.stalled(payload["rule"], name), self.keys.waiting(payload["rule"], name)
        pipe = self.client.pipeline(transaction=True)
        if self.client.exists(sent):
            pipe.xack(self.keys.outbox, DELIVERY_GROUP, entry_id)
            pipe.execute()
            return
        if attempt == 1 and "released" not in fields and self._behind(stalled, waiting, payload["id"]):
            pipe.rpush(waiting, orjson.dumps({"target": name, "payload": fields["payload"]}))
            pipe.xack(self.keys.outbox, DELIVERY_GROUP, entry_id)
            pipe.execute()
            return
        problem = (
            post(target, payload, self.settings.timeout) if target else "no such target in the rule file"
        )
        outcome = "delivered" if not problem else "retrying"
        if not problem:
            pipe.set(sent, entry_id, ex=SENT_TTL_S)
        elif target and attempt < self.settings.max_attempts:
            delay = min(self.settings.max_backoff, self.settings.first_backoff * 2 ** (attempt - 1))
            retry = {"target": name, "payload": fields["payload"], "attempt": str(attempt + 1)}
            pipe.zadd(self.keys.retry, {orjson.dumps(retry): int((time.time() + delay) * 1000)})
            pipe.set(stalled, payload["id"], ex=self._stalled_ttl())
        else:
            outcome = "failed"
        record = {"id": payload["id"], "rule": payload["rule"], "target": name, "attempt": attempt}
        record.update(outcome=outcome, error=problem, url=target.shown_url if target else "")
        pipe.xadd(self.keys.deliveries, record, maxlen=DELIVERIES_MAX, approximate=True)  # type: ignore[arg-type]
        pipe.xack(self.keys.outbox, DELIVERY_GROUP, entry_id)
        pipe.execute()
        if outcome != "retrying":  # the next one of this rule to this target may go
            self._release(keys=[stalled, waiting, self.keys.outbox], client=self.client)
        if problem:
            self._report(f"notification {payload['id']} to {name}: {problem} (attempt {attempt}, {outcome})")

    def _behind(self, stalled: str, waiting: str, notification_id: str) -> bool:
        """Whether an earlier notification of this rule to this target waits for its retry, or
        later ones wait behind one: this one then waits too."""
        head = self.client.get(stalled)
        return (head is not None and reply_text(head) != notification_id) or bool(self.client.llen(waiting))

    def _stalled_ttl(self) -> int:
        """As long as the retries of one notification can last, so a lost mark frees its rule."""
        settings = self.settings
        return int(settings.max_backoff * settings.max_attempts + settings.claim_idle) + 1


def _cannot_deliver(error: Exception) -> str:
    return f"cannot deliver notifications, Redis: {error}; retrying"


class _Lane:
    """One target's notifications, posted in the order read, on a thread of its own. Redis out of
    reach lets go of everything queued, so that a claim hands it back in order."""

    def __init__(
        self,
        target: str,
        deliver: Callable[[str, Mapping[str, str] | None], None],
        report: Callable[[str], None],
    ) -> None:
        self._queue: queue.SimpleQueue[tuple[str, Mapping[str, str]] | None] = queue.SimpleQueue()
        self._deliver = deliver
        self._report = report
        self._closing = False
        self._thread = threading.Thread(
            target=self._work, name=f"tracestream-alerts-to-{target}", daemon=True
        )
        self._thread.start()

    def put(self, entry_id: str, fields: Mapping[str, str]) -> None:
        self._queue.put((entry_id, fields))

    def close(self) -> None:
        """Stop after the post in progress; what is queued stays pending in the outbox."""
        self._closing = True
        self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        failing = False
        while (item := self._queue.get()) is not None:
            entry_id, fields = item
            try:
                self._deliver(entry_id, None if failing or self._closing else fields)
            except CLUSTER_ERRORS as error:
                failing = True
                self._report(_cannot_deliver(error))
            if failing and self._queue.empty():
                failing = False


def failed_deliveries(client: redis.Redis, stream: str, limit: int = 20) -> list[dict[str, str]]:
    """The newest deliveries that gave up, newest first. `stream`: see `store.home_stream`."""
    found = []
    newest: Any = client.xrevrange(AlertKeys(stream).deliveries, count=1000)
    for entry_id, fields in newest:
        record = {reply_text(k): reply_text(v) for k, v in fields.items()}
        if record.get("outcome") == "failed":
            found.append({"at": reply_text(entry_id), **record})
        if len(found) >= limit:
            break
    return found
