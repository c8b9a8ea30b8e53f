"""Log records follow trace sampling (docs/sampling.md): the gate, configure() with the standard
sampler variables, two services under the launcher, and counts estimated from sample weights."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.apps.servers import LAUNCHER_ENV, bin_path, http_ready, launched, serve
from tests.seeded_records import RecordWriter
from tests.support import ROOT, VENV_BIN, RedisHandle, run_python, run_python_process, wait_for
from tracestream.embedded_redis import free_port
from tracestream.export_status import read_statuses
from tracestream.otel_setup.sampling import HOLD_RECORDS_PER_TRACE, TraceLogGate
from tracestream.schema import LogEntry
from tracestream.settings import SAMPLE_WEIGHT, ConfigError, Settings
from tracestream.summary import sample_weight, summarize, weighted_count

INFO, WARN, ERROR = 9, 13, 17
TRACE, OTHER = 0xAB, 0xCD


@dataclass
class Record:
    name: str
    attributes: dict[str, float] = field(default_factory=dict)


def _gate(ratio: float | None = 0.25, **bounds: Any) -> tuple[TraceLogGate[Record], list[Record]]:
    kept: list[Record] = []

    def weigh(record: Record, weight: float) -> None:
        record.attributes[SAMPLE_WEIGHT] = weight

    return TraceLogGate(kept.append, weigh, lambda: ratio, **bounds), kept


def test_below_warn_follows_the_trace_and_carries_its_weight() -> None:
    gate, kept = _gate(ratio=0.25)
    gate.admit(Record("sampled info"), TRACE, True, INFO)
    gate.admit(Record("sampled warn"), TRACE, True, WARN)
    gate.admit(Record("unsampled info"), OTHER, False, INFO)
    gate.admit(Record("unsampled warn"), OTHER, False, WARN)
    gate.admit(Record("outside any trace"), 0, False, INFO)
    assert [(r.name, r.attributes) for r in kept] == [
        ("sampled info", {SAMPLE_WEIGHT: 4.0}),
        ("sampled warn", {}),
        ("unsampled warn", {}),
        ("outside any trace", {}),
    ]
    assert gate.held() == 1


@pytest.mark.parametrize("ratio", [1.0, None])
def test_no_weight_when_nothing_is_sampled_down(ratio: float | None) -> None:
    gate, kept = _gate(ratio=ratio)
    gate.admit(Record("sampled info"), TRACE, True, INFO)
    assert kept == [Record("sampled info")]


def test_an_error_releases_its_trace_and_lets_the_rest_through() -> None:
    gate, kept = _gate()
    for name in ("first", "second"):
        gate.admit(Record(name), TRACE, False, INFO)
    gate.admit(Record("other trace"), OTHER, False, INFO)
    gate.admit(Record("failed"), TRACE, False, ERROR)
    gate.admit(Record("after the error"), TRACE, False, INFO)
    assert [(r.name, r.attributes) for r in kept] == [
        ("first", {SAMPLE_WEIGHT: 0.0}),
        ("second", {SAMPLE_WEIGHT: 0.0}),
        ("failed", {}),
        ("after the error", {SAMPLE_WEIGHT: 0.0}),
    ]
    assert gate.held() == 1 and gate.not_sampled == 0  # the other trace still waits


def test_what_is_held_is_bounded_per_trace_in_total_and_in_time() -> None:
    gate, kept = _gate(hold_records=100, hold_seconds=0.2)
    for index in range(HOLD_RECORDS_PER_TRACE + 5):
        gate.admit(Record(f"line {index}"), TRACE, False, INFO)
    assert gate.held() == HOLD_RECORDS_PER_TRACE and gate.not_sampled == 5
    for index in range(40):  # over the total: the oldest trace goes first
        gate.admit(Record(f"other {index}"), OTHER, False, INFO)
    assert gate.held() == 40 and gate.not_sampled == HOLD_RECORDS_PER_TRACE + 5
    gate.admit(Record("failed"), TRACE, False, ERROR)
    assert [r.name for r in kept] == ["failed"]

    probes = iter(range(0x1000, 0x100000))

    def expired() -> bool:
        gate.admit(Record("later"), next(probes), False, INFO)  # a new trace is when old ones are let go
        return gate.not_sampled >= HOLD_RECORDS_PER_TRACE + 5 + 40

    wait_for(expired, timeout=5, what="the other trace's records to expire")
    gate.admit(Record("failed late"), OTHER, False, ERROR)
    assert [r.name for r in kept] == ["failed", "failed late"]


def test_a_bad_log_sampling_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="TRACESTREAM_LOG_SAMPLING='sometimes' is invalid"):
        Settings.load(environ={"TRACESTREAM_LOG_SAMPLING": "sometimes"})
    assert Settings.load(environ={"TRACESTREAM_LOG_SAMPLING": " Keep_All "}).log_sampling == "keep_all"
    assert Settings.load(environ={}).log_sampling == "follow_trace"


SAMPLED_APP = """
import logging, sys, tracestream
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from tracestream.integrations.record_writer import RecordWriter
telemetry = tracestream.configure(service_name="svc")
print(telemetry.tracer_provider.sampler.get_description(), file=sys.stderr)
log = logging.getLogger("app")
with trace.get_tracer("t").start_as_current_span("work"):
    log.info("info in a trace")
    log.warning("warn in a trace")
    # the path of our request and task records
    RecordWriter("tracestream.celery").emit("task started", SeverityNumber.INFO, {})
log.info("info outside any trace")
assert telemetry.force_flush()
"""


@pytest.mark.parametrize("mode", ["follow_trace", "keep_all"])
def test_configure_takes_the_sampler_from_the_environment(stream: RedisHandle, mode: str) -> None:
    env = stream.env(OTEL_TRACES_SAMPLER="always_off", TRACESTREAM_LOG_SAMPLING=mode)
    printed = run_python(SAMPLED_APP, env)
    assert "AlwaysOffSampler" in printed, printed
    logs = {entry.body: entry for entry in stream.logs()}
    in_trace_below_warn = {"info in a trace", "task started"}
    always = {"warn in a trace", "info outside any trace"}
    assert set(logs) == (always | in_trace_below_warn if mode == "keep_all" else always)
    assert logs["warn in a trace"].trace_id and not stream.spans()
    assert all(SAMPLE_WEIGHT not in entry.attributes for entry in logs.values())


def test_other_log_exporters_get_every_record(stream: RedisHandle) -> None:
    """The stream follows its traces; a console exporter beside it prints every record, as
    OpenTelemetry sends them."""
    env = stream.env(OTEL_TRACES_SAMPLER="always_off", OTEL_LOGS_EXPORTER="redis_stream,console")
    done = run_python_process(SAMPLED_APP, env)
    assert done.returncode == 0, done.stderr
    assert '"body": "info in a trace"' in done.stdout and '"body": "warn in a trace"' in done.stdout
    assert {entry.body for entry in stream.logs()} == {"warn in a trace", "info outside any trace"}


RECORDED_APP = """
import logging, tracestream
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, AlwaysRecordSampler
from opentelemetry.trace import StatusCode
trace.set_tracer_provider(TracerProvider(sampler=AlwaysRecordSampler(ALWAYS_OFF)))
telemetry = tracestream.configure(service_name="svc")
log, tracer = logging.getLogger("app"), trace.get_tracer("t")
with tracer.start_as_current_span("fails") as span:
    log.info("info before a failed span")
    span.set_status(StatusCode.ERROR)
with tracer.start_as_current_span("succeeds"):
    log.info("info in a span that succeeded")
assert telemetry.force_flush()
"""


def test_an_error_span_releases_its_trace_when_unsampled_spans_are_recorded(stream: RedisHandle) -> None:
    """The SDK hands spans to processors only when recorded: a RECORD_ONLY sampler lets error spans count."""
    run_python(RECORDED_APP, stream.env())
    assert [(e.body, e.attributes) for e in stream.logs()] == [
        ("info before a failed span", {SAMPLE_WEIGHT: 0.0})
    ]
    assert not stream.spans()


def test_records_follow_the_upstream_decision_across_services(stream: RedisHandle) -> None:
    """front -> back, both under the launcher with parentbased_traceidratio at 0.5."""
    back_port, front_port = free_port(), free_port()
    common = {
        **LAUNCHER_ENV,
        "OTEL_LOGS_EXPORTER": "redis_stream",
        "OTEL_TRACES_EXPORTER": "redis_stream",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
    }
    back_env = stream.env(OTEL_SERVICE_NAME="back", **common)
    front_env = stream.env(OTEL_SERVICE_NAME="front", BACK_URL=f"http://127.0.0.1:{back_port}", **common)
    uvicorn = bin_path("uvicorn")
    back_command = launched(uvicorn, "tests.apps.sampled_chain:back", "--port", str(back_port))
    front_command = launched(uvicorn, "tests.apps.sampled_chain:front", "--port", str(front_port))
    front_url = f"http://127.0.0.1:{front_port}"
    decisions: dict[str, bool] = {}  # trace id -> sampled, as the front's traceparent header says
    failed_trace = uuid.uuid4().hex
    with (
        serve(back_command, back_env, http_ready(f"http://127.0.0.1:{back_port}/openapi.json")),
        serve(front_command, front_env, http_ready(f"{front_url}/openapi.json")),
    ):
        while len(decisions) < 12 or len(set(decisions.values())) < 2:
            assert len(decisions) < 60, decisions  # 0.5 each way: both show up long before this
            response = httpx.get(f"{front_url}/work", timeout=10)
            assert response.status_code == 200
            flags = int(response.headers["traceparent"].rsplit("-", 1)[1], 16)  # the SDK sets bit 2 too
            decisions[response.headers["x-trace-id"]] = bool(flags & 1)
        # An unsampled caller's trace that fails in the front.
        unsampled_parent = {"traceparent": f"00-{failed_trace}-{uuid.uuid4().hex[:16]}-00"}
        failed = httpx.get(f"{front_url}/fail", headers=unsampled_parent, timeout=10)
        assert failed.status_code == 500 and failed.headers["x-trace-id"] == failed_trace

        def all_warnings_in() -> bool:
            warned = {(e.service, e.trace_id) for e in stream.logs() if e.severity == "WARN"}
            wanted = {(service, trace) for trace in decisions for service in ("front", "back")}
            return wanted <= warned

        wait_for(all_warnings_in, timeout=20, what="every request's WARN lines in both services")
    # Both servers have stopped, and flushed what they had, before anything is found absent.
    logs = stream.logs()
    spans = stream.spans()
    for trace, sampled in decisions.items():
        in_trace = Counter((e.service, e.body) for e in logs if e.trace_id == trace)
        infos = {key for key in in_trace if key[1] in ("front info", "back info")}
        assert in_trace[("front", "front warn")] == 1 and in_trace[("back", "back warn")] == 1
        assert infos == ({("front", "front info"), ("back", "back info")} if sampled else set()), trace
        traced_services = {s.service for s in spans if s.trace_id == trace}
        assert traced_services == ({"front", "back"} if sampled else set()), trace
        requests = [e for e in logs if e.trace_id == trace and e.scope == "tracestream.http"]
        assert len(requests) == (2 if sampled else 0)  # 200s are INFO: they follow the trace too
    sampled_infos = [e for e in logs if e.body in ("front info", "back info")]
    assert sampled_infos and {sample_weight(e.attributes) for e in sampled_infos} == {2.0}

    failing = [e for e in logs if e.trace_id == failed_trace]
    by_body = {(e.service, e.body): e for e in failing}
    kept = by_body[("front", "front info before the failure")]  # held back, then released by the 500
    assert kept.attributes[SAMPLE_WEIGHT] == 0.0
    assert [e.severity for e in failing if e.scope == "tracestream.http"] == ["ERROR"]
    assert ("back", "back warn") in by_body and ("back", "back info") not in by_body  # back did not fail
    assert not [s for s in spans if s.trace_id == failed_trace]

    with stream.client() as client:
        statuses = read_statuses(client, stream.stream)
    by_service = {status.process.split(":")[0]: status.fields for status in statuses}
    assert {"logs.held_unsampled", "logs.not_sampled"} <= set(by_service["front"])  # what sampling holds back
    _estimates_match_the_weights(stream, logs, sum(decisions.values()))


def _estimates_match_the_weights(stream: RedisHandle, logs: list[LogEntry], sampled: int) -> None:
    """`tracestream stats` counts each stored record for its weight, and says so."""
    done = subprocess.run(
        [str(VENV_BIN / "tracestream"), "stats", "--json", "--since", "1h"],
        env=stream.env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    counts: Counter[tuple[str, str]] = Counter()
    estimated: dict[tuple[str, str], bool] = {}
    for line in map(json.loads, done.stdout.splitlines()):
        if line["type"] == "count":
            key = line["service"], line["severity"]
            counts[key] += line["count"]
            estimated[key] = estimated.get(key, False) or line["estimated"]
    back_infos = [e for e in logs if e.service == "back" and e.severity == "INFO"]
    weights = Counter(sample_weight(e.attributes) for e in back_infos)
    assert weights[2.0] >= 2 * sampled  # its line and request record in each sampled trace, at least
    assert counts["back", "INFO"] == round(sum(w * n for w, n in weights.items()))
    assert counts["back", "INFO"] > len(back_infos) and estimated["back", "INFO"]
    back_warns = [e for e in logs if e.service == "back" and e.severity == "WARN"]
    assert counts["back", "WARN"] == len(back_warns) and not estimated["back", "WARN"]


def test_summaries_estimate_true_counts(stream: RedisHandle, writer: RecordWriter) -> None:
    weighted = {SAMPLE_WEIGHT: 10.0}
    writer.write(
        *(writer.row("sampled", service="api", attributes=weighted) for _ in range(3)),
        writer.row("released by an error", service="api", attributes={SAMPLE_WEIGHT: 0.0}),
        writer.row("failed", service="api", severity="ERROR"),
        *(writer.row("plain", service="worker") for _ in range(4)),
    )
    with stream.client() as client:
        summary = summarize(client, stream.stream, 0)
    api, worker = summary.services["api"], summary.services["worker"]
    assert (api.records, api.stored, api.estimated, api.errors) == (31.0, 5, True, 1)
    assert (worker.records, worker.stored, worker.estimated) == (4.0, 4, False)
    assert summary.by_severity() == {"INFO": 34, "ERROR": 1}
    assert summary.estimated_severities() == {"INFO"}
    assert weighted_count([weighted, {}, {SAMPLE_WEIGHT: "x"}]) == (12.0, True)

    env = stream.env(COLUMNS="200")
    tracestream = str(VENV_BIN / "tracestream")
    services, table = (
        subprocess.run([tracestream, *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
        for args in (["services", "--json"], ["stats", "--since", "1h"])
    )
    lines = {line["service"]: line for line in map(json.loads, services.stdout.splitlines())}
    assert (lines["api"]["records_last_hour"], lines["api"]["estimated"]) == (31, True)
    assert (lines["worker"]["records_last_hour"], lines["worker"]["estimated"]) == (4, False)
    assert "~30" in table.stdout and "~34" in table.stdout, table.stdout  # api INFO; all INFO
