"""`tracestream alerts`: rules evaluated as records arrive, by real runner processes, posting to a
real local webhook; state in a private Redis. Windows are 1-2 s so the whole file stays short."""

from __future__ import annotations

import calendar
import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.apps.alerts_webhook import WebhookReceiver
from tests.seeded_records import RecordWriter
from tests.support import ROOT, VENV_BIN, RedisHandle, wait_for
from tracestream import schema
from tracestream.alerts.rules import RuleError, load_rules, parse_rules
from tracestream.alerts.store import AlertKeys
from tracestream.cli import main
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.error_issues import set_status
from tracestream.exporters.encoding import exception_fields

CONSOLE = "http://console.example:8686"
SECRET_PASSWORD = "s3cret-pw"
SECRET_TOKEN = "t0ken-in-query"
TS_FIELD = schema.LOG_FIELDS.index("ts")


def rule_file(directory: Path, receiver: WebhookReceiver, rules: list[dict[str, Any]]) -> Path:
    port = receiver.url.rsplit(":", 1)[1]
    document = {
        "console_url": CONSOLE,
        "notify": {
            "ops": {"webhook": f"{receiver.url}/hook"},
            "chat": {"slack_webhook": f"{receiver.url}/slack"},
            "sluggish": {"webhook": f"{receiver.url}/sluggish"},
            "flaky": {
                "webhook": f"http://alerts:{SECRET_PASSWORD}@127.0.0.1:{port}/flaky?token={SECRET_TOKEN}"
            },
        },
        "rules": rules,
    }
    path = directory / f"rules-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


class Runner:
    """`tracestream alerts run` as a subprocess, its stderr kept in a file."""

    def __init__(self, handle: RedisHandle, rules: Path, consumer: str, *args: str, **env: str) -> None:
        self.log = Path(tempfile.mkstemp(prefix="alerts-runner-", suffix=".log")[1])
        command = [
            str(VENV_BIN / "tracestream"), "alerts", "run", "--rules", str(rules), "--consumer", consumer,
            "--tick", "100ms", "--claim-idle", "1s", "--first-backoff", "300ms", *args,
        ]  # fmt: skip
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(command, env=handle.env(**env), cwd=ROOT, stderr=stderr)
        wait_for(
            lambda: "evaluating" in self.stderr() or self.process.poll() is not None, 20, what="runner start"
        )
        assert self.process.poll() is None, self.stderr()

    def stderr(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.unlink(missing_ok=True)


@contextmanager
def running(
    handle: RedisHandle, rules: Path, consumer: str = "a", *args: str, **env: str
) -> Iterator[Runner]:
    runner = Runner(handle, rules, consumer, *args, **env)
    try:
        yield runner
    finally:
        runner.stop()


def fresh_handle(server: EmbeddedRedis) -> RedisHandle:
    return RedisHandle(url=server.url, stream=f"test:{uuid.uuid4().hex[:12]}")


def settled(handle: RedisHandle) -> bool:
    """Every notification decided has been delivered or given up on: nothing pending or queued."""
    keys = AlertKeys(handle.stream)
    with handle.client() as client:
        groups = client.xinfo_groups(keys.outbox)
        return all(g["pending"] == 0 and g["lag"] == 0 for g in groups) and client.zcard(keys.retry) == 0


def states(receiver: WebhookReceiver, rule: str, path: str = "/hook") -> list[str]:
    return [body["state"] for body in receiver.accepted(path, rule)]


def has_states(receiver: WebhookReceiver, rule: str, expected: list[str]) -> bool:
    return states(receiver, rule) == expected


def notified(receiver: WebhookReceiver, rule: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    return wait_for(
        lambda: (found := receiver.accepted("/hook", rule))[count - 1 :] and found,
        timeout,
        what=f"{count} notifications of {rule}: {states(receiver, rule)}",
    )


def ids(handle: RedisHandle, rule: str, *changes: int) -> list[str]:
    """The ids of a rule's notifications by change number: `<rule>:<when its state was made>:<change>`."""
    with handle.client() as client:
        armed = client.hget(AlertKeys(handle.stream).state(rule), "armed_ms")
    return [f"{rule}:{armed}:{change}" for change in changes]


def at_s(body: dict[str, Any]) -> float:
    return calendar.timegm(time.strptime(body["at"][:19], "%Y-%m-%dT%H:%M:%S")) + float(
        "0" + body["at"][19:-1]
    )


def fires_again_only_after_cooldown(
    receiver: WebhookReceiver, rule: str, trigger: Callable[[], None], cooldown: float
) -> None:
    """After a resolve the condition is made to hold without pause: the next firing waits for the cooldown."""
    resolved = notified(receiver, rule, 2)[1]
    assert resolved["state"] == "resolved"
    deadline = time.monotonic() + cooldown + 5
    while len(receiver.accepted("/hook", rule)) < 3:
        assert time.monotonic() < deadline, f"{rule} did not fire again: {states(receiver, rule)}"
        trigger()
        time.sleep(0.1)  # records arrive over time, as they would from a service
    again = receiver.accepted("/hook", rule)[2]
    assert again["state"] == "firing"
    assert at_s(again) - at_s(resolved) >= cooldown - 0.05


# ---------------------------------------------------------------------------
# one runner, every kind

KIND_RULES: list[dict[str, Any]] = [
    {"name": "boom", "kind": "match", "filter": {"service": "m", "text": "boom"}, "cooldown": "1s",
     "notify": ["ops", "chat"]},
    {"name": "errors", "kind": "rate", "filter": {"service": "r", "severity": "ERROR"}, "window": "1s",
     "above": 2, "cooldown": "1500ms", "notify": ["ops"]},
    {"name": "pay-failures", "kind": "ratio", "filter": {"service": "q", "route": "/pay"},
     "match": {"severity": "ERROR"}, "above": 0.5, "min_count": 4, "window": "1s", "cooldown": "1500ms",
     "notify": ["ops"]},
    {"name": "worker-silent", "kind": "absence", "filter": {"service": "a"}, "window": "1s", "cooldown": "2s",
     "notify": ["ops"]},
    {"name": "slow", "kind": "latency", "filter": {"service": "l", "route": "/slow"}, "percentile": 90,
     "above": "200ms", "window": "1s", "cooldown": "1500ms", "notify": ["ops"]},
    {"name": "flaky", "kind": "match", "filter": {"service": "f"}, "cooldown": "30s", "notify": ["flaky"]},
    {"name": "moved", "kind": "match", "filter": {"service": "v"}, "cooldown": "30s", "notify": ["flaky"]},
    {"name": "ordered", "kind": "match", "filter": {"service": "o"}, "cooldown": "1s", "notify": ["flaky"]},
    {"name": "café → <b>", "kind": "match", "filter": {"service": "u"}, "cooldown": "30s", "notify": ["ops"]},
    {"name": "stuck", "kind": "match", "filter": {"service": "h"}, "cooldown": "30s", "notify": ["sluggish"]},
    {"name": "prompt", "kind": "match", "filter": {"service": "p"}, "cooldown": "30s", "notify": ["ops"]},
    {"name": "new-errors", "kind": "new_issue", "filter": {"service": "e"}, "cooldown": "1s",
     "notify": ["ops"]},
]  # fmt: skip


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running_receiver:
        yield running_receiver


@pytest.fixture(scope="module")
def kinds(
    redis_server: EmbeddedRedis, receiver: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RedisHandle, Runner, RecordWriter]]:
    handle = fresh_handle(redis_server)
    rules = rule_file(tmp_path_factory.mktemp("alerts"), receiver, KIND_RULES)
    writer = RecordWriter(handle)
    with running(handle, rules) as runner:
        yield handle, runner, writer
    writer.close()


def request_row(
    writer: RecordWriter, service: str, route: str, severity: str = "INFO", ms: float = 5.0
) -> list[str]:
    attributes = {"http.route": route, "http.server.duration_ms": ms, "http.response.status_code": 200}
    return writer.row(f"GET {route}", service=service, severity=severity, attributes=attributes, trace_id=7)


def test_match_sends_one_notification_per_burst_with_its_count(
    kinds: tuple[RedisHandle, Runner, RecordWriter], receiver: WebhookReceiver
) -> None:
    _, _, writer = kinds
    writer.write(*[writer.row(f"boom {i}", service="m", trace_id=0xABC + i) for i in range(3)])
    writer.log("all fine", service="m")
    firing, resolved = notified(receiver, "boom", 2)
    assert (firing["state"], resolved["state"]) == ("firing", "resolved")
    assert resolved["count"] == 3
    assert [s["trace_id"] for s in resolved["samples"]] == [format(0xABC + i, "032x") for i in (2, 1, 0)]
    slack = wait_for(lambda: receiver.accepted("/slack")[1:] and receiver.accepted("/slack"), what="slack")
    assert "*boom* firing" in slack[0]["text"] and "*boom* resolved" in slack[1]["text"]
    assert f"<{CONSOLE}/trace?id={format(0xABC, '032x')}|trace" in slack[1]["text"]
    # Matches closer together than the cooldown, for twice its length: still one firing, with their count.
    started = time.monotonic()
    written = 0
    while time.monotonic() - started < 2.0:
        writer.log(f"boom again {written}", service="m")
        written += 1
        time.sleep(0.2)  # records arriving over time, as from a service
    again, resolved_again = notified(receiver, "boom", 4)[2:]
    assert (again["state"], resolved_again["state"], resolved_again["count"]) == (
        "firing",
        "resolved",
        written,
    )
    assert len(receiver.accepted("/hook", "boom")) == 4
    assert [s["body"] for s in again["samples"]] == ["boom again 0"]  # its own, not the last burst's


def test_rate_fires_above_its_threshold_with_samples_and_links(
    kinds: tuple[RedisHandle, Runner, RecordWriter], receiver: WebhookReceiver
) -> None:
    _, _, writer = kinds

    def errors() -> list[list[str]]:
        return [
            writer.row(f"card declined {i}", service="r", severity="ERROR", trace_id=0x100 + i)
            for i in range(3)
        ]

    writer.write(*[writer.row("ok", service="r") for _ in range(5)], *errors())
    firing = notified(receiver, "errors", 1)[0]
    assert (firing["state"], firing["value"], firing["threshold"]) == ("firing", 3, 2)
    assert firing["samples"][0] == {
        "timestamp": firing["samples"][0]["timestamp"],
        "service": "r",
        "severity": "ERROR",
        "body": "card declined 2",
        "trace_id": format(0x102, "032x"),
        "id": firing["samples"][0]["id"],
        "trace_url": f"{CONSOLE}/trace?id={format(0x102, '032x')}",
    }
    assert firing["links"]["search"].startswith(f"{CONSOLE}/search?since=")
    assert "service=r" in firing["links"]["search"] and "severity=ERROR" in firing["links"]["search"]
    fires_again_only_after_cooldown(receiver, "errors", lambda: writer.write(*errors()), 1.5)


def test_ratio_needs_its_minimum_count(
    kinds: tuple[RedisHandle, Runner, RecordWriter], receiver: WebhookReceiver
) -> None:
    _, _, writer = kinds
    # Every record an error, but too few of them (and errors on another route do not count).
    writer.write(*[request_row(writer, "q", "/pay", "ERROR") for _ in range(2)])
    writer.write(*[request_row(writer, "q", "/other", "ERROR") for _ in range(10)])
    writer.write(
        request_row(writer, "q", "/pay", "ERROR"), *[request_row(writer, "q", "/pay") for _ in range(2)]
    )
    firing = notified(receiver, "pay-failures", 1)[0]
    assert (firing["state"], firing["value"]) == ("firing", 0.6)

    def trigger() -> None:
        writer.write(*[request_row(writer, "q", "/pay", "ERROR") for _ in range(4)])

    fires_again_only_after_cooldown(receiver, "pay-failures", trigger, 1.5)


def test_absence_fires_on_silence_and_resolves_on_a_record(
    kinds: tuple[RedisHandle, Runner, RecordWriter], receiver: WebhookReceiver
) -> None:
    _, _, writer = kinds
    firing = notified(receiver, "worker-silent", 1)[0]
    assert (firing["state"], firing["value"]) == ("firing", 0)
    writer.log("heartbeat", service="a")
    resolved = notified(receiver, "worker-silent", 2)[1]
    assert resolved["state"] == "resolved"
    again = notified(receiver, "worker-silent", 3)[2]
    assert again["state"] == "firing"
    assert 2.0 - 0.05 <= at_s(again) - at_s(resolved) < 4.0  # the cooldown held it back, and no longer


def test_latency_percentile_over_request_durations(
    kinds: tuple[RedisHandle, Runner, RecordWriter], receiver: WebhookReceiver
) -> None:
    _, _, writer = kinds
    writer.write(
        *[request_row(writer, "l", "/slow", ms=500.0) for _ in range(5)],
        request_row(writer, "l", "/slow", ms=50.0),
        request_row(writer, "l", "/fast", ms=9000.0),
    )
    firing = notified(receiver, "slow", 1)[0]
    assert (firing["state"], firing["threshold"]) == ("firing", 200.0)
    assert firing["value"] == pytest.approx(500.0, rel=0.01)  # durations are counted in 1% bins
    fires_again_only_after_cooldown(
        receiver, "slow", lambda: writer.write(request_row(writer, "l", "/slow", ms=900.0)), 1.5
    )


def raised(error: Exception) -> tuple[str, str, str]:
    try:
        raise error
    except Exception as caught:
        return exception_fields(type(caught), caught, caught.__traceback__)


def test_new_issue_tells_a_new_fingerprint_once_and_again_when_it_regresses(
    kinds: tuple[RedisHandle, Runner, RecordWriter], receiver: WebhookReceiver
) -> None:
    handle, _, writer = kinds
    error = partial(writer.log, "charge failed", service="e", severity="ERROR")
    error(exception=raised(KeyError("card")), trace_id=0xE1)
    error(service="x", exception=raised(ValueError("x")))  # not its service
    firing = notified(receiver, "new-errors", 1)[0]
    (issue,) = firing["issues"]
    assert (firing["state"], firing["count"], issue["how"], issue["type"], issue["service"]) == (
        "firing", 1, "new", "KeyError", "e",
    )  # fmt: skip
    assert issue["url"] == f"{CONSOLE}/errors?fingerprint={issue['fingerprint']}"
    assert firing["samples"][0]["trace_url"] == f"{CONSOLE}/trace?id={0xE1:032x}"
    error(exception=raised(KeyError("card")))
    resolved = notified(receiver, "new-errors", 2)[1]  # the same issue again is no news
    assert (resolved["state"], resolved["issues"]) == ("resolved", [])
    with handle.client() as client:
        assert set_status(client, handle.stream, issue["fingerprint"], "resolved")
    error(exception=raised(KeyError("card")))
    again = notified(receiver, "new-errors", 3)[2]
    assert [(i["fingerprint"], i["how"]) for i in again["issues"]] == [(issue["fingerprint"], "regressed")]
    assert notified(receiver, "new-errors", 4)[3]["state"] == "resolved"
    with handle.client() as client:  # resolved again: its next record is a regression to tell again
        assert set_status(client, handle.stream, issue["fingerprint"], "resolved")
    wait_for(lambda: told_of(handle, "new-errors", issue["fingerprint"]) == "new", what="seen resolved")
    error(exception=raised(KeyError("card")))
    third = notified(receiver, "new-errors", 5)[4]
    assert [(i["fingerprint"], i["how"]) for i in third["issues"]] == [(issue["fingerprint"], "regressed")]
    assert states(receiver, "new-errors") == ["firing", "resolved", "firing", "resolved", "firing"]


def told_of(handle: RedisHandle, rule: str, fingerprint: str) -> str:
    """How a new_issue rule last told of a fingerprint, as its state holds it."""
    with handle.client() as client:
        return str(client.hget(AlertKeys(handle.stream).state(rule), f"issue:{fingerprint}") or "")


def test_a_webhook_answering_500_then_200_gets_it_once_and_no_secret_is_shown(
    kinds: tuple[RedisHandle, Runner, RecordWriter], receiver: WebhookReceiver
) -> None:
    handle, runner, writer = kinds
    receiver.fail_next("/flaky", 500)
    writer.log("something", service="f")
    wait_for(lambda: receiver.accepted("/flaky", "flaky"), what="the retried notification")
    first, second = [hook for hook in receiver.attempts("/flaky") if hook.body["rule"] == "flaky"]
    assert (first.status, second.status) == (500, 200)
    (flaky_id,) = ids(handle, "flaky", 1)
    assert first.body["id"] == second.body["id"] == flaky_id
    assert second.headers["Idempotency-Key"] == f"{flaky_id}:flaky"
    assert second.headers["Authorization"].startswith("Basic ")

    def outcomes() -> list[str]:
        with handle.client() as client:
            deliveries = client.xrange(AlertKeys(handle.stream).deliveries)
        return [f["outcome"] for _, f in deliveries if f["rule"] == "flaky"]

    # the runner records the delivery once the answer is back, after the receiver has it
    wait_for(lambda: "delivered" in outcomes(), what="the delivery recorded")
    assert outcomes() == ["retrying", "delivered"]
    with handle.client() as client:
        recorded = "".join(str(f) for _, f in client.xrange(AlertKeys(handle.stream).deliveries))
    assert "HTTP 500" in runner.stderr() and flaky_id in runner.stderr()
    for shown in (runner.stderr(), recorded):
        assert SECRET_PASSWORD not in shown and SECRET_TOKEN not in shown
    assert "http://127.0.0.1:" in recorded and "/***" in recorded


def test_a_resolve_waits_for_the_firing_its_webhook_failed(
    kinds: tuple[RedisHandle, Runner, RecordWriter], receiver: WebhookReceiver
) -> None:
    """The firing fails twice (retried 1 s, then 2 s later); the resolve, decided a second after
    it, went out in between, so the channel's last word was `firing` for a rule long ok. It
    waits behind the firing, and both arrive, in order."""
    _, _, writer = kinds
    receiver.fail_next("/flaky", 500, 500)
    writer.log("one order failed", service="o")
    arrived = wait_for(
        lambda: (found := receiver.accepted("/flaky", "ordered"))[1:] and found, 20, what="firing and resolve"
    )
    assert [body["state"] for body in arrived] == ["firing", "resolved"]
    attempts = [
        (hook.status, hook.body["state"])
        for hook in receiver.attempts("/flaky")
        if hook.body["rule"] == "ordered"
    ]
    assert attempts == [(500, "firing"), (500, "firing"), (200, "firing"), (200, "resolved")]


def test_a_webhook_that_hangs_holds_up_no_other_target(
    kinds: tuple[RedisHandle, Runner, RecordWriter], receiver: WebhookReceiver
) -> None:
    """One target's post hangs (under the 5 s timeout): another target's notification, decided
    meanwhile, goes out at once, where it used to wait for the hanging post."""
    _, _, writer = kinds
    gate = receiver.hold("/sluggish")
    try:
        writer.log("stuck", service="h")
        wait_for(lambda: receiver.attempts("/sluggish"), what="the post the webhook holds")
        writer.log("next", service="p")
        wait_for(lambda: receiver.accepted("/hook", "prompt"), 3, what="the other target's notification")
    finally:
        gate.set()
    wait_for(lambda: receiver.accepted("/sluggish", "stuck"), what="the held notification, answered")


def test_a_redirect_is_not_followed_with_the_credentials(
    kinds: tuple[RedisHandle, Runner, RecordWriter], receiver: WebhookReceiver
) -> None:
    handle, runner, writer = kinds
    receiver.fail_next("/flaky", 302)
    writer.log("moving", service="v")
    wait_for(
        lambda: receiver.accepted("/flaky", "moved"), what="the notification, retried after the redirect"
    )
    assert [h.status for h in receiver.attempts("/flaky") if h.body["rule"] == "moved"] == [302, 200]
    assert receiver.attempts("/elsewhere") == []
    assert f"{ids(handle, 'moved', 1)[0]} to flaky: HTTP 302" in runner.stderr()


def test_any_rule_name_reaches_the_webhook(
    kinds: tuple[RedisHandle, Runner, RecordWriter], receiver: WebhookReceiver
) -> None:
    handle, _, writer = kinds
    writer.log("hello", service="u")
    wait_for(lambda: receiver.accepted("/hook", "café → <b>"), what="the notification")
    (hook,) = [h for h in receiver.attempts("/hook") if h.body["rule"] == "café → <b>"]
    armed = ids(handle, "café → <b>", 1)[0].split(":")[-2]
    assert hook.headers["Idempotency-Key"] == f"caf%C3%A9%20%E2%86%92%20%3Cb%3E:{armed}:1:ops"


# ---------------------------------------------------------------------------
# several runners, restarts


def rate_rule(name: str, service: str, window: str, above: int) -> dict[str, Any]:
    return {"name": name, "kind": "rate", "filter": {"service": service}, "window": window, "above": above,
            "notify": "ops"}  # fmt: skip


def test_two_runners_send_each_notification_exactly_once(
    redis_server: EmbeddedRedis, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    handle = fresh_handle(redis_server)
    rules = rule_file(tmp_path, receiver, [rate_rule("shared", "two", "1s", 9)])
    writer = RecordWriter(handle)
    with running(handle, rules, "a"), running(handle, rules, "b"):
        for round_number in (1, 2):
            for i in range(10):  # one write each: both runners may read some, and they count together
                writer.log(f"order {i}", service="two")
            expected = ["firing", "resolved"] * round_number
            wait_for(partial(has_states, receiver, "shared", expected), 10, what=f"round {round_number}")
        wait_for(lambda: settled(handle), what="the outbox drained")
        with handle.client() as client:
            consumers = {c["name"] for c in client.xinfo_consumers(handle.keys.logs, "tracestream-alerts")}
    writer.close()
    bodies = receiver.accepted("/hook", "shared")
    assert [b["state"] for b in bodies] == ["firing", "resolved", "firing", "resolved"]
    assert [b["id"] for b in bodies] == ids(handle, "shared", 1, 2, 3, 4)
    # Round 2 starts once "resolved" is seen, when no more than 9 of round 1's records were left
    # in the 1 s window (the rule fires above 9): it counts 10 to 19. Counted by both runners, it
    # would be 20 or more.
    first_round, second_round = (b["value"] for b in bodies[::2])
    assert first_round == 10 and 10 <= second_round <= 19, (first_round, second_round)
    assert consumers == {"a", "b"}


def test_kill_9_and_restart_neither_resends_nor_misses(
    redis_server: EmbeddedRedis, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    handle = fresh_handle(redis_server)
    rules = rule_file(
        tmp_path,
        receiver,
        [
            rate_rule("before", "k1", "1s", 1),
            {"name": "late", "kind": "match", "filter": {"service": "k3"}, "cooldown": "1s", "notify": "ops"},
            rate_rule("during", "k2", "30s", 1),
        ],
    )
    writer = RecordWriter(handle)
    with running(handle, rules, "first") as first:
        writer.log("one", service="k1")
        writer.log("two", service="k1")
        notified(receiver, "before", 1)
        # Delivered and marked sent (a kill between the endpoint's answer and that mark would re-send:
        # docs/alerts.md, Delivery).
        wait_for(lambda: settled(handle), what="the delivery recorded")
        first.kill()
    # While no runner runs: `before` is due to resolve, and `during` to fire on records written now.
    down_at = time.monotonic()
    writer.log("three", service="k2")
    writer.log("four", service="k2")
    writer.log("read after its cooldown has passed", service="k3")
    wait_for(lambda: time.monotonic() - down_at > 1.5, what="the window of `before` to pass")
    with running(handle, rules, "second"):
        notified(receiver, "before", 2)
        notified(receiver, "during", 1)
        notified(receiver, "late", 2)
        wait_for(lambda: settled(handle), what="the outbox drained")
    writer.close()
    fired, resolved = ids(handle, "before", 1, 2)
    assert [(b["id"], b["state"]) for b in receiver.accepted("/hook", "before")] == [
        (fired, "firing"),
        (resolved, "resolved"),
    ]
    assert [(b["id"], b["state"], b["value"]) for b in receiver.accepted("/hook", "during")] == [
        (ids(handle, "during", 1)[0], "firing", 2)
    ]
    assert [(b["state"], b["count"]) for b in receiver.accepted("/hook", "late")] == [
        ("firing", 1),
        ("resolved", 1),
    ]


def test_work_a_dead_runner_held_is_taken_over(
    redis_server: EmbeddedRedis, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """Records read but never counted, and a notification taken but never sent, by a runner that died."""
    handle = fresh_handle(redis_server)
    rules = rule_file(tmp_path, receiver, [rate_rule("orphans", "o", "30s", 2)])
    keys = AlertKeys(handle.stream)
    left = {"id": "left-behind:7", "rule": "left-behind", "state": "firing"}
    with handle.client() as client:
        client.xgroup_create(handle.keys.logs, "tracestream-alerts", id="$", mkstream=True)
        client.xgroup_create(keys.outbox, "tracestream-alerts-delivery", id="$", mkstream=True)
        writer = RecordWriter(handle)
        writer.write(*[writer.row(f"orphan {i}", service="o") for i in range(3)])
        writer.close()
        client.xadd(keys.outbox, {"target": "ops", "payload": orjson.dumps(left), "attempt": "1"})
        client.xadd(keys.outbox, {"target": "renamed", "payload": orjson.dumps(left), "attempt": "1"})
        # The dead runner's reads: pending in both groups under its name, never acknowledged.
        assert len(client.xreadgroup("tracestream-alerts", "dead", {handle.keys.logs: ">"})[0][1]) == 3
        assert len(client.xreadgroup("tracestream-alerts-delivery", "dead", {keys.outbox: ">"})[0][1]) == 2
    with running(handle, rules, "heir"):
        firing = notified(receiver, "orphans", 1)[0]
        wait_for(lambda: receiver.accepted("/hook", "left-behind"), what="the claimed notification")
        wait_for(lambda: settled(handle), what="the outbox drained")
    assert (firing["state"], firing["value"]) == ("firing", 3)
    assert receiver.accepted("/hook", "left-behind") == [left]
    command = [str(VENV_BIN / "tracestream"), "alerts", "status", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=handle.env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    shown = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [(s["rule"], s["status"], s["seq"]) for s in shown if "rule" in s] == [("orphans", "firing", "1")]
    failed = [s["failed_delivery"] for s in shown if "failed_delivery" in s]
    assert [(f["id"], f["target"], f["error"]) for f in failed] == [
        ("left-behind:7", "renamed", "no such target in the rule file")
    ]
    doctor = [str(VENV_BIN / "tracestream"), "doctor", "--json"]
    done = subprocess.run(doctor, capture_output=True, text=True, env=handle.env(), cwd=ROOT)
    alerts = [orjson.loads(line) for line in done.stdout.splitlines() if '"alerts"' in line]
    assert [(a["status"], "left-behind:7 to renamed" in a["detail"]) for a in alerts] == [("warn", True)]


def test_a_redis_restart_is_told_and_rules_fire_again_after_it(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """Reading, evaluating and delivering each run on their own; all three come back."""
    with EmbeddedRedis() as server:
        handle = fresh_handle(server)
        rule = {"name": "restarted", "kind": "match", "filter": {"service": "rs"}, "cooldown": "5s"}
        rules = rule_file(tmp_path, receiver, [{**rule, "notify": "ops"}])
        with running(handle, rules) as runner:
            writer = RecordWriter(handle)
            writer.log("before", service="rs")
            notified(receiver, "restarted", 1)
            writer.close()
            server.stop()
            wait_for(lambda: "cannot reach Redis" in runner.stderr(), what="the outage told")
            wait_for(lambda: "cannot evaluate rules" in runner.stderr(), what="the evaluation's outage told")
            server.start()
            wait_for(lambda: "Redis is reachable again" in runner.stderr(), what="the recovery told")
            writer = RecordWriter(handle)
            writer.log("after", service="rs")
            after = notified(receiver, "restarted", 3)[2]  # after the resolve of the firing Redis forgot
            writer.close()
            assert runner.process.poll() is None, runner.stderr()
    assert (after["state"], [s["body"] for s in after["samples"]]) == ("firing", ["after"])


def test_a_rule_state_redis_refuses_stops_the_runner_in_one_line(
    redis_server: EmbeddedRedis, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """A refusal that waiting cannot mend, met by the evaluation thread, ends the process."""
    handle = fresh_handle(redis_server)
    rules = rule_file(tmp_path, receiver, [rate_rule("clobbered", "c", "30s", 5)])
    runner = Runner(handle, rules, "a")
    try:
        with handle.client() as client:
            state = AlertKeys(handle.stream).state("clobbered")
            client.delete(state)
            client.set(state, "not a hash")
        runner.process.wait(10)
        lines = runner.stderr().splitlines()
    finally:
        runner.stop()
    assert runner.process.returncode == 1
    assert lines[-1].startswith("tracestream: ") and "WRONGTYPE" in lines[-1], lines


# ---------------------------------------------------------------------------
# check and test


GOOD_RULE = {
    "name": "r1",
    "kind": "rate",
    "filter": {"service": "api"},
    "window": "30s",
    "above": 5,
    "notify": ["ops"],
}
BAD_RULES = [
    ({"window": "30 parsecs"}, "rule 'r1': field 'window'"),
    ({"kind": "sometimes"}, "rule 'r1': field 'kind'"),
    ({"kind": "new_issue"}, "rule 'r1': field 'above': not a field of a new_issue rule"),
    ({"above": "many"}, "rule 'r1': field 'above'"),
    ({"filter": {"severity": "LOUD"}}, "rule 'r1': field 'filter.severity'"),
    ({"filter": {"regex": "(a)\\1"}}, "rule 'r1': field 'filter.regex'"),
    ({"filter": {"colour": "red"}}, "rule 'r1': field 'filter.colour'"),
    ({"notify": ["pager"]}, "rule 'r1': field 'notify'"),
    ({"for": "-1s"}, "rule 'r1': field 'for'"),
    ({"percentile": 99}, "rule 'r1': field 'percentile': not a field of a rate rule"),
    ({"kind": "absence"}, "rule 'r1': field 'above': not a field of an absence rule"),
    # counted in buckets of 100 ms or more: a shorter window is one bucket, empty as it starts
    ({"window": "1ms"}, "rule 'r1': field 'window': at least 100ms: records are counted in 100ms steps"),
    # a latency's value is in ms: 500 meant as ms would read as seconds, and never fire
    ({"kind": "latency", "above": 500}, "rule 'r1': field 'above': a duration with its unit, e.g. 500ms"),
    ({"kind": "latency", "above": "0.5"}, "rule 'r1': field 'above': a duration with its unit"),
    # as with --since, a bare number could mean seconds or minutes
    ({"window": 30}, "rule 'r1': field 'window': 30 needs its unit, as in 30s, 5m or 1h"),
    ({"repeat": "60"}, "rule 'r1': field 'repeat': '60' needs its unit"),
    # an empty filter value read as no filter: every service's records matched
    ({"filter": {"service": ""}}, "rule 'r1': field 'filter.service': is empty: leave the key out"),
    ({"filter": {"service": ["api", "  "]}}, "rule 'r1': field 'filter.service': is empty"),
    ({"filter": {"text": ""}}, "rule 'r1': field 'filter.text': is empty"),
]


@pytest.mark.parametrize(("change", "message"), BAD_RULES)
def test_check_names_the_bad_rule_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], message: str
) -> None:
    path = tmp_path / "rules.yaml"
    secret_url = f"https://user:{SECRET_PASSWORD}@hooks.example/T1/{SECRET_TOKEN}"
    path.write_text(
        yaml.safe_dump({"notify": {"ops": {"webhook": secret_url}}, "rules": [{**GOOD_RULE, **change}]})
    )
    assert main(["alerts", "check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert message in captured.err
    lines = path.read_text().splitlines()
    first_rule = next(number for number, line in enumerate(lines, 1) if line.startswith("- "))
    assert f"{path}:{first_rule}: rule 'r1'" in captured.err  # where in the file, as YAML's own errors say
    assert SECRET_PASSWORD not in captured.err and SECRET_TOKEN not in captured.err


def test_a_key_written_twice_in_a_rule_is_refused_where_it_is(tmp_path: Path) -> None:
    """YAML keeps the second `above` without a word: the rule fired at 50, not 5."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "notify:\n  ops:\n    webhook: http://127.0.0.1:9/h\n"
        "rules:\n  - name: r1\n    kind: rate\n    filter: {service: api}\n    window: 30s\n"
        "    above: 5\n    above: 50\n    notify: [ops]\n"
    )
    with pytest.raises(RuleError, match=rf"^{re.escape(str(path))}:10: key 'above' written twice"):
        load_rules(path)


def test_rules_may_share_settings_through_yaml_merge_keys(tmp_path: Path) -> None:
    """An anchor's keys merged in (`<<: *base`) and one of them set again is YAML's own way to
    share settings, not a key written twice."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "notify:\n  ops:\n    webhook: http://127.0.0.1:9/h\n"
        "rules:\n  - &base\n    name: r1\n    kind: rate\n    filter: {service: api}\n"
        "    window: 30s\n    above: 5\n    notify: [ops]\n"
        "  - <<: *base\n    name: r2\n    filter: {service: web}\n    above: 50\n"
    )
    first, second = load_rules(path).rules
    assert (first.name, first.above, second.name, second.above) == ("r1", 5, "r2", 50)
    assert (second.kind, second.window_ms, second.notify) == ("rate", 30_000, ("ops",))


def test_a_new_issue_rule_picks_issues_by_service_only() -> None:
    notify = {"ops": {"webhook": "http://127.0.0.1:9/hook"}}
    rule = {"name": "r1", "kind": "new_issue", "filter": {"severity": "ERROR"}, "notify": "ops"}
    with pytest.raises(RuleError, match=r"^rule 'r1': field 'filter\.severity': a new_issue rule picks"):
        parse_rules({"notify": notify, "rules": [rule]})
    unfiltered = parse_rules({"notify": notify, "rules": [rule | {"filter": {}}]})
    assert unfiltered.rules[0].describe() == "a new error issue, or one that regresses"


@pytest.mark.parametrize("password", ["123/abc", "ab/cd", "x?y", "x#y"])
def test_a_webhook_password_not_percent_encoded_is_refused_without_repeating_it(password: str) -> None:
    """`https://ops:123/abc@hooks.example/x` reads as host `ops`, port 123: the alert, and the
    rest of the password in its path, would have gone there."""
    notify = {"ops": {"webhook": f"https://ops:{password}@hooks.example.com/x"}}
    with pytest.raises(RuleError) as refused:
        parse_rules({"notify": notify, "rules": [GOOD_RULE]})
    message = str(refused.value)
    assert message.startswith("notify 'ops': field 'webhook': ") and password not in message
    assert "the password may need percent-encoding ('/' as %2F, '@' as %40" in message
    assert parse_rules(
        {"notify": {"ops": {"webhook": "https://ops:123%2Fabc@hooks.example.com/x"}}, "rules": [GOOD_RULE]}
    )


def test_check_hides_a_bad_webhook_url_and_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        yaml.safe_dump(
            {"notify": {"ops": {"webhook": f"ftp://u:{SECRET_PASSWORD}@x/"}}, "rules": [GOOD_RULE]}
        )
    )
    done = subprocess.run(
        [str(VENV_BIN / "tracestream"), "alerts", "check", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert (
        done.stderr
        == f"tracestream: {path}: notify 'ops': field 'webhook': expected an http:// or https:// URL\n"
    )
    path.write_text(
        yaml.safe_dump({"notify": {"ops": {"webhook": "http://127.0.0.1:9/h"}}, "rules": [GOOD_RULE]})
    )
    done = subprocess.run(
        [str(VENV_BIN / "tracestream"), "alerts", "check", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "r1: rate over 30s, fires on more than 5 matching records in 30s; notifies ops"
    )
    assert done.stderr == "1 rule OK\n"


def test_backtest_prints_when_rules_would_have_fired_and_resolved(
    stream: RedisHandle, tmp_path: Path
) -> None:
    writer = RecordWriter(stream)
    ago_ns = time.time_ns() - 20 * 10**9
    rows = []
    for i in range(4):
        row = writer.row(f"timeout {i}", service="api", severity="ERROR", trace_id=0x55)
        row[TS_FIELD] = str(ago_ns + i * 10**8)
        rows.append(row)
    writer.write(*rows)
    writer.close()
    path = tmp_path / "rules.yaml"
    rule = {**GOOD_RULE, "window": "2s", "above": 3, "filter": {"service": "api", "severity": "ERROR"}}
    path.write_text(yaml.safe_dump({"notify": {"ops": {"webhook": "http://127.0.0.1:9/h"}}, "rules": [rule]}))
    command = [str(VENV_BIN / "tracestream"), "alerts", "test", str(path), "--since", "1m", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=stream.env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    found = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [(n["rule"], n["state"]) for n in found] == [("r1", "firing"), ("r1", "resolved")]
    assert found[0]["value"] == 4 and found[1]["value"] <= 3
    fired, resolved = (at_s(n) for n in found)
    # Fired at the first step after the fourth record; resolved at the first step after the oldest
    # record left the 2 s window (the count then drops to 3). Steps are 1 s, buckets 100 ms.
    first_record = ago_ns / 1e9
    assert 0.3 <= fired - first_record <= 1.3 + 0.1
    assert 2.0 - 0.1 <= resolved - first_record <= 3.0 + 0.1
    assert found[0]["samples"][0]["trace_id"] == format(0x55, "032x")
    with stream.client() as client:
        assert not client.keys(f"{stream.stream}:alerts*")  # a backtest writes nothing


def test_backtest_for_and_repeat(stream: RedisHandle, tmp_path: Path) -> None:
    """A condition that holds for 6 s of record time: fires once it held `for`, repeats every `repeat`."""
    writer = RecordWriter(stream)
    start_ns = (time.time_ns() - 30 * 10**9) // 10**9 * 10**9 + 5 * 10**8
    rows = []
    for i in range(60):
        row = writer.row(f"tick {i}", service="api")
        row[TS_FIELD] = str(start_ns + i * 10**8)
        rows.append(row)
    writer.write(*rows)
    writer.close()
    path = tmp_path / "rules.yaml"
    rule = {**GOOD_RULE, "window": "1s", "above": 0, "for": "2s", "repeat": "2s"}
    path.write_text(yaml.safe_dump({"notify": {"ops": {"webhook": "http://127.0.0.1:9/h"}}, "rules": [rule]}))
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_ns // 10**9 - 10))
    command = [str(VENV_BIN / "tracestream"), "alerts", "test", str(path), "--since", since, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=stream.env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    found = [orjson.loads(line) for line in done.stdout.splitlines()]
    offsets = [(n["state"], n["repeat"], round(at_s(n) - start_ns / 1e9, 1)) for n in found]
    # Steps fall 0.5 s after each record second: the condition is first seen at 0.5, has held 2 s at
    # 2.5, repeats 2 s after each send, and clears once the last record (5.9) is out of the window.
    assert offsets == [
        ("firing", False, 2.5),
        ("firing", True, 4.5),
        ("firing", True, 6.5),
        ("resolved", False, 7.5),
    ]


def test_a_match_rule_counts_over_its_cooldown_so_it_is_a_window_too() -> None:
    """A cooldown of 0s made a match rule that never fired: it counts its matches in no bucket."""
    rule = {"name": "r1", "kind": "match", "filter": {}, "cooldown": "0s", "notify": "ops"}
    with pytest.raises(RuleError, match=r"^rule 'r1': field 'cooldown': at least 100ms"):
        parse_rules({"notify": {"ops": {"webhook": "http://127.0.0.1:9/h"}}, "rules": [rule]})


@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        (["run", "--rules"], "field 'window': 200ms is shorter than --tick 250ms"),
        (["test", "--step", "300ms"], "field 'window': 200ms is shorter than --step 300ms"),
    ],
)
def test_a_window_evaluations_would_step_over_is_refused_before_touching_redis(
    tmp_path: Path, command: list[str], refusal: str
) -> None:
    """Evaluated every 250 ms, a 200 ms window never read the records of the 50 ms between: a rate
    missed them, an absence fired while they came."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "notify": {"ops": {"webhook": "http://127.0.0.1:9/h"}},
                "rules": [{**GOOD_RULE, "window": "200ms"}],
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACESTREAM_")}
    done = subprocess.run(
        [str(VENV_BIN / "tracestream"), "alerts", *command, str(path), "--redis-url", "redis://127.0.0.1:1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2
    never = "so records between two evaluations would never be counted"
    assert done.stderr == f"tracestream: {path}: rule 'r1': {refusal}, {never}\n"


def test_runner_refuses_a_bad_file_before_touching_redis(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules: [\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACESTREAM_")}
    command = [
        str(VENV_BIN / "tracestream"),
        "alerts",
        "run",
        "--rules",
        str(path),
        "--redis-url",
        "redis://127.0.0.1:1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 2
    assert (
        done.stderr.startswith(f"tracestream: {path}: not valid YAML at line ")
        and done.stderr.count("\n") == 1
    )
