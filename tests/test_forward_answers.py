"""`tracestream forward` against what real receivers answer: partial success, redirects, size
limits, outages, and the OTEL_EXPORTER_OTLP_* variables a Collector's docs tell people to set.

The receiver here is a real HTTP server that decodes every request with the generated protobuf
classes and answers from a script, so each test states exactly what the endpoint says.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support import ROOT, VENV_BIN, RedisHandle, wait_for
from tracestream import schema
from tracestream.exporters import encoding
from tracestream.forwarder import (
    DEAD_LETTER_MAX,
    DEAD_LETTER_SUFFIX,
    MAX_REQUEST_BYTES,
    Forwarder,
    ForwardSettings,
    forwarder_lag,
)
from tracestream.otlp_encoding import RECORD_ID


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/x-protobuf"
    location: str = ""


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    size: int
    record_ids: list[str]
    status: int


def _record_ids(path: str, body: bytes) -> list[str]:
    """The tracestream.record_id of every record in a request, logs or spans."""
    if path.endswith("logs"):
        logs = ExportLogsServiceRequest.FromString(body)
        records: list[Any] = [r for rl in logs.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    else:
        traces = ExportTraceServiceRequest.FromString(body)
        records = [s for rs in traces.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return [a.value.string_value for r in records for a in r.attributes if a.key == RECORD_ID]


class ScriptedReceiver:
    """Answers queued `Answer`s first, then `rule(path, body)`: 200 with an empty body unless set."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: deque[Answer] = deque()
        self.rule: Callable[[str, bytes], Answer] = lambda path, body: Answer()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def accepted(self) -> list[str]:
        return [rid for r in list(self.requests) if r.status < 300 for rid in r.record_ids]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        with self._lock:
            answer = self.script.popleft() if self.script else self.rule(path, body)
            self.requests.append(Request(path, headers, len(body), _record_ids(path, body), answer.status))
            return answer

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                answer = receiver._answer(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                if answer.location:
                    self.send_header("Location", answer.location)
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    running = ScriptedReceiver()
    yield running
    running.close()


@dataclass
class Running:
    forwarder: Forwarder
    lines: list[str] = field(default_factory=list)

    def said(self, text: str) -> list[str]:
        return [line for line in list(self.lines) if text in line]


@contextmanager
def forwarding(handle: RedisHandle, receiver: ScriptedReceiver, **options: Any) -> Iterator[Running]:
    """A forwarder on a thread of the test process, its report lines collected."""
    options = {"block": 0.1, "claim_idle": 1.0, "max_backoff": 0.5, **options}
    settings = ForwardSettings(redis_url=handle.url, stream=handle.stream, endpoint=receiver.url, **options)
    lines: list[str] = []
    running = Running(Forwarder(settings, report=lines.append), lines)
    thread = threading.Thread(target=running.forwarder.run, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.forwarder.stop()
        thread.join(15)
    assert not thread.is_alive()


def seed_logs(handle: RedisHandle, count: int, body: str = "") -> list[str]:
    """`count` log entries laid out as the exporter writes them; returns their record ids."""
    resource = encoding.EncodedResource(schema.dump_json({"service.name": "seeded"}), "seeded")
    ids = schema.RecordIds()
    record_ids = [ids.next() for _ in range(count)]
    with handle.client() as client:
        pipe = client.pipeline(transaction=False)
        for i, record_id in enumerate(record_ids):
            values = encoding.log_values(
                record_id, time.time_ns(), "INFO", 9, body or f"record {i}", resource, i + 1, i + 1, 1,
                "seed", "", {}, encoding.NO_EXCEPTION,
            )  # fmt: skip
            pipe.xadd(handle.keys.logs, dict(zip(schema.LOG_FIELDS, values, strict=True)))
        pipe.execute()
    return record_ids


def seed_span(handle: RedisHandle, record_id: str) -> None:
    fields = {
        **dict.fromkeys(schema.SPAN_FIELDS, ""),
        **{"v": "1", "rid": record_id, "trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "n"},
        **{"kind": "SERVER", "start_ts": "1", "end_ts": "2", "status": "OK", "attributes": "{}"},
        **{"events": "[]", "resource": schema.dump_json({"service.name": "seeded"})},
    }
    with handle.client() as client:
        client.xadd(handle.keys.spans, fields)


def pending(handle: RedisHandle) -> int:
    return sum(lag.pending for lag in forwarder_lag(handle.client(), handle.stream))


def dead_letters(handle: RedisHandle) -> int:
    with handle.client() as client:
        return int(client.xlen(handle.keys.logs + DEAD_LETTER_SUFFIX))


def doctor_says(handle: RedisHandle) -> list[str]:
    """What `tracestream doctor` says about forwarders."""
    doctor = subprocess.run(
        [str(VENV_BIN / "tracestream"), "doctor", "--json"],
        env=handle.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = [json.loads(line) for line in doctor.stdout.splitlines()]
    return [f"{f['status']}: {f['detail']}" for f in found if f["check"] == "forwarder"]


def partial(rejected: int, message: str) -> Answer:
    response = ExportLogsServiceResponse(
        partial_success=ExportLogsPartialSuccess(rejected_log_records=rejected, error_message=message)
    )
    return Answer(body=response.SerializeToString())


def test_partial_success_is_counted_and_said_once_per_message(
    stream: RedisHandle, receiver: ScriptedReceiver
) -> None:
    seed_logs(stream, 8)
    seed_span(stream, "span-1")
    for_logs = deque([partial(1, "body too long"), partial(1, "body too long"), partial(2, "quota")])
    json_answer = b'{"partialSuccess": {"rejectedSpans": "1", "errorMessage": "span has no name"}}'
    receiver.rule = lambda path, body: (
        Answer(body=json_answer, content_type="application/json")
        if path == "/v1/traces"
        else (for_logs.popleft() if for_logs else Answer())
    )
    with forwarding(stream, receiver, batch_size=2) as running:
        wait_for(lambda: pending(stream) == 0 and len(receiver.accepted()) == 9, what="every batch answered")
        progress = running.forwarder.progress
        wait_for(lambda: progress.logs + progress.spans + progress.rejected == 9, what="all counted")
    assert (progress.logs, progress.spans, progress.rejected) == (4, 0, 5)
    assert len(running.said("rejected 1 of 2 logs: body too long")) == 1, running.lines
    assert len(running.said("rejected 2 of 2 logs: quota")) == 1, running.lines
    assert len(running.said("rejected 1 of 1 spans: span has no name")) == 1, running.lines
    assert "5 rejected by the endpoint" in progress.line(1.0)
    assert len(receiver.requests) == 5, "a partial success must not be retried"
    assert dead_letters(stream) == 0
    said = doctor_says(stream)
    lost = [line for line in said if "rejected by the endpoint" in line]
    assert len(lost) == 2 and all(line.startswith("warn: ") for line in lost), said
    assert f"4 records rejected by the endpoint (OTLP partial success) from {stream.keys.logs!r}" in lost[0]
    assert f"1 records rejected by the endpoint (OTLP partial success) from {stream.keys.spans!r}" in lost[1]


def test_a_redirect_stops_the_forwarder_naming_where_it_points(
    stream: RedisHandle, receiver: ScriptedReceiver
) -> None:
    seed_logs(stream, 5)
    receiver.rule = lambda path, body: Answer(308, location="https://collector.example:4318" + path)
    process = subprocess.run(
        [str(VENV_BIN / "tracestream"), "forward", "--endpoint", receiver.url],
        env=stream.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert process.returncode == 2, process.stderr
    error = [line for line in process.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and "HTTP 308" in error[0], process.stderr
    assert "https://collector.example:4318/v1/logs" in error[0]
    assert pending(stream) == 5 and dead_letters(stream) == 0


@pytest.mark.parametrize("protocol", ["grpc", "http/json"])
def test_a_protocol_other_than_http_protobuf_is_refused_at_start(
    stream: RedisHandle, receiver: ScriptedReceiver, protocol: str
) -> None:
    seed_logs(stream, 1)
    process = subprocess.Popen(
        [str(VENV_BIN / "tracestream"), "forward"],
        env=stream.env(OTEL_EXPORTER_OTLP_PROTOCOL=protocol, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 2, stderr
    assert stderr.count("\n") == 1 and f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}" in stderr, stderr
    assert "http/protobuf" in stderr and not receiver.requests


def test_per_signal_endpoints_and_headers_win_over_the_general_ones(
    stream: RedisHandle, receiver: ScriptedReceiver
) -> None:
    logs = seed_logs(stream, 3)
    seed_span(stream, "span-1")
    env = stream.env(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",  # nothing listens: used, it would never deliver
        OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=receiver.url + "/tenant/logs",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.url + "/tenant/traces",
        OTEL_EXPORTER_OTLP_HEADERS="x-team=general",
        OTEL_EXPORTER_OTLP_LOGS_HEADERS="x-team=logs%20team",
        OTEL_EXPORTER_OTLP_LOGS_PROTOCOL="http/protobuf",
    )
    process = subprocess.Popen(
        [str(VENV_BIN / "tracestream"), "forward"], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: set(receiver.accepted()) == {*logs, "span-1"}, 20, what="logs and the span")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    seen = {(r.path, r.headers.get("x-team")) for r in receiver.requests}
    assert seen == {("/tenant/logs", "logs team"), ("/tenant/traces", "general")}, stderr


def test_the_dead_letter_cap_says_how_many_it_deleted(
    stream: RedisHandle, receiver: ScriptedReceiver
) -> None:
    dead_key = stream.keys.logs + DEAD_LETTER_SUFFIX
    with stream.client() as client:
        pipe = client.pipeline(transaction=False)
        for i in range(DEAD_LETTER_MAX):
            pipe.xadd(dead_key, {"old": str(i)})
        pipe.execute()
    seed_logs(stream, 300)
    receiver.rule = lambda path, body: Answer(400, b"bad request")
    with forwarding(stream, receiver, batch_size=300) as running:
        progress = running.forwarder.progress
        wait_for(lambda: progress.dead_lettered == 300 and pending(stream) == 0, what="all dead-lettered")
    deleted = DEAD_LETTER_MAX + 300 - dead_letters(stream)
    assert deleted > 0 and progress.dead_letters_dropped == deleted
    assert len(running.said(f"the oldest {deleted} were deleted")) == 1, running.lines
    said = doctor_says(stream)
    kept = f"{dead_letters(stream)} entries of {stream.keys.logs!r} kept as dead letters"
    assert any(line.startswith("warn: " + kept) and "HTTP 400: bad request" in line for line in said), said
    assert any(
        f"{deleted} dead letters deleted past the cap from {stream.keys.logs!r}" in line for line in said
    )


def test_an_over_large_batch_is_split_and_a_413_halves_it(
    stream: RedisHandle, receiver: ScriptedReceiver
) -> None:
    wanted = seed_logs(stream, 300, body="x" * 30_000)  # ~9 MB as one request
    limit = 1024 * 1024  # smaller than ours, as some receivers are
    receiver.rule = lambda path, body: Answer(413) if len(body) > limit else Answer()
    with forwarding(stream, receiver, batch_size=300) as running:
        wait_for(
            lambda: set(wanted) <= set(receiver.accepted()), 20, what="every record, in smaller requests"
        )
        wait_for(lambda: pending(stream) == 0, what="everything acknowledged")
    assert running.forwarder.progress.logs == 300 and running.forwarder.progress.dead_lettered == 0
    assert max(r.size for r in receiver.requests) <= MAX_REQUEST_BYTES
    assert dead_letters(stream) == 0


def test_each_outage_says_its_cause_and_its_end_once(stream: RedisHandle, receiver: ScriptedReceiver) -> None:
    receiver.script.extend([Answer(503), Answer(503), Answer(503)])
    first = seed_logs(stream, 2)
    with forwarding(stream, receiver) as running:
        wait_for(lambda: set(first) <= set(receiver.accepted()), what="the first outage over")
        receiver.script.extend([Answer(502), Answer(502)])
        second = seed_logs(stream, 2)
        wait_for(lambda: set(second) <= set(receiver.accepted()), what="the second outage over")
        wait_for(lambda: len(running.said("answers again")) == 2, what="both ends said")
    assert len(running.said("HTTP 503; retrying")) == 1, running.lines
    assert len(running.said("HTTP 502; retrying")) == 1, running.lines
    assert running.said("answers again")[0].endswith("and 3 retries"), running.lines
