"""Alert figures under trace sampling estimate what the services logged (docs/alerts.md, docs/sampling.md).

A real service process, `configure()`d with `parentbased_traceidratio` at 0.1, writes its request
records; a real runner evaluates rules on them as they arrive, and the backtest replays them. Each
rule is one that counting stored records decides the other way: the figures must be weighted, and
say they are estimates.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.apps.alerts_webhook import WebhookReceiver
from tests.support import ROOT, VENV_BIN, RedisHandle, run_python, wait_for
from tests.test_alerts import fresh_handle, notified, rule_file, running
from tracestream.alerts.histogram import bin_of, bin_value, percentile
from tracestream.alerts.status import alerts_status
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.schema import LogEntry
from tracestream.settings import SAMPLE_WEIGHT
from tracestream.summary import sample_weight, weighted_count

FAST_MS, SLOW_MS = 5.0, 900.0
SAMPLED_SERVICE = f"""
import logging, random, tracestream
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from tracestream.integrations.record_writer import RecordWriter

random.seed(20261205)  # the SDK draws trace ids from `random`: the same traces are sampled each run
telemetry = tracestream.configure(service_name="front")
requests, tracer = RecordWriter("tracestream.http"), trace.get_tracer("t")

def request(route, severity, ms, context=None):
    with tracer.start_as_current_span("GET " + route, context=context):
        if route == "/card":
            logging.getLogger("shop").info("retrying the card")
        requests.emit("GET " + route, severity, {{"http.route": route, "http.server.duration_ms": ms}})

# The successes first and the failures last, so no rule holds on part of them and not on all.
for _ in range(400):
    request("/pay", SeverityNumber.INFO, {FAST_MS})
for _ in range(20):
    request("/pay", SeverityNumber.ERROR, {SLOW_MS})
# A caller that did not sample: its INFO line is held, then released by the 500 with weight 0.
unsampled = SpanContext(0x5EED, 0x1, is_remote=True, trace_flags=TraceFlags(0))
request("/card", SeverityNumber.ERROR, {SLOW_MS}, set_span_in_context(NonRecordingSpan(unsampled)))
assert telemetry.force_flush()
"""
SAMPLING_ENV = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
PAY = {"service": "front", "route": "/pay"}
RULES: list[dict[str, Any]] = [
    {"name": "pay-volume", "kind": "rate", "filter": PAY, "window": "5m", "above": 100,
     "notify": ["ops", "chat"]},
    {"name": "pay-errors", "kind": "ratio", "filter": PAY, "match": {"severity": "ERROR"}, "above": 0.2,
     "min_count": 10, "window": "5m", "notify": ["ops"]},
    {"name": "pay-slow", "kind": "latency", "filter": PAY, "percentile": 90, "above": "500ms",
     "window": "5m", "notify": ["ops"]},
    {"name": "card-retries", "kind": "match", "filter": {"text": "retrying the card"}, "cooldown": "30s",
     "notify": ["ops"]},
]  # fmt: skip
ABSENCE_WINDOW_S = 15
CARD_ABSENT = {"name": "card-absent", "kind": "absence", "filter": {"text": "retrying the card"},
               "window": f"{ABSENCE_WINDOW_S}s", "notify": ["ops"]}  # fmt: skip


@dataclass(frozen=True)
class Written:
    """The service's records, and what each rule's figure is when every record counts for its weight."""

    handle: RedisHandle
    started_s: float
    logs: list[LogEntry]

    def pay(self) -> list[LogEntry]:
        return [e for e in self.logs if e.service == "front" and e.attributes.get("http.route") == "/pay"]

    def pay_total(self) -> float:
        return weighted_count(e.attributes for e in self.pay())[0]

    def pay_errors(self) -> int:
        return sum(e.severity == "ERROR" for e in self.pay())


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running_receiver:
        yield running_receiver


@pytest.fixture(scope="module")
def written(
    redis_server: EmbeddedRedis, receiver: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Written]:
    """A runner reading the stream while the sampled service writes to it."""
    handle = fresh_handle(redis_server)
    rules = rule_file(tmp_path_factory.mktemp("alerts"), receiver, RULES)
    with running(handle, rules):
        started_s = time.time()
        run_python(SAMPLED_SERVICE, handle.env(**SAMPLING_ENV))
        written = Written(handle, started_s, handle.logs())
        weights = {(e.severity, sample_weight(e.attributes)) for e in written.pay()}
        assert weights == {("INFO", 10.0), ("ERROR", 1.0)}
        released = [e for e in written.logs if e.body == "retrying the card"]
        assert [e.attributes.get(SAMPLE_WEIGHT) for e in released] == [0.0]
        yield written


def rule_status(handle: RedisHandle, name: str) -> dict[str, Any]:
    with handle.client() as client:
        return next(rule for rule in alerts_status(client, handle.stream)["rules"] if rule["rule"] == name)


def final(handle: RedisHandle, name: str, value: float) -> dict[str, Any]:
    """The rule's state once its value counts every record written."""

    def counted() -> dict[str, Any] | None:
        status = rule_status(handle, name)
        return status if status["value"] is not None and abs(status["value"] - value) < 1e-6 else None

    return wait_for(counted, 20, what=f"{name} to count every record")


def test_a_rate_fires_on_the_estimated_count(written: Written, receiver: WebhookReceiver) -> None:
    assert len(written.pay()) <= 100 < written.pay_total()  # counted as stored, it would not fire
    fired = notified(receiver, "pay-volume", 1, timeout=20)[0]
    assert (fired["state"], fired["estimated"], fired["count_estimated"]) == ("firing", True, True)
    assert fired["value"] > 100 and fired["count"] == fired["value"]
    slack = wait_for(lambda: receiver.accepted("/slack"), what="the Slack-compatible notification")
    shown = f"(value ~{fired['value']:g}, ~{round(fired['count'])} matching)"
    assert "*pay-volume* firing" in slack[0]["text"] and shown in slack[0]["text"], slack[0]["text"]
    volume = final(written.handle, "pay-volume", written.pay_total())
    assert (volume["status"], volume["estimated"]) == ("firing", True)
    with written.handle.client() as client:
        told = alerts_status(client, written.handle.stream)["notifications"]
    pay = {(n["rule"], n["estimated"], n["count_estimated"]) for n in told if n["rule"].startswith("pay-")}
    assert pay == {("pay-volume", True, True)}


def test_a_ratio_weighs_its_numerator_and_denominator(written: Written) -> None:
    errors, total = written.pay_errors(), written.pay_total()
    assert errors / total <= 0.2 < errors / len(written.pay())  # counted as stored, it would fire
    ratio = final(written.handle, "pay-errors", round(errors / total, 6))
    assert (ratio["status"], ratio["changes"], ratio["estimated"]) == ("ok", 0, True)


def test_a_latency_percentile_weighs_each_duration(written: Written) -> None:
    """Failures are never sampled down: counted as stored, the slow ones would make up the p90."""
    errors, total = written.pay_errors(), written.pay_total()
    assert errors / len(written.pay()) > 0.1 > errors / total
    durations = {bin_of(FAST_MS): total - errors, bin_of(SLOW_MS): float(errors)}
    p90 = round(percentile(durations, 90)[0], 3)
    assert p90 == round(bin_value(bin_of(FAST_MS)), 3)
    slow = final(written.handle, "pay-slow", p90)
    assert (slow["status"], slow["changes"], slow["estimated"]) == ("ok", 0, True)


def test_a_record_released_by_an_error_fires_a_match_and_counts_nothing(
    written: Written, receiver: WebhookReceiver
) -> None:
    """Its weight is 0, so it adds nothing to an estimate, but it was written: a match fires on it."""
    fired = notified(receiver, "card-retries", 1, timeout=20)[0]
    figures = {name: fired[name] for name in ("value", "estimated", "count", "count_estimated")}
    assert figures == {"value": 0, "estimated": True, "count": 0, "count_estimated": True}
    assert fired["samples"][0]["body"] == "retrying the card"


def test_the_backtest_weighs_records_and_absence_sees_a_released_one(
    written: Written, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """Replayed over the same records, the same rules decide the same; an absence rule whose window
    holds only the weight-0 record does not fire: a record arrived."""
    path = rule_file(tmp_path, receiver, [*RULES, CARD_ABSENT])  # a backtest notifies no one
    # The rule is armed at the first step; it has watched its whole window at the last one, while
    # the record, written a few seconds after `since`, is still in it.
    since_s = int(written.started_s) - 3
    until_s = since_s + ABSENCE_WINDOW_S + 1
    command = [
        str(VENV_BIN / "tracestream"), "alerts", "test", str(path), "--json",
        "--since", _iso(since_s), "--until", _iso(until_s),
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, env=written.handle.env(), cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert sorted((n["rule"], n["state"], n["estimated"]) for n in found) == [
        ("card-retries", "firing", True),
        ("pay-volume", "firing", True),
    ]
    assert next(n for n in found if n["rule"] == "pay-volume")["value"] > 100


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
