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
CONFIGURE = "import tracestream\ntracestream.configure()\n"
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
    done = run_python_process(code if launcher else CONFIGURE + code, env, launcher=launcher)
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


@SETUPS
def test_sentrys_otel_recipe_under_the_stable_http_names_uploads_no_transaction_of_its_own(
    stream: RedisHandle, launcher: bool
) -> None:
    """Sentry's processor knows its uploads by the old `http.url` alone: each upload's span was a
    transaction it uploaded again, without end. Its uploads make no spans, so none is sent and
    none is in the stream."""
    port = free_port()
    done = _run(SENTRY.replace("{port}", str(port)), stream, launcher)
    assert done.stdout.splitlines() == ["sentry transaction: checkout"], done.stdout
    names = {s.name for s in wait_for(lambda: stream.spans(), what="our spans")}
    assert names >= {"checkout", "charge"} and "POST" not in names, names


# Sentry's default setup, its logging integration on, set up before ours; the breadcrumbs of
# log lines it takes are printed by its documented `before_breadcrumb` hook (its Redis
# integration's, of the commands the export threads send, stay in those threads' own scope).
SENTRY_BREADCRUMBS = """
import logging
import sentry_sdk

def before_breadcrumb(crumb, hint):
    if crumb.get("category") != "redis":
        print("breadcrumb:", crumb["message"], flush=True)
    return crumb

sentry_sdk.init(dsn="http://public@127.0.0.1:{port}/1", before_breadcrumb=before_breadcrumb)
import tracestream
tracestream.configure(service_name="shop")
tracestream.configure(service_name="checkout")  # which tracestream answers with a line
logging.getLogger("shop").warning("card declined")
"""


def test_tracestreams_own_lines_are_no_sentry_breadcrumbs(stream: RedisHandle) -> None:
    """Sentry's logging integration wraps `Logger.callHandlers`: tracestream's lines, which went
    through it, became breadcrumbs (with `enable_logs`, Sentry logs)."""
    done = run_python_process(SENTRY_BREADCRUMBS.replace("{port}", str(free_port())), stream.env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["breadcrumb: card declined"], done.stdout
    assert "tracestream: WARNING configure() already ran" in done.stderr


# opentelemetry-python's docs/examples/logs/example.py, with the console exporter its README
# shows in place of OTLP; `{configure_after}` marks where an app calls configure() after it.
OTEL_LOGS_EXAMPLE = """
import logging

from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter
from opentelemetry.sdk.resources import Resource

logger_provider = LoggerProvider(
    resource=Resource.create({"service.name": "shoppingcart", "service.instance.id": "instance-12"}),
)
set_logger_provider(logger_provider)

exporter = ConsoleLogRecordExporter()
logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
handler = LoggingHandler(level=logging.NOTSET, logger_provider=logger_provider)

# Set the root logger level to NOTSET to ensure all messages are captured
logging.getLogger().setLevel(logging.NOTSET)

# Attach OTLP handler to root logger
logging.getLogger().addHandler(handler)
{configure_after}
logger1 = logging.getLogger("myapp.area1")
logger2 = logging.getLogger("myapp.area2")

logger1.debug("Quick zephyrs blow, vexing daft Jim.")
logger1.info("How quickly daft jumping zebras vex.")
logger2.warning("Jail zesty vixen who grabbed pay from quack.")
logger2.error("The five boxing wizards jump quickly.")

logger_provider.force_flush()
"""
LOGS_EXAMPLE_LINES = [
    "Quick zephyrs blow, vexing daft Jim.",
    "How quickly daft jumping zebras vex.",
    "Jail zesty vixen who grabbed pay from quack.",
    "The five boxing wizards jump quickly.",
]


@pytest.mark.parametrize("order", ["configure-first", "configure-after"])
def test_the_otel_docs_logs_example_keeps_its_own_export_beside_ours(stream: RedisHandle, order: str) -> None:
    """The app's handler feeds the app's exporter as without us; the stream gets each record once,
    from INFO (tracestream's level) up, and the app's handler keeps lastResort quiet as before."""
    if order == "configure-after":
        code = OTEL_LOGS_EXAMPLE.replace("{configure_after}", CONFIGURE)
        done = run_python_process(code, stream.env(OTEL_SERVICE_NAME="app"))
        assert done.returncode == 0, done.stderr
    else:
        done = _run(OTEL_LOGS_EXAMPLE.replace("{configure_after}", ""), stream, launcher=False)
    exported = [line for line in done.stdout.splitlines() if '"body": ' in line]
    assert [line.split('"body": ')[1].strip().strip('",') for line in exported] == LOGS_EXAMPLE_LINES
    wanted = LOGS_EXAMPLE_LINES[1:]
    wait_for(lambda: sorted(e.body for e in stream.logs()) == sorted(wanted), what="each record once")
    assert not [line for line in LOGS_EXAMPLE_LINES if line in done.stderr], done.stderr
    assert "Overriding of current LoggerProvider" not in done.stderr
    joined = "tracestream: WARNING the app set a LoggerProvider after tracestream's"
    assert done.stderr.count(joined) == (order == "configure-first"), done.stderr


@pytest.mark.parametrize("env", [{}, UPSTREAM_FIRST], ids=["ours", "upstreams-configurator"])
def test_the_otel_docs_logs_example_under_the_launcher_is_told_where_its_processor_goes(
    stream: RedisHandle, env: dict[str, str]
) -> None:
    """The example sets its provider before it adds its processor: the line named its processors
    "(none yet)", and under upstream's configurator, whose provider ours joined, no line was said.
    Its handler is bound to its own provider, whose resource its exporter gets: the line said
    that resource was not used."""
    done = _run(OTEL_LOGS_EXAMPLE.replace("{configure_after}", ""), stream, launcher=True, **env)
    exported = [line for line in done.stdout.splitlines() if '"body": ' in line]
    assert len(exported) == len(LOGS_EXAMPLE_LINES), done.stdout
    assert done.stdout.count('"service.name": "shoppingcart"') == len(LOGS_EXAMPLE_LINES), done.stdout
    line = (
        "tracestream: WARNING the app set a LoggerProvider after tracestream's, and OpenTelemetry keeps "
        "the first: the log record processors it is given also get what is emitted through tracestream's, "
        "with tracestream's resource; what is emitted through it directly (a LoggingHandler given it) "
        "keeps its resource"
    )
    assert done.stderr.count(line) == 1, done.stderr
    assert "Overriding of current LoggerProvider" not in done.stderr
    wanted = sorted(LOGS_EXAMPLE_LINES[1:])
    wait_for(lambda: sorted(e.body for e in stream.logs()) == wanted, what="each record once")


def test_a_logging_handler_on_tracestreams_provider_adds_no_second_copy(stream: RedisHandle) -> None:
    """`LoggingHandler()` binds to the global provider, ours: what it bridges is what the capture took."""
    code = (
        "import logging\n"
        "from opentelemetry.sdk._logs import LoggingHandler\n"
        "logging.getLogger().addHandler(LoggingHandler(level=logging.NOTSET))\n"
        "logging.getLogger('app').warning('only once please')\n"
        "logging.getLogger('app').debug('below our level')\n"
    )
    _run(code, stream, launcher=False)
    wait_for(lambda: [e.body for e in stream.logs()] == ["only once please"], what="the record")
    assert [e.body for e in stream.logs()] == ["only once please"]


def test_an_app_logger_provider_set_after_ours_gets_what_its_handler_bridges(stream: RedisHandle) -> None:
    """OpenTelemetry keeps our provider: the app's processors join it, so a handler bound to the
    global provider still feeds the app's exporter, and one line says so."""
    code = (
        "import logging\n"
        "from opentelemetry._logs import get_logger_provider, set_logger_provider\n"
        "from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler\n"
        "from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter, SimpleLogRecordProcessor\n"
        "provider = LoggerProvider()\n"
        "provider.add_log_record_processor(SimpleLogRecordProcessor(ConsoleLogRecordExporter(\n"
        "    formatter=lambda record: f'exported: {record.log_record.body}\\n')))\n"
        "set_logger_provider(provider)\n"
        "logging.getLogger().addHandler(LoggingHandler(logger_provider=get_logger_provider()))\n"
        "logging.getLogger('app').warning('hello from the app')\n"
    )
    done = _run(code, stream, launcher=False)
    assert done.stdout.splitlines() == ["exported: hello from the app"], done.stdout
    wait_for(lambda: [e.body for e in stream.logs()] == ["hello from the app"], what="the record, once")
    line = (
        "tracestream: WARNING the app set a LoggerProvider after tracestream's, and OpenTelemetry keeps "
        "the first: its log record processors (SimpleLogRecordProcessor) also get what is emitted through "
        "tracestream's, with tracestream's resource; what is emitted through it directly (a LoggingHandler "
        "given it) keeps its resource"
    )
    assert done.stderr.count(line) == 1, done.stderr


def test_the_app_shutting_its_providers_down_leaves_tracestreams_part_running(stream: RedisHandle) -> None:
    """Joined, our processors sit in the app's providers; the app's `shutdown()` flushes them, and
    what the process records afterwards still reaches the stream (tracestream closes at exit)."""
    code = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        + OTEL_LOGS_EXAMPLE.replace("{configure_after}", CONFIGURE)
        + "logger_provider.shutdown()\n"
        "trace.get_tracer_provider().shutdown()\n"
        "with trace.get_tracer('app').start_as_current_span('after-shutdown'):\n"
        "    logging.getLogger('myapp').warning('logged after the app shut its providers down')\n"
    )
    done = run_python_process(code, stream.env(OTEL_SERVICE_NAME="app"))
    assert done.returncode == 0, done.stderr
    [record] = wait_for(
        lambda: [e for e in stream.logs() if e.body == "logged after the app shut its providers down"],
        what="the record logged after the app's shutdown",
    )
    [span] = wait_for(lambda: [s for s in stream.spans() if s.name == "after-shutdown"], what="the span")
    assert record.span_id == span.span_id
    assert "tracestream:" not in done.stderr, done.stderr


# The OpenTelemetry docs' manual setup with a console exporter, then an httpx call; `{before}`
# is where the app may have imported httpx already, whose instrumentation read the HTTP names.
APP_EXPORTER_AND_HTTPX = """
import http.server, threading
{before}
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, ConsoleSpanExporter

server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=server.serve_forever, daemon=True).start()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
trace.set_tracer_provider(provider)
import httpx
httpx.get(f"http://127.0.0.1:{server.server_port}/")
server.shutdown()
"""


@pytest.mark.parametrize("contrib_read_the_names", [False, True], ids=["before-contrib", "after-contrib"])
def test_an_app_exporter_joined_later_gets_contribs_default_http_names_or_is_told(
    stream: RedisHandle, contrib_read_the_names: bool
) -> None:
    """Alone, tracestream has contrib use the stable HTTP names; an exporter of the app's that
    joins before contrib reads them gets contrib's default, and after, one line says how to
    keep both."""
    before = "import httpx" if contrib_read_the_names else ""
    done = _run(APP_EXPORTER_AND_HTTPX.replace("{before}", before), stream, launcher=False)
    client_spans = [
        chunk for chunk in done.stdout.split('"name": ')[1:] if '"kind": "SpanKind.CLIENT"' in chunk
    ]
    assert len(client_spans) == 1, done.stdout
    line = [line for line in done.stderr.splitlines() if line.startswith(JOINED)]
    assert len(line) == 1, done.stderr
    if contrib_read_the_names:
        assert '"http.request.method": "GET"' in client_spans[0]
        assert line[0].endswith("set it to http/dup to keep contrib's default names as well"), line
    else:
        assert '"http.method": "GET"' in client_spans[0] and "http.request.method" not in client_spans[0]
        assert "http/dup" not in line[0], line


def test_an_app_provider_with_its_own_exporter_before_ours_keeps_contribs_default_http_names(
    stream: RedisHandle,
) -> None:
    code = APP_EXPORTER_AND_HTTPX.replace("{before}", "").replace(
        "trace.set_tracer_provider(provider)\n", "trace.set_tracer_provider(provider)\n" + CONFIGURE
    )
    done = run_python_process(code, stream.env(OTEL_SERVICE_NAME="app"))
    assert done.returncode == 0, done.stderr
    assert '"http.method": "GET"' in done.stdout and "http.request.method" not in done.stdout, done.stdout
    wait_for(lambda: [s for s in stream.spans() if s.kind == "CLIENT"], what="our copy of the span")


# The OpenTelemetry docs' manual setup ("Exporters": a `service.name` resource) before configure().
NAMED_PROVIDER_FIRST = """
import logging
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider

trace.set_tracer_provider(TracerProvider(resource=Resource.create({SERVICE_NAME: "{provider_name}"})))
import tracestream
tracestream.configure(service_name="checkout")
with trace.get_tracer("checkout").start_as_current_span("pay"):
    logging.getLogger("checkout").warning("paying")
"""


@pytest.mark.parametrize("provider_name", ["shop-app", "checkout"])
def test_a_tracer_provider_set_before_configure_names_both_service_names_where_they_differ(
    stream: RedisHandle, provider_name: str
) -> None:
    """Its spans keep its resource and the records carry configure()'s `service_name`: a trace
    list by the records' service found none of the spans, and nothing said why."""
    code = NAMED_PROVIDER_FIRST.replace("{provider_name}", provider_name)
    done = run_python_process(code, stream.env())
    assert done.returncode == 0, done.stderr
    [span] = wait_for(lambda: [s for s in stream.spans() if s.name == "pay"], what="the span")
    [record] = wait_for(lambda: [e for e in stream.logs() if e.body == "paying"], what="the record")
    assert (span.service, record.service, record.trace_id) == (provider_name, "checkout", span.trace_id)
    line = (
        "tracestream: WARNING the TracerProvider set before configure() keeps its resource on spans: "
        "service.name 'shop-app' there, 'checkout' on records, so `tracestream traces --service checkout` "
        "finds none of its spans; give that provider the same service.name, or call configure() first"
    )
    assert done.stderr.count(line) == (provider_name != "checkout"), done.stderr


def test_a_tracer_provider_set_before_configure_that_takes_no_processors_is_said_not_refused(
    stream: RedisHandle,
) -> None:
    """OpenTelemetry refused ours with its bare "Overriding of current TracerProvider" line, and
    nothing said that no span would reach Redis."""
    code = (
        "from opentelemetry import trace\n"
        "trace.set_tracer_provider(trace.NoOpTracerProvider())\n"
        + CONFIGURE
        + "import logging\nlogging.getLogger('app').warning('still recorded')\n"
    )
    done = run_python_process(code, stream.env())
    assert done.returncode == 0, done.stderr
    wait_for(lambda: [e.body for e in stream.logs()] == ["still recorded"], what="the record")
    assert "Overriding of current TracerProvider" not in done.stderr, done.stderr
    line = (
        "tracestream: WARNING the TracerProvider set before configure() (NoOpTracerProvider) takes no "
        "processors, and OpenTelemetry keeps the first: no span reaches Redis"
    )
    assert [said for said in done.stderr.splitlines() if said.startswith("tracestream:")] == [line]
