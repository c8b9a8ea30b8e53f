"""structlog and loguru into OTel: key/values as attributes, in the current trace, each event once."""

from __future__ import annotations

import json
import re
import sys
import traceback

import httpx
import pytest

from tests.apps.servers import LAUNCHER_ENV, bin_path, http_ready, launched, serve
from tests.support import RedisHandle, run_python, run_python_process, wait_for
from tracestream.embedded_redis import free_port
from tracestream.otel_setup.structured import exception_from_text

STRUCTLOG = """
import uuid
import structlog, tracestream
from opentelemetry import trace
from tracestream.integrations.structlog import OTelProcessor
telemetry = tracestream.configure()
structlog.configure(processors=[structlog.processors.add_log_level, OTelProcessor(),
                                structlog.processors.JSONRenderer(default=str)])
log = structlog.get_logger("shop.cart").bind(cart_id=7)
with trace.get_tracer("t").start_as_current_span("checkout") as span:
    log.info("item added", sku="BOOK-1", qty=2, tags=["a", "b"], price={"eur": 3},
             basket=uuid.UUID("12345678-1234-5678-1234-567812345678"))
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("total failed")
log.warning("outside any span")
# the stdlib route: the bridge takes it, with key/values as extra= attributes, and only once
structlog.configure(processors=[OTelProcessor(), structlog.stdlib.render_to_log_kwargs],
                    logger_factory=structlog.stdlib.LoggerFactory())
structlog.get_logger("shop.stdlib").info("via logging", user="ada")
telemetry.force_flush()
print(format(span.get_span_context().trace_id, "032x"))
"""

# No configure(): the application set up the SDK itself, with our exporter behind its own processor.
STRUCTLOG_OWN_PROVIDER = """
import structlog
from opentelemetry import _logs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from tracestream.exporters import RedisStreamLogExporter
from tracestream.integrations.structlog import OTelProcessor
provider = LoggerProvider()
provider.add_log_record_processor(BatchLogRecordProcessor(RedisStreamLogExporter()))
_logs.set_logger_provider(provider)
structlog.configure(processors=[OTelProcessor(), structlog.processors.JSONRenderer()])
try:
    1 / 0
except ZeroDivisionError:
    structlog.get_logger().exception("total failed", cart_id=7)
provider.force_flush()
"""

# structlog's docs, "Rendering Using structlog-based Formatters Within logging": structlog and
# stdlib records both rendered by a ProcessorFormatter set up with dictConfig.
STRUCTLOG_PROCESSOR_FORMATTER = """
import logging.config, os, structlog
from opentelemetry import trace
if os.environ.get("TRACED") == "1":
    import tracestream
    telemetry = tracestream.configure()
renderer = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
# Our processor put inside the formatter, "before the renderer", which renders for two handlers
inside = os.environ.get("INSIDE") == "1"
if inside:
    from tracestream.integrations.structlog import OTelProcessor
handler = {"level": "DEBUG", "class": "logging.StreamHandler", "formatter": "plain"}
logging.config.dictConfig({
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {
        "()": structlog.stdlib.ProcessorFormatter,
        "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                       *([OTelProcessor()] if inside else []), renderer],
        "foreign_pre_chain": [structlog.stdlib.add_log_level, structlog.stdlib.ExtraAdder()],
    }},
    "handlers": {"default": handler, **({"second": handler} if inside else {})},
    "loggers": {"": {"handlers": ["default", *(["second"] if inside else [])], "level": "DEBUG",
                     "propagate": True}},
})
structlog.configure(
    processors=[structlog.contextvars.merge_contextvars, structlog.stdlib.add_log_level,
                structlog.stdlib.PositionalArgumentsFormatter(), structlog.processors.StackInfoRenderer(),
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
)
log = structlog.get_logger("shop.cart")
with trace.get_tracer("t").start_as_current_span("checkout") as span:
    log.info("item added", sku="BOOK-1", qty=2)
try:
    1 / 0
except ZeroDivisionError:
    log.exception("total failed", cart_id=7)
logging.getLogger("shop.legacy").warning("plain stdlib", extra={"order.id": 7})
if os.environ.get("TRACED") == "1":
    telemetry.force_flush()
    print(format(span.get_span_context().trace_id, "032x"))
"""

# structlog's production chain renders the exception to text before our processor sees it.
STRUCTLOG_RENDERED_EXCEPTION = """
import structlog, tracestream
from tracestream.integrations.structlog import OTelProcessor
telemetry = tracestream.configure()
structlog.configure(processors=[structlog.processors.add_log_level, structlog.processors.format_exc_info,
                                OTelProcessor(), structlog.processors.JSONRenderer()])
try:
    1 / 0
except ZeroDivisionError:
    structlog.get_logger().exception("total failed", cart_id=7)
telemetry.force_flush()
"""

LOGURU = """
import sys, tracestream
from loguru import logger
from opentelemetry import trace
from tracestream.integrations.loguru import otel_sink
telemetry = tracestream.configure()
logger.remove()
logger.add(sys.stderr)
logger.add(otel_sink, level="INFO")
with trace.get_tracer("t").start_as_current_span("checkout") as span:
    logger.bind(order_id=9, customer="ada").info("order {} paid", 9)
    logger.debug("below the sink's level")
    logger.level("NOTICE", no=35)
    logger.log("NOTICE", "stock running low")
    try:
        {}["missing"]
    except KeyError:
        logger.exception("lookup failed")
telemetry.force_flush()
print(format(span.get_span_context().trace_id, "032x"))
"""


def test_structlog_events_become_attributed_correlated_records(stream: RedisHandle) -> None:
    run_python(STRUCTLOG, stream.env(OTEL_SERVICE_NAME="cart"))
    entries = wait_for(lambda: len(stream.logs()) >= 4 and stream.logs(), what="four structlog records")
    assert [e.body for e in entries] == ["item added", "total failed", "outside any span", "via logging"]
    added, failed, outside, stdlib = entries
    assert added.scope == "structlog" and added.severity == "INFO"
    assert added.attributes == {
        "cart_id": 7,
        "sku": "BOOK-1",
        "qty": 2,
        "tags": ["a", "b"],
        "price": "{'eur': 3}",
        "basket": "12345678-1234-5678-1234-567812345678",  # as the renderer prints it, not its repr
    }
    assert len(added.trace_id) == 32 and added.trace_id == failed.trace_id
    assert failed.severity == "ERROR" and failed.exception_type == "ZeroDivisionError"
    assert (outside.severity, outside.trace_id) == ("WARN", "")
    assert (stdlib.scope, stdlib.attributes.get("user")) == ("shop.stdlib", "ada")


def test_structlog_into_a_provider_set_up_without_configure(stream: RedisHandle) -> None:
    run_python(STRUCTLOG_OWN_PROVIDER, stream.env(OTEL_SERVICE_NAME="cart"))
    [failed] = wait_for(lambda: stream.logs(), what="the structlog record")
    assert (failed.body, failed.severity, failed.scope, failed.service) == (
        "total failed",
        "ERROR",
        "structlog",
        "cart",
    )
    assert failed.attributes == {"cart_id": 7}
    assert (failed.exception_type, failed.exception_message) == ("ZeroDivisionError", "division by zero")
    assert failed.exception_stacktrace.startswith("Traceback (most recent call last):")


def test_loguru_messages_become_attributed_correlated_records(stream: RedisHandle) -> None:
    run_python(LOGURU, stream.env(OTEL_SERVICE_NAME="orders"))
    entries = wait_for(lambda: len(stream.logs()) >= 3 and stream.logs(), what="three loguru records")
    assert [e.body for e in entries] == ["order 9 paid", "stock running low", "lookup failed"]
    paid, notice, failed = entries
    assert notice.severity_number == 16  # a level's number, as for stdlib: 35 is between WARNING and ERROR
    assert paid.severity == "INFO" and paid.scope == "__main__"
    assert paid.attributes == {"order_id": 9, "customer": "ada"}
    assert paid.code.startswith("<string>:") and paid.trace_id == failed.trace_id != ""
    assert (failed.severity, failed.exception_type, failed.exception_message) == (
        "ERROR",
        "KeyError",
        "'missing'",
    )


@pytest.mark.parametrize("inside", ["0", "1"], ids=["docs", "our-processor-in-the-formatter"])
def test_structlog_through_a_processor_formatter_prints_as_before(stream: RedisHandle, inside: str) -> None:
    bare = run_python(STRUCTLOG_PROCESSOR_FORMATTER, stream.env(INSIDE=inside))
    traced = run_python(
        STRUCTLOG_PROCESSOR_FORMATTER, stream.env(OTEL_SERVICE_NAME="cart", TRACED="1", INSIDE=inside)
    )
    assert traced == bare and "total failed" in bare and "ZeroDivisionError" in bare
    entries = wait_for(lambda: len(stream.logs()) >= 3 and stream.logs(), what="three records")
    assert [(e.scope, e.body, e.severity) for e in entries] == [
        ("shop.cart", "item added", "INFO"),
        ("shop.cart", "total failed", "ERROR"),
        ("shop.legacy", "plain stdlib", "WARN"),
    ]
    added, failed, legacy = entries
    assert added.attributes == {"sku": "BOOK-1", "qty": 2} and added.trace_id != ""
    assert failed.attributes == {"cart_id": 7}
    assert (failed.exception_type, failed.exception_message) == ("ZeroDivisionError", "division by zero")
    assert legacy.attributes == {"order.id": 7}


def test_structlog_exception_rendered_before_the_processor(stream: RedisHandle) -> None:
    run_python(STRUCTLOG_RENDERED_EXCEPTION, stream.env(OTEL_SERVICE_NAME="cart"))
    [failed] = wait_for(lambda: stream.logs(), what="the structlog record")
    assert (failed.severity, failed.attributes) == ("ERROR", {"cart_id": 7})
    assert (failed.exception_type, failed.exception_message) == ("ZeroDivisionError", "division by zero")
    assert failed.exception_stacktrace.startswith("Traceback (most recent call last):")


# structlog's production chain with structured tracebacks (`dict_tracebacks`): the exception is a
# list of stacks, the raised one first, each frame with its locals.
STRUCTLOG_DICT_TRACEBACKS = """
import structlog, tracestream
from tracestream.integrations.structlog import OTelProcessor
telemetry = tracestream.configure()
structlog.configure(processors=[structlog.processors.add_log_level, structlog.processors.dict_tracebacks,
                                OTelProcessor(), structlog.processors.JSONRenderer()])
def charge(card):
    api_token = "tok-in-a-local"
    try:
        {}[card]
    except KeyError as missing:
        raise ValueError(f"card {card} declined") from missing
try:
    charge("4242")
except ValueError:
    structlog.get_logger().exception("payment failed", order=7)
telemetry.force_flush()
"""


def test_structlog_dict_tracebacks_are_the_records_exception(stream: RedisHandle) -> None:
    run_python(STRUCTLOG_DICT_TRACEBACKS, stream.env(OTEL_SERVICE_NAME="cart"))
    [failed] = wait_for(lambda: stream.logs(), what="the structlog record")
    assert (failed.body, failed.severity, failed.attributes) == ("payment failed", "ERROR", {"order": 7})
    assert (failed.exception_type, failed.exception_message) == ("ValueError", "card 4242 declined")
    stacktrace = failed.exception_stacktrace
    assert stacktrace.startswith("Traceback (most recent call last):\n  File ")
    assert "KeyError: '4242'\n\nThe above exception was the direct cause" in stacktrace
    # Python 3.13 shows the source of `-c` code under each frame
    assert re.search(r", in charge\n(    .*\n)*ValueError: card 4242 declined\n\Z", stacktrace)
    assert "tok-in-a-local" not in stacktrace  # the frames' locals stay out


# structlog's "Logging Best Practices": a filtering bound logger, tracebacks rendered to text by
# `format_exc_info`, JSON out; its `exception()` logs at `error`, so only the text tells which.
STRUCTLOG_RENDERED_EXCEPTIONS = """
import logging, sys, structlog, tracestream
telemetry = tracestream.configure()
structlog.configure(
    processors=[structlog.processors.add_log_level, structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer()],
    wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
class OrderError(Exception):
    pass
errors = [OrderError("order 7 broken"), ValueError("first line\\nsecond: line")]
if sys.version_info >= (3, 11):
    errors[0].add_note("retry with a new card")
    errors.append(ExceptionGroup("many", [ValueError("a"), TypeError("b")]))
for error in errors:
    try:
        raise error
    except Exception:
        structlog.get_logger().exception("failed")
try:
    raise OrderError("order 8 broken")
except OrderError:
    logging.getLogger("shop").exception("failed")
telemetry.force_flush()
"""


def test_structlog_tracebacks_rendered_to_text_name_their_exception_as_the_stdlib_does(
    stream: RedisHandle,
) -> None:
    """The text's last line was read as the exception: a two-line message named `second`, a
    note or a group's members left the type empty, and a class of `__main__` was `OrderError`
    where the stdlib's record says `__main__.OrderError`: two error issues for one failure."""
    run_python(STRUCTLOG_RENDERED_EXCEPTIONS, stream.env(OTEL_SERVICE_NAME="cart"))
    groups = sys.version_info >= (3, 11)
    entries = wait_for(lambda: len(stream.logs()) == 3 + groups and stream.logs(), what="the records")
    named = [(e.exception_type, e.exception_message) for e in entries]
    expected = [("__main__.OrderError", "order 7 broken"), ("ValueError", "first line\nsecond: line")]
    expected += [("ExceptionGroup", "many (2 sub-exceptions)")] * groups
    assert named == [*expected, ("__main__.OrderError", "order 8 broken")]
    if groups:
        assert entries[0].exception_stacktrace.endswith("order 7 broken\nretry with a new card\n")
        assert "| TypeError: b" in entries[2].exception_stacktrace


def _printed(error: BaseException) -> str:
    try:
        raise error from KeyError("cause")
    except BaseException as raised:
        return "".join(traceback.format_exception(type(raised), raised, raised.__traceback__))


def test_a_traceback_as_text_names_the_last_exception_of_its_chain() -> None:
    """What another process's formatter sent, or structlog rendered of an exception caught earlier."""
    assert exception_from_text(_printed(ValueError("first line\nsecond: line")))[:2] == (
        "ValueError",
        "first line\nsecond: line",
    )
    assert exception_from_text(_printed(RuntimeError()))[:2] == ("RuntimeError", "")
    assert exception_from_text("order 7 failed")[:2] == ("", "")
    if sys.version_info >= (3, 11):
        noted = ValueError("bad card")
        noted.add_note("retry with a new card")
        assert exception_from_text(_printed(noted))[:2] == ("ValueError", "bad card\nretry with a new card")
        group = ExceptionGroup("many", [ValueError("a"), TypeError("b")])  # noqa: F821 (3.11)
        assert exception_from_text(_printed(group))[:2] == ("ExceptionGroup", "many (2 sub-exceptions)")


# structlog's stdlib chapter, with its async methods: `aexception` renders the exception on the
# caller's thread and logs on an executor's, where no exception is being handled.
STRUCTLOG_ASYNC_EXCEPTION = """
import asyncio, logging, structlog, tracestream
telemetry = tracestream.configure()
handler = logging.StreamHandler()
handler.setFormatter(structlog.stdlib.ProcessorFormatter(processors=[
    structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.dev.ConsoleRenderer(colors=False)]))
logging.basicConfig(handlers=[handler], level=logging.INFO)
structlog.configure(
    processors=[structlog.stdlib.add_log_level, structlog.processors.format_exc_info,
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
    logger_factory=structlog.stdlib.LoggerFactory(), wrapper_class=structlog.stdlib.BoundLogger)
async def main():
    try:
        1 / 0
    except ZeroDivisionError:
        await structlog.get_logger("shop.async").aexception("async total failed")
asyncio.run(main())
telemetry.force_flush()
"""


def test_structlog_async_exception_keeps_its_exception(stream: RedisHandle) -> None:
    printed = run_python(STRUCTLOG_ASYNC_EXCEPTION, stream.env(OTEL_SERVICE_NAME="cart"))
    assert "ZeroDivisionError: division by zero" in printed
    [failed] = wait_for(lambda: stream.logs(), what="the structlog record")
    assert (failed.scope, failed.body, failed.severity) == ("shop.async", "async total failed", "ERROR")
    assert (failed.exception_type, failed.exception_message) == ("ZeroDivisionError", "division by zero")
    assert failed.attributes == {}


# structlog's own `CallsiteParameterAdder` prints where each event was logged, sync or async.
STRUCTLOG_CALLSITES = """
import asyncio, json, structlog, tracestream
telemetry = tracestream.configure()
structlog.configure(processors=[
    structlog.processors.CallsiteParameterAdder(
        [structlog.processors.CallsiteParameter.LINENO, structlog.processors.CallsiteParameter.FUNC_NAME]),
    structlog.processors.JSONRenderer()])
log = structlog.get_logger()
def checkout():
    log.info("paid", order=7)
async def refund():
    await log.ainfo("refunded", order=7)
checkout()
asyncio.run(refund())
telemetry.force_flush()
"""


def test_structlog_events_carry_where_the_app_logged_them(stream: RedisHandle) -> None:
    done = run_python_process(STRUCTLOG_CALLSITES, stream.env(OTEL_SERVICE_NAME="cart"))
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    entries = wait_for(lambda: len(stream.logs()) >= 2 and stream.logs(), what="two structlog records")
    assert [e.body for e in entries] == ["paid", "refunded"]
    assert (
        [e.code for e in entries]
        == [f"<string>:{event['lineno']} in {event['func_name']}" for event in printed]
        == ["<string>:10 in checkout", "<string>:12 in refund"]
    )


# structlog's `EventRenamer`, for platforms that read the message under another key.
STRUCTLOG_RENAMED_EVENT = """
import structlog, tracestream
from tracestream.integrations.structlog import OTelProcessor
telemetry = tracestream.configure()
structlog.configure(processors=[structlog.processors.add_log_level, structlog.processors.EventRenamer(KEY),
                                OTelProcessor(), structlog.processors.JSONRenderer()])
structlog.get_logger().info("payment accepted", order=7)
telemetry.force_flush()
"""


@pytest.mark.parametrize("key", ["message", "msg"])
def test_structlog_events_renamed_for_other_platforms_keep_their_body(stream: RedisHandle, key: str) -> None:
    run_python(STRUCTLOG_RENAMED_EVENT.replace("KEY", repr(key)), stream.env(OTEL_SERVICE_NAME="cart"))
    [accepted] = wait_for(lambda: stream.logs(), what="the structlog record")
    assert (accepted.body, accepted.attributes) == ("payment accepted", {"order": 7})


# Our processor put after the renderer: the app prints as before, and one line says why the
# stream has none of its events.
STRUCTLOG_PROCESSOR_AFTER_RENDERER = """
import os, structlog
processors = [structlog.processors.add_log_level, structlog.processors.JSONRenderer()]
if os.environ.get("TRACED") == "1":
    import tracestream
    from tracestream.integrations.structlog import OTelProcessor
    telemetry = tracestream.configure()
    processors.append(OTelProcessor())
structlog.configure(processors=processors)
structlog.get_logger().info("payment accepted", order=7)
structlog.get_logger().warning("stock low", sku="BOOK-1")
"""


def test_structlog_processor_after_the_renderer_says_so_once(stream: RedisHandle) -> None:
    bare = run_python_process(STRUCTLOG_PROCESSOR_AFTER_RENDERER, stream.env())
    traced = run_python_process(STRUCTLOG_PROCESSOR_AFTER_RENDERER, stream.env(TRACED="1"))
    assert (traced.returncode, traced.stdout) == (bare.returncode, bare.stdout) == (0, bare.stdout)
    assert '"event": "payment accepted"' in bare.stdout
    said = traced.stderr.splitlines()
    assert len(said) == 1, said
    assert said[0].startswith("tracestream: WARNING OTelProcessor got a rendered str")
    assert "before the renderer" in said[0]


# loguru's docs: `enqueue=True` makes a sink safe across threads and processes; the app exits
# without `logger.complete()`, its messages still in loguru's queue.
LOGURU_ENQUEUED = """
import sys
from loguru import logger
import tracestream
from opentelemetry import trace
from tracestream.integrations.loguru import otel_sink
tracestream.configure()
logger.remove()
logger.add(otel_sink, level="INFO", enqueue=True)
with trace.get_tracer("t").start_as_current_span("batch"):
    for number in range(300):
        logger.info("order {} paid", number)
"""


def test_loguru_enqueued_sink_loses_nothing_at_exit_and_says_what_it_costs(stream: RedisHandle) -> None:
    printed = run_python(LOGURU_ENQUEUED, stream.env(OTEL_SERVICE_NAME="orders"))
    bodies = [e.body for e in stream.logs()]
    assert bodies == [f"order {number} paid" for number in range(300)]
    said = printed.splitlines()
    assert len(said) == 1 and "enqueue=True" in said[0] and "no trace id" in said[0], said


# structlog's stdlib chapter: `render_to_log_kwargs` ends the chain, after `format_exc_info`, so
# logging gets the rendered traceback as the `exception` extra (and, from `exception()`, exc_info).
STRUCTLOG_RENDERED_TO_LOG_KWARGS = """
import logging, structlog, tracestream
telemetry = tracestream.configure()
logging.basicConfig(level=logging.INFO)
structlog.configure(
    processors=[structlog.stdlib.add_log_level, structlog.processors.format_exc_info,
                structlog.stdlib.render_to_log_kwargs],
    logger_factory=structlog.stdlib.LoggerFactory(), wrapper_class=structlog.stdlib.BoundLogger)
log = structlog.get_logger("shop.kwargs")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("from exception()", order=1)
    log.error("from error(exc_info=True)", order=2, exc_info=True)
telemetry.force_flush()
"""


def test_structlog_rendered_to_log_kwargs_keeps_its_traceback_once(stream: RedisHandle) -> None:
    """The key/values are attributes but those that repeat what the record is: the rendered
    traceback is its exception, and `add_log_level`'s `level` its severity."""
    run_python(STRUCTLOG_RENDERED_TO_LOG_KWARGS, stream.env(OTEL_SERVICE_NAME="cart"))
    entries = wait_for(lambda: len(stream.logs()) >= 2 and stream.logs(), what="two records")
    assert [(e.body, e.attributes) for e in entries] == [
        ("from exception()", {"order": 1}),
        ("from error(exc_info=True)", {"order": 2}),
    ]
    for entry in entries:
        assert (entry.exception_type, entry.exception_message) == ("ZeroDivisionError", "division by zero")
        assert entry.exception_stacktrace.startswith("Traceback (most recent call last):")


# structlog's stdlib chapter with `add_logger_name` and `StackInfoRenderer`, to logging by
# key/values, and the same events through our processor.
STRUCTLOG_NAMED_WITH_STACK = """
import logging, structlog, tracestream
from tracestream.integrations.structlog import OTelProcessor
telemetry = tracestream.configure()
logging.basicConfig(level=logging.INFO)
structlog.configure(
    processors=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                structlog.processors.StackInfoRenderer(), structlog.stdlib.render_to_log_kwargs],
    logger_factory=structlog.stdlib.LoggerFactory(), wrapper_class=structlog.stdlib.BoundLogger)
structlog.get_logger("shop.kwargs").info("paid", user="ann", stack_info=True)
structlog.configure(processors=[structlog.processors.add_log_level, structlog.processors.StackInfoRenderer(),
                                OTelProcessor(), structlog.processors.KeyValueRenderer()],
                    logger_factory=structlog.PrintLoggerFactory())
structlog.get_logger().info("paid", user="bob", stack_info=True)
telemetry.force_flush()
"""


def test_structlog_logger_name_and_stack_are_the_records_scope_and_stacktrace(stream: RedisHandle) -> None:
    """`logger` repeated the scope as an attribute, and `stack` was a plain attribute, untrimmed,
    where readers look for `code.stacktrace`."""
    run_python(STRUCTLOG_NAMED_WITH_STACK, stream.env(OTEL_SERVICE_NAME="cart"))
    entries = wait_for(lambda: len(stream.logs()) >= 2 and stream.logs(), what="two records")
    assert [(e.scope, e.body) for e in entries] == [("shop.kwargs", "paid"), ("structlog", "paid")]
    for entry, user in zip(entries, ("ann", "bob"), strict=True):
        stack = entry.attributes.pop("code.stacktrace")
        assert entry.attributes == {"user": user}
        assert stack.startswith("Stack (most recent call last):\n") and ", in <module>" in stack


# A logger named for each job, as `structlog.get_logger(f"job.{id}")` or `logger=` names them; loguru's
# scope is its module's name.
NAMED_PER_JOB = """
import gc, structlog, tracestream
from loguru import logger
from tracestream.integrations.record_writer import RecordWriter
from tracestream.integrations.structlog import OTelProcessor
telemetry = tracestream.configure()
structlog.configure(processors=[OTelProcessor(), structlog.processors.KeyValueRenderer()],
                    logger_factory=structlog.ReturnLoggerFactory())
for job in range(3000):
    structlog.get_logger().info("job done", logger=f"jobs.{job}")
logger.remove()
logger.add(tracestream.integrations.loguru.otel_sink)
logger.info("loguru too")
telemetry.force_flush()
print(sum(isinstance(kept, RecordWriter) for kept in gc.get_objects()))  # the writers alive
"""


def test_a_logger_named_for_each_job_costs_a_bounded_memory(stream: RedisHandle) -> None:
    """structlog's processor kept a writer for every logger name it met, for good: a name per job
    grew the process by some 100 bytes a job for as long as it ran."""
    done = run_python_process(NAMED_PER_JOB, stream.env(OTEL_SERVICE_NAME="jobs"))
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) <= 1024
    scopes = wait_for(lambda: len(stream.logs()) >= 3001 and {e.scope for e in stream.logs()}, what="records")
    assert {"jobs.0", "jobs.2999", "__main__"} <= scopes and len(scopes) == 3001


# structlog's own recipes under the launcher, where `opentelemetry-bootstrap` installed
# upstream's structlog instrumentation: it would add its processor to every chain.
STRUCTLOG_RECIPES = """
import logging, os, sys, structlog
from tracestream.integrations.structlog import OTelProcessor
recipe = os.environ["RECIPE"]
if recipe == "ours":  # tracestream's docs
    structlog.configure(processors=[structlog.processors.add_log_level, OTelProcessor(),
                                    structlog.processors.KeyValueRenderer(sort_keys=True)])
elif recipe == "stdlib":  # structlog's docs, "Rendering Using logging-based Formatters"
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=structlog.processors.KeyValueRenderer(sort_keys=True)))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    structlog.configure(processors=[structlog.stdlib.add_log_level,
                                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
                        logger_factory=structlog.stdlib.LoggerFactory())
elif recipe == "once":  # the app's first configure_once() is the one that counts
    structlog.configure_once(processors=[structlog.processors.add_log_level,
                                         structlog.processors.KeyValueRenderer(sort_keys=True)])
log = structlog.get_logger("shop.cart")
if recipe != "defaults":  # structlog's "Getting Started": no configuration at all
    print("configured:", structlog.is_configured(), flush=True)
log.info("item added", sku="BOOK-1")
"""


@pytest.mark.parametrize("recipe", ["defaults", "ours", "stdlib", "once"])
def test_structlog_under_the_launcher_writes_each_event_once_and_prints_as_before(
    stream: RedisHandle, recipe: str
) -> None:
    """Upstream's structlog instrumentation, beside our processor or the logging bridge, wrote
    every event twice; our processor stands in for it, in the chains that have none."""
    env = stream.env(
        RECIPE=recipe,
        OTEL_SERVICE_NAME="cart",
        OTEL_TRACES_EXPORTER="redis_stream",
        OTEL_LOGS_EXPORTER="redis_stream",
        OTEL_METRICS_EXPORTER="none",
    )
    bare = run_python_process(STRUCTLOG_RECIPES, env)
    launched = run_python_process(STRUCTLOG_RECIPES, env, launcher=True)
    assert (bare.returncode, launched.returncode) == (0, 0), launched.stderr
    if recipe == "defaults":  # the console renderer's line starts with the time
        assert launched.stdout.split(" ", 2)[2] == bare.stdout.split(" ", 2)[2]
    else:
        assert launched.stdout == bare.stdout
        assert "event='item added' level='info' sku='BOOK-1'" in bare.stdout
    [added] = wait_for(lambda: stream.logs(), what="the structlog record")
    assert (added.body, added.severity, added.attributes) == ("item added", "INFO", {"sku": "BOOK-1"})
    assert stream.logs() == [added]


# structlog's "Rendering Within structlog" recipe, our processor before the renderer.
STRUCTLOG_RENDERED_WITHIN = """
import logging, sys, structlog, tracestream
from tracestream.integrations.structlog import OTelProcessor
tracestream.configure()
logging.basicConfig(format="%(message)s", stream=sys.stdout, level=logging.INFO)
structlog.configure(processors=[structlog.stdlib.add_log_level, OTelProcessor(),
                                structlog.processors.JSONRenderer(sort_keys=True)],
                    logger_factory=structlog.stdlib.LoggerFactory())
log = structlog.get_logger("shop.cart")
log.info("item added", sku="BOOK-1")
log.info("item removed", sku="BOOK-1")
"""


def test_structlog_rendering_to_text_before_logging_is_said_once(stream: RedisHandle) -> None:
    """The bridge gets the rendered text, and the processor steps aside for a stdlib logger: the
    key/values are lost to the stream, which one line says."""
    done = run_python_process(STRUCTLOG_RENDERED_WITHIN, stream.env())
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert said == [
        "tracestream: WARNING structlog renders its events to text before they reach logging: the stream "
        "gets that text, without their key/values; end structlog's processors with "
        "structlog.stdlib.ProcessorFormatter.wrap_for_formatter or render_to_log_kwargs"
    ]
    added = '{"event": "item added", "level": "info", "sku": "BOOK-1"}'
    assert done.stdout.splitlines()[0] == added
    entries = wait_for(lambda: len(stream.logs()) >= 2 and stream.logs(), what="two records")
    assert [e.body for e in entries] == [added, added.replace("added", "removed")]


def _served_orders(stream: RedisHandle, traced: bool) -> str:
    """structlog's docs app under uvicorn, bare or under the launcher: one request with a request id."""
    port = free_port()
    command = [bin_path("uvicorn"), "tests.apps.structlog_request_ids:app", "--port", str(port)]
    env = stream.env(
        OTEL_SERVICE_NAME="shop",
        OTEL_TRACES_EXPORTER="redis_stream",
        OTEL_LOGS_EXPORTER="redis_stream",
        OTEL_METRICS_EXPORTER="none",
        **LAUNCHER_ENV,
    )
    with serve(
        launched(*command) if traced else command, env, http_ready(f"http://127.0.0.1:{port}/ready")
    ) as app:
        response = httpx.get(f"http://127.0.0.1:{port}/orders/7", headers={"x-request-id": "rq-7"})
        assert response.status_code == 200
        wait_for(lambda: "order 7 is late" in app.output(), what="the app's lines")
        return "".join(
            line[20:] + "\n" for line in app.output().splitlines() if "order" in line and "HTTP/" not in line
        )


def test_a_request_id_bound_with_structlog_is_on_the_apps_stdlib_lines_too(stream: RedisHandle) -> None:
    """The recipe prints the bound id on every line, stdlib's included (through `foreign_pre_chain`):
    the stream has it on the stdlib record as well as on structlog's event."""
    printed_bare = _served_orders(stream, traced=False)
    assert printed_bare == _served_orders(stream, traced=True)
    assert "[warning  ] order 7 is late                request_id=rq-7" in printed_bare
    entries = wait_for(lambda: len(stream.logs()) >= 2 and stream.logs(), what="the app's two records")
    by_body = {entry.body: entry for entry in entries if entry.scope.startswith("shop")}
    viewed, late = by_body["order viewed"], by_body["order 7 is late"]
    assert viewed.attributes == {"order_id": 7, "request_id": "rq-7"}
    assert late.attributes == {"request_id": "rq-7"}
    assert viewed.trace_id == late.trace_id != ""


# loguru's README, "Entirely compatible with standard logging": stdlib records handed to loguru
# by its InterceptHandler, inside `contextualize()`; `extra=` of the record's own wins.
LOGURU_INTERCEPTED_CONTEXT = """
import logging, os, sys
if os.environ.get("TRACED") == "1":
    import tracestream
    telemetry = tracestream.configure()
from loguru import logger
from tests.apps.app_logging import InterceptHandler

logging.basicConfig(handlers=[InterceptHandler()], level=0, force=True)
logger.remove()
logger.add(sys.stdout, format="{level} {name}:{line} {message} {extra}")
with logger.contextualize(request_id="r1"):
    logger.info("from loguru")
    logging.getLogger("lib").info("from stdlib")
    logging.getLogger("lib").info("with its own", extra={"request_id": "own"})
logging.getLogger("lib").info("after the context")
"""


def test_values_contextualized_in_loguru_are_on_intercepted_stdlib_records(stream: RedisHandle) -> None:
    bare = run_python_process(LOGURU_INTERCEPTED_CONTEXT, stream.env())
    traced = run_python_process(LOGURU_INTERCEPTED_CONTEXT, stream.env(TRACED="1"))
    assert (traced.returncode, traced.stdout, traced.stderr) == (bare.returncode, bare.stdout, bare.stderr)
    assert "INFO __main__:14 from stdlib {'request_id': 'r1'}" in bare.stdout
    entries = wait_for(lambda: len(stream.logs()) >= 4 and stream.logs(), what="four records")
    assert [(entry.body, entry.attributes) for entry in entries] == [
        ("from loguru", {"request_id": "r1"}),
        ("from stdlib", {"request_id": "r1"}),
        ("with its own", {"request_id": "own"}),
        ("after the context", {}),
    ]
