"""A service exports to Redis and to OTLP at once, and neither path waits on the other."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.otlp_receiver import OtlpReceiver, SilentServer
from tests.support import ROOT, RedisHandle, run_python, run_python_process, wait_for
from tracestream.embedded_redis import free_port

# Logs five records inside a span, says so, then idles until the test is done with it.
SERVICE = """
import logging, sys, tracestream
from opentelemetry import trace
both = "redis_stream,otlp"
tracestream.configure(service_name="fan", logs_exporter=both, traces_exporter=both)
log = logging.getLogger("fan.out")
with trace.get_tracer("fan").start_as_current_span("work"):
    for i in range(5):
        log.info("record %d", i)
print("emitted", flush=True)
sys.stdin.read()
"""
# If either path could hold up the other, records would wait this long: far beyond our deadline.
HANG = "10"
PROMPTLY = 3.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def _start_service(env: dict[str, str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVICE],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "emitted", process.stderr.read() if process.stderr else ""
    return process


def test_hung_redis_does_not_delay_otlp(receiver: OtlpReceiver) -> None:
    with SilentServer() as hung_redis:
        handle = RedisHandle(url=f"redis://127.0.0.1:{hung_redis.port}/0", stream="fanout")
        env = handle.env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, TRACESTREAM_REDIS_TIMEOUT=HANG)
        before = len(receiver.logs), len(receiver.spans)
        service = _start_service(env)
        started = time.monotonic()
        try:
            wait_for(lambda: len(receiver.logs) - before[0] == 5, PROMPTLY, what="5 records over OTLP")
            wait_for(lambda: len(receiver.spans) - before[1] == 1, PROMPTLY, what="the span over OTLP")
        finally:
            service.kill()
            service.wait()
    assert time.monotonic() - started < float(HANG)
    records = receiver.logs[before[0] :]
    assert [r.record.body.string_value for r in records] == [f"record {i}" for i in range(5)]
    assert records[0].resource["service.name"] == "fan"
    assert records[0].record.trace_id == receiver.spans[before[1]].record.trace_id


def test_hung_otlp_endpoint_does_not_delay_redis(stream: RedisHandle) -> None:
    with SilentServer() as hung_collector:
        env = stream.env(
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{hung_collector.port}",
            OTEL_EXPORTER_OTLP_TIMEOUT=HANG,
        )
        service = _start_service(env)
        try:
            logs = wait_for(lambda: len(stream.logs()) == 5 and stream.logs(), PROMPTLY, what="5 in Redis")
            spans = wait_for(stream.spans, PROMPTLY, what="the span in Redis")
        finally:
            service.kill()
            service.wait()
    assert {e.trace_id for e in logs} == {spans[0].trace_id}


@pytest.mark.parametrize("ending", ["exit", "SIGTERM"])
def test_a_collector_that_is_down_does_not_hold_the_exit(stream: RedisHandle, ending: str) -> None:
    """OTLP's exporter retries while its collector is down: at exit, or at a SIGTERM that ends
    the process, it is stopped at the shutdown timeout, and the line about its lost records
    names it."""
    env = stream.env(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}", TRACESTREAM_SHUTDOWN_TIMEOUT="1s"
    )
    service = _start_service(env)
    wait_for(lambda: len(stream.logs()) == 5, PROMPTLY, what="5 in Redis")
    assert service.stdin is not None and service.stderr is not None
    started = time.monotonic()
    if ending == "exit":
        service.stdin.close()  # the service's input ends: it exits
    else:
        service.send_signal(signal.SIGTERM)
    assert service.wait(30) == (0 if ending == "exit" else -signal.SIGTERM)
    took = time.monotonic() - started
    said = [line for line in service.stderr.read().splitlines() if line.startswith("tracestream:")]
    assert took < 1 + PROMPTLY, took  # without the stop: the exporter's own retries, 6 s and more
    assert "logs (OTLPLogExporter): 5 records not exported or spooled at shutdown" in said[0], said


def test_otlp_over_grpc_without_the_grpc_exporter_is_a_clear_error(stream: RedisHandle) -> None:
    env = stream.env(OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    done = subprocess.run(
        [sys.executable, "-c", SERVICE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    # upstream's distro sets the protocol, and OTEL_METRICS_EXPORTER=otlp, where they are unset
    said = "_EXPORTER=otlp with OTEL_EXPORTER_OTLP_PROTOCOL=grpc: no exporter named 'otlp_proto_grpc'"
    assert f"{said} is installed" in done.stderr
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf\n" in done.stderr


def test_launcher_sends_to_redis_and_otlp(stream: RedisHandle, receiver: OtlpReceiver) -> None:
    env = stream.env(
        OTEL_SERVICE_NAME="launched",
        OTEL_LOGS_EXPORTER="redis_stream,otlp",
        OTEL_TRACES_EXPORTER="redis_stream,otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
    )
    before = len(receiver.logs)
    code = "import logging; logging.getLogger('launched').warning('under the launcher')"
    run_python(code, env, launcher=True)
    wait_for(lambda: [e.body for e in stream.logs()] == ["under the launcher"], what="the record in Redis")
    wait_for(lambda: len(receiver.logs) > before, what="the record over OTLP")
    received = receiver.logs[before]
    assert received.record.body.string_value == "under the launcher"
    assert received.resource["service.name"] == "launched"
    assert "tracestream.record_id" not in received.attributes  # sent by the service, not by a forwarder


# Secrets in the message, an attribute, an exception, a span's name and attribute, a span event's
# name and attributes, a log record's event name and the resource.
LEAKY_SERVICE = """
import logging, structlog, tracestream
from opentelemetry import _logs, trace
from tracestream.integrations.structlog import OTelProcessor
both = "redis_stream,otlp"
tracestream.configure(service_name="leaky", logs_exporter=both, traces_exporter=both)
structlog.configure(processors=[OTelProcessor(), structlog.processors.JSONRenderer()])
log = logging.getLogger("leaky")
with trace.get_tracer("leaky").start_as_current_span("connect postgres://app:hunter2-name@db") as span:
    span.set_attribute("db.password", "hunter2-span-attr")
    span.add_event("retry with password=hunter2-event-name", {"url": "postgres://app:hunter2-event@db/app"})
    log.info("calling with Authorization: Bearer hunter2-bearer-0123", extra={"api_key": "hunter2-extra"})
    try:
        raise ValueError("password=hunter2-exception")
    except ValueError:
        log.exception("failed")
        structlog.get_logger().exception("failed again", token="hunter2-structlog")
    event = _logs.LogRecord(body="signed in", event_name="user.login token=hunter2-event")
    _logs.get_logger("leaky").emit(event)
"""


def test_otlp_receives_only_scrubbed_records(receiver: OtlpReceiver, stream: RedisHandle) -> None:
    env = stream.env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=prod,db.password=hunter2-resource",
    )
    before = len(receiver.logs), len(receiver.spans)
    run_python(LEAKY_SERVICE, env)
    wait_for(lambda: len(receiver.logs) - before[0] == 4, what="4 records over OTLP")
    wait_for(lambda: len(receiver.spans) - before[1] == 1, what="the span over OTLP")
    received = receiver.logs[before[0] :] + receiver.spans[before[1] :]
    sent = "\n".join(f"{r.record}{r.resource}" for r in received)
    assert "hunter2" not in sent
    assert "[REDACTED]" in sent
    assert received[0].resource["deployment.environment"] == "prod"  # ordinary values pass unchanged
    assert received[0].record.body.string_value.startswith("calling with Authorization: ")
    assert received[1].attributes["exception.type"] == "ValueError"
    # one of our own records (structlog's), built for OTLP from what the app thread captured
    assert (received[2].record.body.string_value, received[2].attributes["exception.type"]) == (
        "failed again",
        "ValueError",
    )
    assert received[3].record.event_name == "user.login token=[REDACTED]"


WIDE_SERVICE = """
import logging, tracestream
from opentelemetry import trace
both = "redis_stream,otlp"
tracestream.configure(service_name="wide", logs_exporter=both, traces_exporter=both)
with trace.get_tracer("wide").start_as_current_span("wide") as span:
    span.set_attributes({f"attr{i}": i for i in range(30)})
    extra = {f"field{i}": i for i in range(30)} | {"long": "x" * 500}
    logging.getLogger("wide").warning("wide record", extra=extra)
"""


def test_otlp_gets_otels_limits_and_the_count_of_what_they_dropped(
    receiver: OtlpReceiver, stream: RedisHandle
) -> None:
    """Records we capture went out over OTLP whole, whatever OTel's limits said, and spans lost
    their dropped counts on the way through scrubbing. Redis keeps to tracestream's own limits."""
    env = stream.env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_ATTRIBUTE_COUNT_LIMIT="10",
        OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT="100",
    )
    before = len(receiver.logs), len(receiver.spans)
    run_python(WIDE_SERVICE, env)
    wait_for(lambda: len(receiver.logs) - before[0] == 1, what="the record over OTLP")
    wait_for(lambda: len(receiver.spans) - before[1] == 1, what="the span over OTLP")
    [record], [span] = receiver.logs[before[0] :], receiver.spans[before[1] :]
    # the newest ten, as the SDK keeps them: the last six fields, the long one cut, where it was logged
    kept = [f"field{i}" for i in range(24, 30)] + [
        "long",
        "code.file.path",
        "code.line.number",
        "code.function.name",
    ]
    assert list(record.attributes) == kept
    assert (record.attributes["long"], record.record.dropped_attributes_count) == ("x" * 100, 24)
    assert list(span.attributes) == [f"attr{i}" for i in range(20, 30)]
    assert span.record.dropped_attributes_count == 20
    [stored] = stream.logs()
    assert stored.attributes == {f"field{i}": i for i in range(30)} | {"long": "x" * 500}


# A server's end as uvicorn's workers have it: its own handling, then SIGTERM raised again
# with the default action back, which kills the process without atexit.
RAISED_AGAIN = """
import signal
from opentelemetry import trace
with trace.get_tracer("t").start_as_current_span("last request"):
    pass
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.raise_signal(signal.SIGTERM)
"""


def _under_upstreams_configurator(stream: RedisHandle, receiver: OtlpReceiver) -> dict[str, str]:
    """The launcher's environment where it picks upstream's distro and configurator: spans to
    Redis and to `receiver`."""
    return stream.env(
        OTEL_SERVICE_NAME="launched",
        OTEL_TRACES_EXPORTER="redis_stream,otlp",
        OTEL_LOGS_EXPORTER="redis_stream",
        OTEL_METRICS_EXPORTER="none",
        OTEL_PYTHON_DISTRO="distro",
        OTEL_PYTHON_CONFIGURATOR="configurator",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",  # upstream's distro defaults to gRPC
    )


def test_a_deadly_signal_flushes_the_exporters_of_upstreams_configurator_too(
    stream: RedisHandle, receiver: OtlpReceiver
) -> None:
    """Upstream's configurator, picked by the launcher, set up the providers with its own batch
    processor for OTLP; tracestream joined them. At a deadly signal only our queues were
    flushed, and what its processor held was lost."""
    env = _under_upstreams_configurator(stream, receiver)
    before = len(receiver.spans)
    done = run_python_process(RAISED_AGAIN, env, launcher=True)
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert [s.name for s in stream.spans()] == ["last request"]
    assert [r.record.name for r in receiver.spans[before:]] == ["last request"]


LEAKY_SPAN = """
from opentelemetry import trace
with trace.get_tracer("leaky").start_as_current_span("login") as span:
    span.set_attribute("db.password", "hunter2-span-attr")
    span.add_event("retry", {"url": "postgres://app:hunter2-event@db/app"})
"""


def test_spans_to_otlp_are_scrubbed_where_upstreams_configurator_set_the_exporters(
    stream: RedisHandle, receiver: OtlpReceiver
) -> None:
    """With both distros installed the launcher may pick upstream's configurator, which builds
    the OTLP exporter itself: its spans left the process with their secrets."""
    env = _under_upstreams_configurator(stream, receiver)
    before = len(receiver.spans)
    run_python(LEAKY_SPAN, env, launcher=True)
    (sent,) = wait_for(lambda: receiver.spans[before:], what="the span over OTLP")
    assert sent.attributes["db.password"] == "[REDACTED]", sent.attributes
    assert "hunter2" not in str(sent.record), sent.record
    assert [s.attributes["db.password"] for s in stream.spans()] == ["[REDACTED]"]
