"""configure() in real processes: idempotent, no duplicates, no feedback loop, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, RedisHandle, run_python, wait_for


def _run(handle: RedisHandle, *args: str, **env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.apps.emit_logs", *args],
        env=handle.env(OTEL_SERVICE_NAME="shop", **env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


def test_records_carry_trace_ids_and_resource(stream: RedisHandle) -> None:
    out = _run(
        stream, "--configure", "1", TRACESTREAM_SERVICE_VERSION="2.0.1", TRACESTREAM_ENVIRONMENT="staging"
    )
    entries = wait_for(lambda: len(stream.logs()) == 5 and stream.logs(), what="5 records")
    inside = [e for e in entries if e.body != "after the request"]
    assert {e.trace_id for e in inside} == {out["trace_id"]}
    assert all(len(e.span_id) == 16 for e in inside)
    outside = next(e for e in entries if e.body == "after the request")
    assert (outside.trace_id, outside.span_id, outside.severity) == ("", "", "ERROR")
    resource = entries[0].resource
    assert resource["service.name"] == "shop"
    assert resource["service.version"] == "2.0.1"
    assert resource["deployment.environment"] == "staging"
    assert resource["host.name"] and isinstance(resource["process.pid"], int)
    assert entries[0].code.startswith(str(ROOT / "tests/apps/emit_logs.py"))
    assert entries[0].attributes["order.id"] == 0
    spans = wait_for(stream.spans, what="the checkout span")
    assert spans[0].name == "checkout" and spans[0].trace_id == out["trace_id"]


def test_an_environment_set_as_deployment_environment_name_gets_no_default_beside_it(
    stream: RedisHandle,
) -> None:
    """Since semantic conventions 1.27 the environment is `deployment.environment.name`: a
    `deployment.environment` of `development` next to it would contradict the user."""
    attributes = "deployment.environment.name=production,service.version=2.3.1"
    _run(stream, "--configure", "1", OTEL_RESOURCE_ATTRIBUTES=attributes)
    resource = wait_for(stream.logs, what="the records")[0].resource
    assert resource["deployment.environment.name"] == "production"
    assert "deployment.environment" not in resource
    assert resource["service.version"] == "2.3.1"


def test_without_an_environment_the_resource_makes_none_up(stream: RedisHandle) -> None:
    """`development` and `unknown` of ours went to every exporter, an OTLP backend's included,
    which then held a production service as a development one."""
    _run(stream, "--configure", "1", OTEL_RESOURCE_ATTRIBUTES="")
    resource = wait_for(stream.logs, what="the records")[0].resource
    made_up = {"deployment.environment", "deployment.environment.name", "service.version"}
    assert made_up.isdisjoint(resource), resource


def test_configure_twice_and_upstream_logging_instrumentor_give_no_duplicates(stream: RedisHandle) -> None:
    out = _run(stream, "--configure", "2", "--instrument-logging")
    assert out["root_handlers"] == []  # nothing added to the app's handler tree
    bodies = [e.body for e in stream.logs()]
    assert sorted(bodies) == sorted(
        ["order 0 placed", "order 1 placed", "order 2 placed", "payment slow", "after the request"]
    )
    assert len({e.record_id for e in stream.logs()}) == 5


def test_an_exporter_named_twice_exports_once_and_a_smaller_queue_sets_the_batch(stream: RedisHandle) -> None:
    """A layered environment (a base image's `redis_stream`, a deployment's `,redis_stream`) wrote
    every record and span twice, as upstream's configurator does not. A queue smaller than our
    default batch (OTel allows any size) stopped the app: the line named the default, 4096."""
    _run(
        stream,
        "--configure",
        "1",
        OTEL_LOGS_EXPORTER="redis_stream, redis_stream",
        OTEL_TRACES_EXPORTER="redis_stream,redis_stream",
        OTEL_BLRP_MAX_QUEUE_SIZE="1000",
        OTEL_BSP_MAX_QUEUE_SIZE="1000",
    )
    assert len(stream.logs()) == 5
    assert [span.name for span in stream.spans()] == ["checkout"]


def test_debug_root_logger_does_not_feed_back(stream: RedisHandle) -> None:
    """redis-py, urllib3 and the SDK log at DEBUG while we export; none of it may loop back."""
    _run(stream, "--configure", "1", "--debug-root", "--count", "200")
    entries = stream.logs()
    assert len(entries) == 202
    assert {e.scope for e in entries} == {"shop.orders"}


def test_forked_child_exports_with_its_own_pid(stream: RedisHandle) -> None:
    _run(stream, "--configure", "1", "--fork")
    entries = {e.body: e for e in stream.logs()}
    child, parent = entries["from the child"], entries["after the request"]
    assert child.resource["process.pid"] != parent.resource["process.pid"]
    assert child.record_id[:16] != parent.record_id[:16]
    assert len(entries) == 6


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRACESTREAM_MAX_AGE", "ages"),
        ("OTEL_LOGS_EXPORTER", "nonexistent"),
        ("TRACESTREAM_REDIS_URL", "http://x"),
        ("OTEL_PYTHON_ID_GENERATOR", "xrya"),
    ],
)
def test_invalid_setting_fails_at_startup_naming_it(stream: RedisHandle, variable: str, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.apps.emit_logs", "--configure", "1"],
        env=stream.env(**{variable: value}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode != 0
    assert "ConfigError" in done.stderr and variable in done.stderr and repr(value) in done.stderr


FIXED_IDS = """
from opentelemetry.sdk.trace.id_generator import IdGenerator


class FixedIds(IdGenerator):
    def generate_span_id(self):
        return 0xFEED

    def generate_trace_id(self):
        return 0xFEEDFACE
"""


def test_the_id_generator_the_environment_names_makes_the_ids(stream: RedisHandle, tmp_path: Path) -> None:
    """`OTEL_PYTHON_ID_GENERATOR=xray`, as AWS's docs set it for X-Ray's time-stamped ids, was
    ignored: the SDK reads it only in upstream's configurator."""
    (tmp_path / "fixed_ids.py").write_text(FIXED_IDS)
    metadata = tmp_path / "fixed_ids-1.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: fixed-ids\nVersion: 1.0\n")
    (metadata / "entry_points.txt").write_text("[opentelemetry_id_generator]\nfixed = fixed_ids:FixedIds\n")
    out = _run(stream, "--configure", "1", PYTHONPATH=f"{tmp_path}:{ROOT}", OTEL_PYTHON_ID_GENERATOR="fixed")
    assert out["trace_id"] == format(0xFEEDFACE, "032x")
    assert {span.span_id for span in stream.spans()} == {format(0xFEED, "016x")}


LINKED_SPANS = """
import tracestream
from opentelemetry import trace
tracestream.configure()
tracer = trace.get_tracer("docs")
with tracer.start_as_current_span("span-1") as first:
    pass
link = trace.Link(first.get_span_context())
for name in ("span-2", "span-3"):
    with tracer.start_as_current_span(name, links=[link]):
        pass
"""


def test_span_links_are_said_once_not_to_be_stored(stream: RedisHandle) -> None:
    """The OTel docs' "Adding links": the links were dropped without a word."""
    said = run_python(LINKED_SPANS, stream.env())
    lines = [line for line in said.splitlines() if "links" in line]
    assert lines == [
        "tracestream: WARNING span links are not stored: the span stream has no field for them (the "
        "first span with links: 'span-2'); the spans themselves are, and exporters beside redis_stream "
        "get the links"
    ], said
    assert sorted(span.name for span in wait_for(lambda: len(stream.spans()) == 3 and stream.spans())) == [
        "span-1",
        "span-2",
        "span-3",
    ]


POINTED_ELSEWHERE = """
import os, tracestream
first = tracestream.configure()
if os.fork() == 0:  # a child pointed elsewhere, as a supervisor's worker might be
    os.environ["TRACESTREAM_STREAM"] = "elsewhere"
    assert tracestream.configure() is first
    os._exit(0)
os.wait()
assert tracestream.configure() is first  # the same environment: nothing to say
"""


def test_configure_again_under_another_environment_says_where_records_go(
    stream: RedisHandle,
) -> None:
    stderr = run_python(POINTED_ELSEWHERE, stream.env())
    assert stderr.splitlines() == [
        "tracestream: WARNING configure() already ran in this process; keeping its first settings "
        f"(stream {stream.stream!r}, not 'elsewhere'): records go to {stream.url}, stream {stream.stream!r}"
    ]


# A supervisor's worker, forked after the parent named its service, asked for another Redis.
ANOTHER_REDIS_ASKED = """
import os, tracestream
first = tracestream.configure(service_name="forker")
if os.fork() == 0:
    assert tracestream.configure(redis_url="redis://127.0.0.1:1/0") is first
    os._exit(0)
os.wait()
"""


def test_configure_again_names_only_what_the_second_call_asked(stream: RedisHandle) -> None:
    """The child never named a service: `service_name 'forker', not None` read as a conflict."""
    stderr = run_python(ANOTHER_REDIS_ASKED, stream.env())
    assert stderr.splitlines() == [
        "tracestream: WARNING configure() already ran in this process; keeping its first settings "
        f"(redis_url {stream.url!r}, not 'redis://127.0.0.1:1/0'): records go to {stream.url}, "
        f"stream {stream.stream!r}"
    ]


# A web app that imports the module where its Celery app is defined (to call `.delay()`), as
# Celery's "First steps with Django" has it, where that module names the worker's service.
NAMED_TWICE = """
import tracestream
tracestream.configure(service_name="worker", redis_url="{url}")
tracestream.configure(service_name="api", redis_url="{url}")
"""


def test_configure_again_naming_another_service_says_which_name_is_kept(stream: RedisHandle) -> None:
    stderr = run_python(NAMED_TWICE.format(url=stream.url), stream.env())
    assert stderr.splitlines() == [
        "tracestream: WARNING configure() already ran in this process; keeping its first settings "
        f"(service_name 'worker', not 'api'): records go to {stream.url}, stream {stream.stream!r}"
    ]


def test_what_configure_returns_shows_where_records_go_in_a_line(stream: RedisHandle) -> None:
    """A notebook cell or REPL line ending with `configure()` shows it: the dataclass's repr was
    1.5 kB of settings, providers and processors."""
    secret_url = stream.url.replace("redis://", "redis://:s3cret@")
    shown = run_python(
        "import sys, tracestream; print(repr(tracestream.configure()), file=sys.stderr)",
        stream.env(
            TRACESTREAM_REDIS_URL=secret_url,
            TRACESTREAM_REDIS_TIMEOUT="100ms",
            TRACESTREAM_SPOOL_MAX_BYTES="0",
        ),
    )
    expected = f"<Telemetry to {secret_url.replace(':s3cret@', ':***@')}, stream {stream.stream!r}>"
    assert shown.splitlines()[0] == expected
