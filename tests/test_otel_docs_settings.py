"""OpenTelemetry's own settings, as its docs use them, with tracestream installed beside
upstream's distro: batch sizes the SDK's processors refuse, samplers registered by entry point,
the export timeouts, the disabled logging instrumentation and what other exporters get."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import ROOT, RedisHandle, run_python_process, wait_for

# Upstream's distro and configurator, which the launcher picks after the docs' install order.
UPSTREAMS = {"OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator"}
OURS = {"OTEL_PYTHON_DISTRO": "tracestream", "OTEL_PYTHON_CONFIGURATOR": "tracestream"}
CONFIGURE = "import tracestream\ntracestream.configure()\n"

# One span with a line in it, and the app's own line on stdout.
APP = """
import logging
from opentelemetry import trace
with trace.get_tracer("shop").start_as_current_span("checkout"):
    logging.getLogger("shop").warning("card declined")
print("app ran")
"""


def _env(stream: RedisHandle, configurator: dict[str, str], **extra: str) -> dict[str, str]:
    env = stream.env(
        OTEL_SERVICE_NAME="shop",
        OTEL_TRACES_EXPORTER="redis_stream",
        OTEL_LOGS_EXPORTER="redis_stream",
        OTEL_METRICS_EXPORTER="none",
        **configurator,
    )
    return {**env, **extra}


def _ours(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tracestream:")]


SDK_REFUSES = (
    ", which the OpenTelemetry SDK's batch processor refuses: upstream's configurator, which the "
    "launcher picked, puts one in front of each exporter; "
)


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (
            {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"},
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=4096 is larger than OTEL_BSP_MAX_QUEUE_SIZE (unset: the SDK's "
            "default, 2048)" + SDK_REFUSES + "set both sizes, or OTEL_PYTHON_CONFIGURATOR=tracestream, "
            "whose queue holds 20000 by default",
        ),
        (
            {"OTEL_BLRP_MAX_QUEUE_SIZE": "100", "OTEL_LOGS_EXPORTER": "console,redis_stream"},
            "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE (unset: the SDK's default, 512) is larger than "
            "OTEL_BLRP_MAX_QUEUE_SIZE=100" + SDK_REFUSES + "set both sizes, or "
            "OTEL_PYTHON_CONFIGURATOR=tracestream, whose queue holds 20000 by default",
        ),
        (
            {"OTEL_BSP_SCHEDULE_DELAY": "-5", "TRACESTREAM_BATCH_DELAY_MS": "100"},
            "OTEL_BSP_SCHEDULE_DELAY=-5 is not above zero" + SDK_REFUSES + "set it above zero",
        ),
        (
            {"OTEL_BLRP_MAX_QUEUE_SIZE": "10", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "100"},
            "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE=100 is larger than OTEL_BLRP_MAX_QUEUE_SIZE=10",
        ),
        (
            {"OTEL_BSP_MAX_QUEUE_SIZE": "0"},
            "OTEL_BSP_MAX_QUEUE_SIZE='0' is invalid: must be greater than zero",
        ),
        (
            {"OTEL_ATTRIBUTE_COUNT_LIMIT": "abc"},
            "OTEL_ATTRIBUTE_COUNT_LIMIT must be a non-negative integer but got abc",
        ),
    ],
    ids=[
        "batch-4096",
        "blrp-queue-below-sdk-batch",
        "delay-beside-ours",
        "blrp-batch-gt-queue",
        "queue-0",
        "count-limit",
    ],
)
def test_a_value_upstreams_setup_refuses_halfway_stops_the_launch_in_one_line(
    stream: RedisHandle, settings: dict[str, str], said: str
) -> None:
    """Upstream's configurator set the tracer provider, then the SDK's batch processor (or its
    limits) raised: the app ran with nothing (or only spans) reaching Redis, and not a word of ours."""
    done = run_python_process(APP, _env(stream, UPSTREAMS, **settings), launcher=True)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    launchers = [line for line in done.stderr.splitlines() if not line.startswith("Configuration of ")]
    assert launchers == [f"tracestream: invalid configuration: {said}"], done.stderr


def _distribution(path: Path, name: str, module: str, entry_points: str) -> Path:
    """A package installed as pip leaves it: its module, and a dist-info with its entry points."""
    (path / f"{name}.py").write_text(module)
    metadata = path / f"{name}-1.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (metadata / "entry_points.txt").write_text(entry_points)
    return path


BROKEN_METRICS = """
from opentelemetry.sdk.metrics.export import MetricExporter

class BrokenExporter(MetricExporter):
    export = force_flush = shutdown = None

    def __init__(self):
        raise RuntimeError("no collector here")
"""


def test_a_launch_that_fails_after_tracing_is_set_up_says_what_reaches_redis(
    stream: RedisHandle, tmp_path: Path
) -> None:
    """Upstream's configurator set tracing up with our exporter, then failed on a metrics exporter:
    spans reached Redis, nothing else was set up, and nothing of ours said so."""
    entry_point = "[opentelemetry_metrics_exporter]\nbroken = broken_metrics:BrokenExporter\n"
    package = _distribution(tmp_path, "broken_metrics", BROKEN_METRICS, entry_point)
    env = _env(stream, UPSTREAMS, OTEL_METRICS_EXPORTER="broken", PYTHONPATH=f"{package}:{ROOT}")
    done = run_python_process(APP, env, launcher=True)
    assert (done.returncode, done.stdout) == (0, "app ran\n"), done.stderr
    assert _ours(done.stderr) == [
        "tracestream: WARNING only spans reach Redis, through upstream's configurator alone: the launcher "
        "stopped before tracestream's setup, its log capture and every instrumentation "
        "(RuntimeError('no collector here')); its traceback says why"
    ], done.stderr
    assert [s.name for s in wait_for(stream.spans, what="the span")] == ["checkout"]
    assert stream.logs() == []


# A sampler registered the way opentelemetry-python documents custom samplers.
RATIO_SAMPLER = """
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

def ratio_sampler(argument):
    return ParentBased(TraceIdRatioBased(float(argument)))
"""
SAMPLER_ENTRY_POINT = "[opentelemetry_traces_sampler]\nratio_sampler = my_sampler:ratio_sampler\n"
# Forty traces, each with a record below WARN, which follows its trace's sampling.
SAMPLED_APP = """
import logging
from opentelemetry import trace
logging.getLogger().setLevel(logging.INFO)
print(trace.get_tracer_provider().sampler.get_description())
for number in range(40):
    with trace.get_tracer("shop").start_as_current_span(f"order {number}"):
        logging.getLogger("shop").info("order %d", number)
"""


@pytest.mark.parametrize("setup", ["launcher", "configure"])
def test_a_sampler_registered_by_entry_point_is_the_one_used(
    stream: RedisHandle, tmp_path: Path, setup: str
) -> None:
    """tracestream left the sampler to the SDK, which knows only its six names: every trace was
    kept, behind the SDK's untrue `Couldn't recognize sampler`."""
    package = _distribution(tmp_path, "my_sampler", RATIO_SAMPLER, SAMPLER_ENTRY_POINT)
    sampler = {"OTEL_TRACES_SAMPLER": "ratio_sampler", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    env = _env(stream, OURS, PYTHONPATH=f"{package}:{ROOT}", **sampler)
    code = SAMPLED_APP if setup == "launcher" else CONFIGURE + SAMPLED_APP
    done = run_python_process(code, env, launcher=setup == "launcher")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ParentBased{root:TraceIdRatioBased{0.5}"), done.stdout
    assert "Couldn't recognize sampler" not in done.stderr
    spans = wait_for(stream.spans, what="the sampled spans")
    assert 0 < len(spans) < 40  # each trace kept at 1/2: all or none is 2 in 2^40
    records = wait_for(lambda: len(stream.logs()) == len(spans) and stream.logs(), what="their records")
    assert {r.trace_id for r in records} == {s.trace_id for s in spans}
    assert {r.attributes["tracestream.sample_weight"] for r in records} == {2.0}


@pytest.mark.parametrize("setup", ["launcher", "configure"])
def test_a_sampler_no_package_registers_is_one_line(stream: RedisHandle, setup: str) -> None:
    env = _env(stream, OURS, OTEL_TRACES_SAMPLER="half_sampler")
    code = APP if setup == "launcher" else CONFIGURE + APP
    done = run_python_process(code, env, launcher=setup == "launcher")
    said = "OTEL_TRACES_SAMPLER: no sampler named 'half_sampler' is installed (installed: always_off, "
    if setup == "launcher":
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert _ours(done.stderr) == [line for line in done.stderr.splitlines() if line], done.stderr
        assert _ours(done.stderr)[0].startswith(f"tracestream: invalid configuration: {said}"), done.stderr
    else:
        assert done.returncode == 1
        last = done.stderr.splitlines()[-1]
        assert last.startswith(f"tracestream.settings.ConfigError: {said}"), done.stderr
    assert "Couldn't recognize sampler" not in done.stderr


@pytest.mark.parametrize("setup", ["launcher", "configure"])
def test_a_sampler_name_with_spaces_around_it_is_the_sampler_it_names(
    stream: RedisHandle, setup: str
) -> None:
    """`'always_off '` kept every trace: the name was checked stripped, and the SDK then read the
    variable as it was, said only `Couldn't recognize sampler`, and sampled with its default."""
    env = _env(stream, OURS, OTEL_TRACES_SAMPLER=" parentbased_always_off ")
    code = SAMPLED_APP if setup == "launcher" else CONFIGURE + SAMPLED_APP
    done = run_python_process(code, env, launcher=setup == "launcher")
    assert (done.returncode, done.stdout) == (
        0,
        "ParentBased{root:AlwaysOffSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}\n",
    ), done.stderr
    assert "Couldn't recognize sampler" not in done.stderr
    assert stream.spans() == [] and stream.logs() == []


@pytest.mark.parametrize("argument", ["abc", "1.5", "-1", "10%", "nan"])
@pytest.mark.parametrize("setup", ["launcher", "configure"])
def test_a_ratio_the_sampler_cannot_take_is_one_line(stream: RedisHandle, setup: str, argument: str) -> None:
    """The SDK warned and sampled every trace: a typo in the ratio kept them all."""
    env = _env(stream, OURS, OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG=argument)
    code = APP if setup == "launcher" else CONFIGURE + APP
    done = run_python_process(code, env, launcher=setup == "launcher")
    said = f"OTEL_TRACES_SAMPLER_ARG={argument!r} is not a ratio from 0 to 1, which "
    said += "parentbased_traceidratio takes"
    if setup == "launcher":
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert _ours(done.stderr)[0] == f"tracestream: invalid configuration: {said}", done.stderr
    else:
        assert done.returncode == 1
        assert done.stderr.splitlines()[-1] == f"tracestream.settings.ConfigError: {said}", done.stderr
    assert "Could not convert" not in done.stderr


@pytest.mark.parametrize("launcher", [True, False], ids=["launcher", "configure"])
def test_an_export_timeout_tracestream_does_not_read_is_said_once(
    stream: RedisHandle, launcher: bool
) -> None:
    """Dropped without a word, where upstream's processors read it (and warn on a bad one)."""
    env = _env(stream, OURS, OTEL_BLRP_EXPORT_TIMEOUT="abc", OTEL_BSP_EXPORT_TIMEOUT="10000")
    code = APP if launcher else CONFIGURE + CONFIGURE + APP
    done = run_python_process(code, env, launcher=launcher)
    assert done.returncode == 0, done.stderr
    assert _ours(done.stderr) == [
        f"tracestream: WARNING {name}={value!r} is not read: tracestream bounds each Redis call by "
        "TRACESTREAM_REDIS_TIMEOUT instead"
        for name, value in (("OTEL_BSP_EXPORT_TIMEOUT", "10000"), ("OTEL_BLRP_EXPORT_TIMEOUT", "abc"))
    ], done.stderr


@pytest.mark.parametrize("disabled", ["logging", "*", "flask,logging"])
@pytest.mark.parametrize("configurator", [OURS, UPSTREAMS], ids=["ours", "upstreams"])
def test_disabling_the_logging_instrumentation_says_the_capture_stays(
    stream: RedisHandle, disabled: str, configurator: dict[str, str]
) -> None:
    """Upstream exports no stdlib record then; tracestream's capture, which OTEL_LOGS_EXPORTER asked
    for, kept exporting every one without a word."""
    env = _env(stream, configurator, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=disabled)
    done = run_python_process(APP, env, launcher=True)
    assert done.returncode == 0, done.stderr
    named = "*" if disabled == "*" else "logging"
    assert _ours(done.stderr) == [
        f"tracestream: WARNING OTEL_PYTHON_DISABLED_INSTRUMENTATIONS names {named}, which turns off "
        "upstream's logging instrumentation, not tracestream's capture of stdlib records: they still go "
        "to OTEL_LOGS_EXPORTER=redis_stream; OTEL_LOGS_EXPORTER=none exports none"
    ], done.stderr
    assert [e.body for e in wait_for(stream.logs, what="the app's record")] == ["card declined"]


@pytest.mark.parametrize("configurator", [OURS, UPSTREAMS], ids=["ours", "upstreams"])
def test_other_exporters_get_no_resource_attribute_the_app_did_not_set(
    stream: RedisHandle, configurator: dict[str, str]
) -> None:
    """`deployment.environment=development` and `service.version=unknown` went to the console (and
    OTLP) exporters of a service that set neither, and under upstream's configurator only its logs
    carried them there."""
    exporters = {"OTEL_TRACES_EXPORTER": "console,redis_stream", "OTEL_LOGS_EXPORTER": "redis_stream,console"}
    env = _env(stream, configurator, **exporters)
    done = run_python_process(APP, env, launcher=True)
    assert done.returncode == 0, done.stderr
    exported = _console_items(done.stdout)
    assert {"span", "record"} <= {kind for kind, _ in exported}, done.stdout
    for _, resource in exported:
        assert resource["service.name"] == "shop"
        assert "deployment.environment" not in resource and "service.version" not in resource, resource
    [record] = wait_for(stream.logs, what="the record in Redis")
    [span] = wait_for(stream.spans, what="the span in Redis")
    for stored in (record.resource, span.resource):
        assert "deployment.environment" not in stored and "service.version" not in stored, stored


def _console_items(stdout: str) -> list[tuple[str, dict[str, object]]]:
    """The console exporters' JSON objects on stdout: each a span or a log record, with its resource."""
    items = []
    decoder = json.JSONDecoder()
    start = stdout.find("{")
    while start >= 0:
        item, end = decoder.raw_decode(stdout, start)
        items.append(("span" if "context" in item else "record", item["resource"]["attributes"]))
        start = stdout.find("{", end)
    return items
