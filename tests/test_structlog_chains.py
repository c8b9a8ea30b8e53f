"""structlog's own setups, with and without tracestream: configure() and the launcher join our
processor to every chain alike, each event is stored once, and the app prints as it did."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from tests.apps.servers import LAUNCHER_ENV, bin_path, launched, printed, run_json, serve
from tests.support import RedisHandle, run_python_process, wait_for
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.schema import LogEntry

# structlog's "Getting Started": no configuration at all, the default chain and PrintLogger.
GETTING_STARTED = """
import os
if os.environ.get("TRACED") == "1" and os.environ.get("ORDER") == "configure-first":
    import tracestream
    telemetry = tracestream.configure()
import structlog
if os.environ.get("TRACED") == "1" and os.environ.get("ORDER") == "structlog-first":
    import tracestream
    telemetry = tracestream.configure()
print("configured:", structlog.is_configured())
log = structlog.get_logger()
log.info("hello, %s!", "world", key="value!", more_than_strings=[1, 2, 3])
"""

_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?Z?")


def _without_times(text: str) -> str:
    return _TIME.sub("<time>", text)


def _bare_and_traced(code: str, env: dict[str, str]) -> tuple[str, str]:
    """The app's stdout and stderr with configure(), checked to print as without tracestream."""
    bare = run_python_process(code, env)
    traced = run_python_process(code, {**env, "TRACED": "1"})
    for done in (bare, traced):
        assert done.returncode == 0, done.stderr
    assert _without_times(traced.stdout) == _without_times(bare.stdout)
    assert bare.stderr == ""
    return traced.stdout, traced.stderr


@pytest.mark.parametrize("order", ["configure-first", "structlog-first"])
def test_configure_writes_structlogs_default_chain_without_an_otel_processor(
    stream: RedisHandle, order: str
) -> None:
    """configure() joins our processor as the launcher does: before, only the launcher did."""
    printed_out, said = _bare_and_traced(GETTING_STARTED, stream.env(ORDER=order, OTEL_SERVICE_NAME="cart"))
    assert printed_out.startswith("configured: False\n") and said == ""
    [hello] = wait_for(lambda: stream.logs(), what="the structlog record")
    assert (hello.scope, hello.body, hello.severity) == ("structlog", "hello, world!", "INFO")
    assert hello.attributes == {"key": "value!", "more_than_strings": [1, 2, 3]}


# Apps that extend or test structlog's configuration, under the launcher.
STRUCTLOG_SETUPS = """
import os, structlog
recipe = os.environ["RECIPE"]
print("configured:", structlog.is_configured(), flush=True)
if recipe == "extend" and os.environ.get("TRACED") == "1":  # tracestream's docs: before the renderer
    from tracestream.integrations.structlog import OTelProcessor
    chain = structlog.get_config()["processors"]
    structlog.configure(processors=[*chain[:-1], OTelProcessor(), chain[-1]])
elif recipe == "if-not-configured":  # a library or app that leaves an earlier setup alone
    if not structlog.is_configured():
        structlog.configure(processors=[structlog.processors.add_log_level,
                                        structlog.processors.KeyValueRenderer(sort_keys=True)])
elif recipe == "once-twice":  # structlog warns, at the app's line, of a repeated configure_once()
    for _ in range(2):
        structlog.configure_once(processors=[structlog.processors.add_log_level,
                                             structlog.processors.KeyValueRenderer(sort_keys=True)])
structlog.get_logger().info("order placed", order=7)
"""


@pytest.mark.parametrize("recipe", ["extend", "if-not-configured", "once-twice"])
def test_under_the_launcher_each_event_is_written_once_and_the_app_prints_as_before(
    stream: RedisHandle, recipe: str
) -> None:
    """The chain the app builds from `get_config()` holds our joined processor and its own:
    the joined one steps out. Joining leaves `is_configured()` as the app set it."""
    env = stream.env(RECIPE=recipe, OTEL_SERVICE_NAME="cart", **LAUNCHER_ENV)
    bare = run_python_process(STRUCTLOG_SETUPS, env)
    launched_run = run_python_process(STRUCTLOG_SETUPS, {**env, "TRACED": "1"}, launcher=True)
    assert (bare.returncode, launched_run.returncode) == (0, 0), launched_run.stderr
    assert _without_times(launched_run.stdout) == _without_times(bare.stdout)
    assert bare.stdout.startswith("configured: False\n")
    # the app's warnings and ours; the launcher says which configurator it loaded (and Python
    # 3.13 prints a `-c` warning's source line under it, in both runs)
    said = [
        [line for line in run.stderr.splitlines() if "Warning" in line or line.startswith("tracestream:")]
        for run in (launched_run, bare)
    ]
    assert said[0] == said[1]
    assert all("Warning" in line or line.startswith("  ") for line in bare.stderr.splitlines())
    [placed] = wait_for(lambda: stream.logs(), what="the structlog record")
    assert (placed.body, placed.attributes) == ("order placed", {"order": 7})
    assert stream.logs() == [placed]


# structlog's "Standard Library" chapter: `recreate_defaults()` renders to text, then logging.
RECREATED_DEFAULTS = """
import logging, os, structlog
if os.environ.get("TRACED") == "1":
    import tracestream
    tracestream.configure()
structlog.stdlib.recreate_defaults(log_level=logging.INFO)
log = structlog.get_logger("shop.orders")
log.info("order placed", order=1)
log.warning("stock low", sku="BOOK-1")
"""


def test_recreate_defaults_says_the_stream_gets_only_its_text(stream: RedisHandle) -> None:
    printed_out, said = _bare_and_traced(RECREATED_DEFAULTS, stream.env(OTEL_SERVICE_NAME="cart"))
    assert said.splitlines() == [
        "tracestream: WARNING structlog renders its events to text before they reach logging: the stream "
        "gets that text, without their key/values; end structlog's processors with "
        "structlog.stdlib.ProcessorFormatter.wrap_for_formatter or render_to_log_kwargs"
    ]
    entries = wait_for(lambda: len(stream.logs()) >= 2 and stream.logs(), what="two records")
    assert [e.body for e in entries] == printed_out.splitlines()
    assert [(e.scope, e.severity) for e in entries] == [("shop.orders", "INFO"), ("shop.orders", "WARN")]


# structlog's API reference: `ExceptionPrettyPrinter` prints the exception before the renderer,
# and takes it out of the event.
PRETTY_PRINTED_EXCEPTION = """
import os, structlog
if os.environ.get("TRACED") == "1":
    import tracestream
    tracestream.configure()
structlog.configure(processors=[structlog.processors.add_log_level, structlog.processors.format_exc_info,
                                structlog.processors.ExceptionPrettyPrinter(),
                                structlog.processors.KeyValueRenderer()])
try:
    {}["sku-7"]
except KeyError:
    structlog.get_logger().exception("stock lookup failed", order=7)
"""


def test_an_exception_pretty_printer_leaves_the_exception_to_the_record(stream: RedisHandle) -> None:
    """Ours ran after it, before the renderer, and found no exception: the ERROR record had none."""
    printed_out, said = _bare_and_traced(PRETTY_PRINTED_EXCEPTION, stream.env(OTEL_SERVICE_NAME="cart"))
    assert said == "" and "KeyError: 'sku-7'" in printed_out
    [failed] = wait_for(lambda: stream.logs(), what="the structlog record")
    assert (failed.body, failed.severity, failed.attributes) == ("stock lookup failed", "ERROR", {"order": 7})
    assert (failed.exception_type, failed.exception_message) == ("KeyError", "'sku-7'")
    assert failed.exception_stacktrace.startswith("Traceback (most recent call last):")


# structlog's "Logging Best Practices" and "Performance" chapters: a filtering bound logger,
# cached on first use; tracestream set up later, as in a FastAPI lifespan.
CACHED_ON_FIRST_USE = """
import logging, os, structlog
structlog.configure(
    processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                structlog.processors.JSONRenderer()],
    wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    cache_logger_on_first_use=True,
)
log = structlog.get_logger()
log.info("imported")
if os.environ.get("TRACED") == "1":
    import tracestream
    tracestream.configure()
log.info("serving", port=8000)
"""


def test_a_logger_structlog_cached_before_configure_is_written_after_it(stream: RedisHandle) -> None:
    """A logger bound on first use holds the chain it was bound with: the chain in use took our
    processor as a new list, which that logger never saw, and its events were lost without a word."""
    printed_out, said = _bare_and_traced(CACHED_ON_FIRST_USE, stream.env(OTEL_SERVICE_NAME="cart"))
    assert said == "" and printed_out.count("\n") == 2
    [serving] = wait_for(lambda: stream.logs(), what="the event logged after configure()")
    assert (serving.body, serving.attributes) == ("serving", {"port": 8000})


# Celery's "First steps" app, its task logging with structlog's default PrintLogger, and
# printing; under `celery worker` both go to the worker's stdout, which Celery logs.
CELERY_TASKS = """
import os, structlog
from celery import Celery
app = Celery("structlog_tasks", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)
processors = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
              structlog.processors.KeyValueRenderer(key_order=["event"])]
if os.environ.get("TRACED") == "configure":  # tracestream's docs: its processor before the renderer
    import tracestream
    from tracestream.integrations.structlog import OTelProcessor
    tracestream.configure()
    processors.insert(-1, OTelProcessor())
structlog.configure(processors=processors)
log = structlog.get_logger()

@app.task(name="shop.add")
def add(x, y):
    structlog.contextvars.bind_contextvars(job=f"add-{x}")
    log.info("adding", x=x)
    print(f"plain print {x}")
    return x + y
"""
TASKS = 3
PUBLISH = f"""
import json
from structlog_tasks import add
print(json.dumps([add.delay(i, 1).id for i in range({TASKS})]))
"""


def _worker_prints(
    redis_server: EmbeddedRedis, stream: RedisHandle, app_dir: Path, db: int, traced: str
) -> list[str]:
    """What a prefork worker printed for its tasks (its redirected stdout's lines), times left out."""
    broker = f"redis://127.0.0.1:{redis_server.port}/{db}"
    with redis.Redis.from_url(broker) as broker_db:
        broker_db.flushdb()  # no task left from another run
    env = stream.env(PYTHONPATH=str(app_dir), CELERY_BROKER_URL=broker, OTEL_SERVICE_NAME="worker")
    if traced:
        env.update(TRACED=traced, **LAUNCHER_ENV)
    else:
        env.update(OTEL_SDK_DISABLED="true")
    command = [bin_path("celery"), "-A", "structlog_tasks", "worker", "-c", "1", "-l", "INFO", "-n", "w@sl"]
    if traced == "launcher":
        command = launched(*command)
    with serve(command, env, lambda server: printed(server, "ready."), timeout=60) as worker:
        run_json(PUBLISH, {**env, "TRACED": "", "OTEL_SDK_DISABLED": "true"})
        wait_for(lambda: printed(worker, f"plain print {TASKS - 1}"), timeout=30, what="the last task")
        worker.stop()
        output = worker.output()
    return [
        line.split(": ", 1)[1]
        for line in output.splitlines()
        if "/ForkPoolWorker-" in line and "WARNING" in line
    ]


@pytest.mark.parametrize("traced", ["launcher", "configure"])
def test_a_celery_workers_structlog_events_are_stored_once_and_printed_as_before(
    redis_server: EmbeddedRedis, stream: RedisHandle, tmp_path: Path, traced: str
) -> None:
    """Celery logs the worker's stdout (`worker_redirect_stdouts`) as `celery.redirected`
    WARNING records: a structlog event was stored twice, once as that rendered line. A line the
    task prints itself is still stored."""
    (tmp_path / "structlog_tasks.py").write_text(CELERY_TASKS)
    bare_stream = RedisHandle(url=stream.url, stream=f"{stream.stream}:bare")
    bare = _worker_prints(redis_server, bare_stream, tmp_path, 12, traced="")
    assert [line for line in bare if "event='adding'" in line] == [
        f"WARNING/ForkPoolWorker-1] event='adding' x={i} job='add-{i}' level='info'" for i in range(TASKS)
    ]
    assert _worker_prints(redis_server, stream, tmp_path, 13, traced=traced) == bare
    logs = wait_for(lambda: len(_task_records(stream)) >= 2 * TASKS and _task_records(stream), what="records")
    assert sorted((e.scope, e.body, e.severity) for e in logs) == [
        *(("celery.redirected", f"plain print {i}", "WARN") for i in range(TASKS)),
        *(("structlog", "adding", "INFO") for _ in range(TASKS)),
    ]
    events = [e for e in logs if e.scope == "structlog"]
    assert sorted(e.attributes["x"] for e in events) == list(range(TASKS))
    assert all(e.trace_id and e.attributes["job"] == f"add-{e.attributes['x']}" for e in events)


def _task_records(stream: RedisHandle) -> list[LogEntry]:
    return [e for e in stream.logs() if e.scope in ("structlog", "celery.redirected")]
