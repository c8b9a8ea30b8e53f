"""An app's own OpenTelemetry setup made after ours, under the launcher or after `configure()`:
OpenTelemetry keeps the first tracer provider, so the app's span processors join ours, and a
propagator that drops W3C trace context is said in one line."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import RedisHandle, run_python_process, wait_for
from tracestream.embedded_redis import free_port

# The OpenTelemetry docs' manual setup ("Acquiring a tracer"), with a log line in the span.
OTEL_DOCS = """
import logging
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

provider = TracerProvider()
processor = BatchSpanProcessor(ConsoleSpanExporter())
provider.add_span_processor(processor)

# Sets the global default tracer provider
trace.set_tracer_provider(provider)

# Creates a tracer from the global tracer provider
tracer = trace.get_tracer("my.tracer.name")
with tracer.start_as_current_span("span-name"):
    logging.getLogger("app").warning("inside span-name")
"""

# Sentry's "OpenTelemetry support" recipe for sentry-sdk 2.x; each transaction Sentry would
# send is printed by its documented `before_send_transaction` hook, and dropped.
SENTRY = """
import sentry_sdk
from opentelemetry import trace
from opentelemetry.propagate import set_global_textmap
from opentelemetry.sdk.trace import TracerProvider
from sentry_sdk.integrations.opentelemetry import SentrySpanProcessor, SentryPropagator

def before_send_transaction(event, hint):
    print("sentry transaction:", event["transaction"], flush=True)
    return None

sentry_sdk.init(dsn="http://public@127.0.0.1:{port}/1", traces_sample_rate=1.0, instrumenter="otel",
                before_send_transaction=before_send_transaction)
provider = TracerProvider()
provider.add_span_processor(SentrySpanProcessor())
trace.set_tracer_provider(provider)
set_global_textmap(SentryPropagator())

with trace.get_tracer("checkout").start_as_current_span("checkout"):
    with trace.get_tracer("checkout").start_as_current_span("charge"):
        pass
"""
CONFIGURE_FIRST = "import tracestream\ntracestream.configure()\n"
JOINED = (
    "tracestream: WARNING the app set a TracerProvider after tracestream's, and OpenTelemetry keeps the first"
)


def _run(code: str, stream: RedisHandle, launcher: bool, **extra: str) -> subprocess.CompletedProcess[str]:
    env = stream.env(
        OTEL_SERVICE_NAME="app",
        OTEL_LOGS_EXPORTER="redis_stream",
        OTEL_TRACES_EXPORTER="redis_stream",
        **extra,
    )
    done = run_python_process(code if launcher else CONFIGURE_FIRST + code, env, launcher=launcher)
    assert done.returncode == 0, done.stderr
    return done


SETUPS = pytest.mark.parametrize("launcher", [True, False], ids=["launcher", "configure-first"])
# Upstream's distro and configurator picked, as install order may pick them: ours joins their provider.
UPSTREAM_FIRST = {
    "OTEL_PYTHON_DISTRO": "distro",
    "OTEL_PYTHON_CONFIGURATOR": "configurator",
    "OTEL_METRICS_EXPORTER": "none",
}


@pytest.mark.parametrize(
    ("launcher", "env"),
    [(True, {}), (True, UPSTREAM_FIRST), (False, {})],
    ids=["launcher", "launcher-after-upstreams-configurator", "configure-first"],
)
def test_the_otel_docs_setup_after_ours_keeps_its_console_exporter(
    stream: RedisHandle, launcher: bool, env: dict[str, str]
) -> None:
    done = _run(OTEL_DOCS, stream, launcher, **env)
    assert '"name": "span-name"' in done.stdout  # the app's ConsoleSpanExporter got its span
    [span] = wait_for(
        lambda: [s for s in stream.spans() if s.name == "span-name"], what="our copy of the span"
    )
    [record] = wait_for(lambda: [e for e in stream.logs() if e.body == "inside span-name"], what="the record")
    assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id)
    assert done.stderr.count(JOINED + ": its span processors (BatchSpanProcessor)") == 1, done.stderr
    assert "Overriding of current TracerProvider" not in done.stderr


@SETUPS
def test_sentrys_otel_recipe_after_ours_keeps_its_transactions_and_says_what_it_drops(
    stream: RedisHandle, launcher: bool
) -> None:
    """With both HTTP names, as the line asks, Sentry's processor knows its own uploads (the
    launcher instruments urllib3, which its transport uses) and sends the app's transaction alone."""
    sentry = SENTRY.replace("{port}", str(free_port()))
    done = _run(sentry, stream, launcher, OTEL_SEMCONV_STABILITY_OPT_IN="http/dup")
    assert done.stdout.splitlines() == ["sentry transaction: checkout"], done.stdout
    assert {s.name for s in wait_for(lambda: stream.spans(), what="our spans")} >= {"checkout", "charge"}
    assert done.stderr.count(JOINED + ": its span processors (SentrySpanProcessor)") == 1, done.stderr
    # Sentry's propagator carries no traceparent: one line says what that costs
    assert done.stderr.count("tracestream: WARNING the global propagator is now SentryPropagator,") == 1, (
        done.stderr
    )
    assert "OTEL_SEMCONV_STABILITY_OPT_IN=http/dup" not in done.stderr


def test_sentrys_otel_recipe_under_the_stable_http_names_is_told_to_keep_both(stream: RedisHandle) -> None:
    done = _run(SENTRY.replace("{port}", str(free_port())), stream, launcher=True)
    [line] = [line for line in done.stderr.splitlines() if line.startswith(JOINED)]
    assert line.endswith(
        "; SentrySpanProcessor knows Sentry's own uploads by http.url, which the stable HTTP names "
        "leave out: set OTEL_SEMCONV_STABILITY_OPT_IN=http/dup, or each upload becomes a transaction"
    )
