"""`tracestream forward`: stream entries reach an OTLP/HTTP endpoint at least once, unchanged."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.otlp_receiver import OtlpReceiver, Received, Reply
from tests.support import ROOT, VENV_BIN, RedisHandle, run_python, wait_for
from tracestream import schema
from tracestream.exporters import encoding
from tracestream.forwarder import (
    DEFAULT_GROUP,
    Forwarder,
    ForwardError,
    ForwardSettings,
    forwarder_lag,
)
from tracestream.otlp_encoding import RECORD_ID
from tracestream.settings import shown_url


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@contextmanager
def forwarding(handle: RedisHandle, receiver: OtlpReceiver, **options: Any) -> Iterator[Forwarder]:
    """A forwarder running on a thread of the test process."""
    options = {"block": 0.1, "claim_idle": 1.0, **options}
    settings = ForwardSettings(redis_url=handle.url, stream=handle.stream, endpoint=receiver.url, **options)
    forwarder = Forwarder(settings, report=lambda line: None)
    thread = threading.Thread(target=forwarder.run, daemon=True)
    thread.start()
    try:
        yield forwarder
    finally:
        forwarder.stop()
        thread.join(15)
    assert not thread.is_alive()


def seed_logs(handle: RedisHandle, count: int) -> list[str]:
    """Write `count` log entries the way the exporter lays them out; returns their record ids."""
    resource = encoding.EncodedResource(
        schema.dump_json({"service.name": "seeded", "process.pid": 7}), "seeded"
    )
    ids = schema.RecordIds()
    record_ids = []
    with handle.client() as client:
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            record_id = ids.next()
            now = time.time_ns()
            values = encoding.log_values(
                record_id, now, "INFO", 9, f"record {i}", resource, i + 1, i + 1, 1,
                "seed", "", {"i": i}, encoding.NO_EXCEPTION,
            )  # fmt: skip
            pipe.xadd(handle.keys.logs, dict(zip(schema.LOG_FIELDS, values, strict=True)))
            record_ids.append(record_id)
        pipe.execute()
    return record_ids


def arrived(receiver: OtlpReceiver, wanted: list[str]) -> bool:
    return set(wanted) <= set(receiver.record_ids())


def pending(handle: RedisHandle) -> int:
    return sum(lag.pending for lag in forwarder_lag(handle.client(), handle.stream))


# A service that writes what a real one does: attributes of every JSON type, an exception, events.
SERVICE = """
import logging, tracestream
from opentelemetry import trace
telemetry = tracestream.configure(service_name="roundtrip", service_version="3.1")
log = logging.getLogger("shop.checkout")
tracer = trace.get_tracer("shop.tracer")
with tracer.start_as_current_span("checkout", kind=trace.SpanKind.SERVER) as span:
    span.set_attribute("cart.items", 3)
    span.add_event("paid", {"amount": 12.5})
    log.info("paying %s", "bob", extra={"user": "bob", "vip": True, "ratio": 0.25, "tags": ["a", "b"],
                                        "nested": {"k": [1, None]}})
    with tracer.start_as_current_span("charge", kind=trace.SpanKind.CLIENT) as child:
        child.set_status(trace.Status(trace.StatusCode.ERROR, "card declined"))
        try:
            raise ValueError("declined")
        except ValueError:
            log.exception("charge failed")
log.warning("outside any span")
telemetry.force_flush()
"""


def test_records_round_trip_with_identical_ids_and_fields(
    stream: RedisHandle, receiver: OtlpReceiver
) -> None:
    run_python(SERVICE, stream.env())
    logs, spans = stream.logs(), stream.spans()
    assert (len(logs), len(spans)) == (3, 2)
    with forwarding(stream, receiver):
        wait_for(lambda: arrived(receiver, [e.record_id for e in logs]), what="the log records")
        wait_for(lambda: {s.record_id for s in spans} <= set(receiver.record_ids("spans")), what="spans")
    got = {r.attributes[RECORD_ID]: r for r in receiver.logs}
    for entry in logs:
        _assert_same_log(entry, got[entry.record_id])
    got_spans = {r.attributes[RECORD_ID]: r for r in receiver.spans}
    for span_entry in spans:
        _assert_same_span(span_entry, got_spans[span_entry.record_id])
    assert got[logs[0].record_id].attributes["nested"] == {"k": [1, None]}
    assert pending(stream) == 0


def _assert_same_log(entry: schema.LogEntry, received: Received) -> None:
    record = received.record
    assert record.trace_id.hex() == entry.trace_id and record.span_id.hex() == entry.span_id
    assert record.time_unix_nano == record.observed_time_unix_nano == entry.timestamp_ns
    assert (record.severity_text, record.severity_number) == (entry.severity, entry.severity_number)
    assert record.body.string_value == entry.body and record.flags == entry.trace_flags
    assert (received.resource, received.scope) == (entry.resource, entry.scope)
    attributes = received.attributes
    code = encoding.code_location(
        attributes.pop("code.file.path"),
        attributes.pop("code.line.number"),
        attributes.pop("code.function.name"),
    )
    assert code == entry.code
    exception = tuple(attributes.pop(key, "") for key in schema.EXCEPTION_KEYS)
    assert exception == (entry.exception_type, entry.exception_message, entry.exception_stacktrace)
    attributes.pop(RECORD_ID)
    assert attributes == entry.attributes


def _assert_same_span(entry: schema.SpanEntry, received: Received) -> None:
    span = received.record
    assert (span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex()) == (
        entry.trace_id,
        entry.span_id,
        entry.parent_span_id,
    )
    assert span.name == entry.name and Span.SpanKind.Name(span.kind) == f"SPAN_KIND_{entry.kind}"
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (entry.start_ns, entry.end_ns)
    assert Status.StatusCode.Name(span.status.code) == f"STATUS_CODE_{entry.status}"
    assert span.status.message == entry.status_message
    assert (received.resource, received.scope) == (entry.resource, entry.scope)
    attributes = received.attributes
    attributes.pop(RECORD_ID)
    assert attributes == entry.attributes
    events = [
        {"name": e.name, "ts": e.time_unix_nano, "attributes": Received({}, "", e).attributes}
        for e in span.events
    ]
    assert events == entry.events


def test_429_and_503_are_retried_honouring_retry_after(stream: RedisHandle, receiver: OtlpReceiver) -> None:
    wanted = seed_logs(stream, 20)
    first = len(receiver.attempts)
    receiver.fail_next(Reply(429, "1"), Reply(503, "0"))
    with forwarding(stream, receiver) as forwarder:
        wait_for(lambda: arrived(receiver, wanted), what="records after the retries")
        wait_for(lambda: pending(stream) == 0, what="the batch acknowledged")
    attempts = [a for a in receiver.attempts[first:] if a.path == "/v1/logs"]
    assert [a.status for a in attempts[:3]] == [429, 503, 200]
    assert attempts[1].at - attempts[0].at >= 0.9, "Retry-After: 1 was not honoured"
    assert forwarder.progress.retries == 2 and forwarder.progress.logs == 20
    assert sorted(receiver.record_ids()).count(wanted[0]) == 1


def test_a_timed_out_request_is_one_attempt_never_posted_again_at_once(stream: RedisHandle) -> None:
    """A receiver slower than the timeout has the request already: only the backoff sends it again."""
    seed_logs(stream, 10)
    with OtlpReceiver() as slow:
        slow.hold()
        with forwarding(stream, slow, timeout=0.3, max_backoff=0.5, shutdown_grace=0.1) as forwarder:
            wait_for(lambda: slow.held >= 4, 20, what="four requests")
        wait_for(lambda: slow.held == forwarder.progress.retries + 1, 2, what="one request per attempt")


def test_rejected_batch_goes_to_dead_letter_and_auth_failure_stops(
    stream: RedisHandle, receiver: OtlpReceiver
) -> None:
    wanted = seed_logs(stream, 5)
    receiver.fail_next(Reply(400))
    with forwarding(stream, receiver) as forwarder:
        wait_for(lambda: forwarder.progress.dead_lettered == 5, what="the rejected batch dead-lettered")
        wait_for(lambda: pending(stream) == 0, what="the rejected batch acknowledged")
    with stream.client() as client:
        dead = client.xrange(stream.keys.logs + ":forward:dead")
    assert [fields["rid"] for _, fields in dead] == wanted
    assert dead[0][1]["forward_error"].startswith("HTTP 400")

    more = seed_logs(stream, 3)
    receiver.fail_next(Reply(401))
    settings = ForwardSettings(redis_url=stream.url, stream=stream.stream, endpoint=receiver.url, block=0.1)
    with pytest.raises(ForwardError, match="answered HTTP 401"):
        Forwarder(settings, report=lambda line: None).run()
    assert pending(stream) == 3 and not set(more) & set(receiver.record_ids())


class ForwarderProcess:
    """`tracestream forward` as a real process, its output collected line by line."""

    def __init__(self, handle: RedisHandle, receiver: OtlpReceiver, *args: str) -> None:
        command = [str(VENV_BIN / "tracestream"), "forward", "--endpoint", receiver.url, *args]
        self.process = subprocess.Popen(
            command, env=handle.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        self.lines.extend(self.process.stdout)

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def finish(self, timeout: float = 20) -> str:
        self.process.wait(timeout)
        self._reader.join(timeout)
        return "".join(self.lines)


def test_forwarder_killed_mid_batch_loses_nothing(stream: RedisHandle, receiver: OtlpReceiver) -> None:
    wanted = seed_logs(stream, 3000)
    held = receiver.held
    receiver.hold()
    killed = ForwarderProcess(stream, receiver, "--batch-size", "500", "--claim-idle", "1s")
    try:
        wait_for(lambda: receiver.held > held, 30, what="the first batch in flight")
        assert pending(stream) >= 500
    finally:
        killed.process.send_signal(signal.SIGKILL)
        killed.finish()
        receiver.release()
    lag = forwarder_lag(stream.client(), stream.stream)[0]
    assert lag.pending >= 500 and lag.oldest_pending_age is not None and lag.oldest_pending_age >= 0
    assert lag.undelivered == 3000 - lag.pending
    doctor = subprocess.run(
        [str(VENV_BIN / "tracestream"), "doctor", "--json"], env=stream.env(), capture_output=True, text=True
    )
    found = [json.loads(line) for line in doctor.stdout.splitlines()]
    forwarder_lines = [f["detail"] for f in found if f["check"] == "forwarder"]
    assert f"{lag.pending} pending" in forwarder_lines[0] and "not yet read" in forwarder_lines[0]

    with forwarding(stream, receiver, batch_size=500) as second:
        wait_for(
            lambda: arrived(receiver, wanted), timeout=20, what="every record, from the second forwarder"
        )
        wait_for(lambda: pending(stream) == 0, what="nothing left pending")
    assert second.progress.claimed >= 500
    assert forwarder_lag(stream.client(), stream.stream)[0].undelivered == 0


def test_the_start_line_names_the_redis_it_reads(stream: RedisHandle, receiver: OtlpReceiver) -> None:
    forwarder = ForwarderProcess(stream, receiver)
    try:
        wait_for(lambda: forwarder.said("forwarding "), 20, what="the start line")
    finally:
        forwarder.process.send_signal(signal.SIGTERM)
        forwarder.finish()
    start = next(line for line in forwarder.lines if "forwarding " in line)
    assert f" from {shown_url(stream.url)} to {receiver.url}/v1/logs " in start, start


def test_sigterm_finishes_the_batch_in_flight(stream: RedisHandle, receiver: OtlpReceiver) -> None:
    wanted = seed_logs(stream, 200)
    held = receiver.held
    receiver.hold()
    forwarder = ForwarderProcess(stream, receiver, "--batch-size", "200")
    try:
        wait_for(lambda: receiver.held > held, 30, what="a batch in flight")
        forwarder.process.send_signal(signal.SIGTERM)
        wait_for(
            lambda: forwarder.said("SIGTERM: stopping"), what="the signal taken while the request is open"
        )
    finally:
        receiver.release()  # the held request gets 503: the forwarder retries it before exiting
    output = forwarder.finish()
    assert forwarder.process.returncode == 0, output
    assert arrived(receiver, wanted), output
    assert pending(stream) == 0
    assert "stopped: forwarded 200 logs" in output


def test_lag_is_empty_before_any_forwarder_ran(stream: RedisHandle) -> None:
    seed_logs(stream, 1)
    assert forwarder_lag(stream.client(), stream.stream, DEFAULT_GROUP) == []


def test_forwarders_in_one_group_share_the_load(stream: RedisHandle, receiver: OtlpReceiver) -> None:
    # One process, so the consumer names are given; separate processes default to host-pid.
    with (
        forwarding(stream, receiver, batch_size=50, consumer="one") as one,
        forwarding(stream, receiver, batch_size=50, consumer="two") as two,
    ):
        wanted = seed_logs(stream, 2000)
        wait_for(lambda: arrived(receiver, wanted), what="every record, from both forwarders")
        wait_for(lambda: pending(stream) == 0, what="everything acknowledged")
    assert one.progress.logs > 0 and two.progress.logs > 0
    assert one.progress.logs + two.progress.logs == 2000


def _well_formed() -> dict[str, str]:
    resource = schema.dump_json({"service.name": "hostile"})
    return {"v": "1", "rid": "", "ts": "1", "observed_ts": "1", "severity": "INFO", "severity_number": "9",
            "body": "b", "resource": resource, "trace_id": "", "span_id": "", "trace_flags": "0",
            "scope": "s", "code": "", "attributes": "{}", "service": "hostile"}  # fmt: skip


def _hostile_entries() -> dict[str, dict[str, str]]:
    """Entries another writer, an older schema or an app's odd timestamps can leave in the stream."""
    base = _well_formed()
    return {
        "negative ts": {**base, "ts": "-5"},
        "ts past 2**64": {**base, "ts": str(2**64 + 1)},
        "flags past 2**32": {**base, "trace_flags": str(2**40)},
        "resource not JSON": {**base, "resource": "{not json"},
        "deep attributes": {**base, "attributes": '{"a":' * 900 + "1" + "}" * 900},
        "odd trace id": {**base, "trace_id": "xyz"},
    }


def test_entries_that_cannot_be_encoded_are_dead_lettered_and_the_rest_flows(
    stream: RedisHandle, receiver: OtlpReceiver
) -> None:
    hostile = _hostile_entries()
    with stream.client() as client:
        for name, fields in hostile.items():
            client.xadd(stream.keys.logs, {**fields, "rid": name, "body": name})
        client.xadd(stream.keys.logs, {**_well_formed(), "rid": "control"})
        span = {
            **dict.fromkeys(schema.SPAN_FIELDS, ""),
            **{"v": "1", "rid": "bad events", "trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "n"},
            **{"kind": "SERVER", "start_ts": "-1", "end_ts": "2", "status": "OK", "attributes": "{}"},
            **{"events": '["not an event"]', "resource": schema.dump_json({"service.name": "hostile"})},
        }
        client.xadd(stream.keys.spans, span)
    wanted = [*seed_logs(stream, 3), "control"]
    with forwarding(stream, receiver) as forwarder:
        wait_for(lambda: arrived(receiver, wanted), what="the good records past the bad ones")
        wait_for(lambda: forwarder.progress.dead_lettered == len(hostile) + 1, what="every bad entry kept")
        wait_for(lambda: pending(stream) == 0, what="nothing left pending")
    with stream.client() as client:
        dead = {f["rid"]: f["forward_error"] for _, f in client.xrange(stream.keys.logs + ":forward:dead")}
        dead_spans = client.xrange(stream.keys.spans + ":forward:dead")
    assert set(dead) == set(hostile)
    assert all(reason.startswith("cannot encode entry: ") for reason in dead.values())
    assert [f["rid"] for _, f in dead_spans] == ["bad events"]
