"""Bad input through every logging path: nothing reaches the application, nothing vanishes uncounted.

Paths: stdlib messages and `extra=`, structlog and loguru (both routed into stdlib, as
docs/configuration.md shows, and through our own `OTelProcessor` and `otel_sink`), the
OTel logs API with non-string bodies, and span attributes. After each example the queue's
counters must account for the record: exported
(and then found in Redis, within the size limits) or dropped with a reason.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loguru import logger as loguru_logger
from opentelemetry._logs import LogRecord

from tests.pipelines import PrivatePipeline
from tests.support import RedisHandle
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.integrations import record_writer
from tracestream.integrations.loguru import otel_sink
from tracestream.integrations.structlog import OTelProcessor
from tracestream.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

LIMITS = {"max_body_length": 2_000, "max_attribute_length": 300, "max_attributes": 40}
TRUNCATED = re.compile(r"…\[truncated \d+ (chars|items)\]$")
TRUNCATED_IN_THE_MIDDLE = re.compile(r"…\[truncated \d+ chars\]…\n")  # a stack trace keeps its end


class Unstringable:
    """str() raises (repr() works, so Hypothesis can report it)."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        return "Unstringable()"


class Unprintable(Unstringable):
    """Neither str() nor repr() works."""

    __repr__ = Unstringable.__str__


def _cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    loop["list"] = [loop]
    return loop


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"d": [value]}
    return value


NASTY_TEXT = st.one_of(
    st.text(max_size=50),
    st.sampled_from(["\ud800 lone surrogate", "\x00\x07\x1b[31mred\x1b[0m\r\n", "\u202eevil", "%s %d %(x)s"]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    NASTY_TEXT,
    st.binary(max_size=20),  # often invalid UTF-8
    st.just(b"\xff\xfe\xfa"),
    st.builds(object),
    st.sampled_from([{1, 2}, frozenset({"a"}), 3 + 4j, ..., Exception("boom")]),
)


def _nested(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), children, max_size=4),
            st.tuples(children, children),
        ),
        max_leaves=12,
    )


NESTED = _nested(st.one_of(SCALARS, st.builds(Unstringable)))


class Pipeline(PrivatePipeline):
    handle: RedisHandle


# The OTel SDK's own set_attribute calls str() on odd values and recurses into cycles, so
# span attributes get everything else.
SPAN_VALUES = _nested(SCALARS) | st.sampled_from(["x" * 100_000, {f"k{i}": i for i in range(5000)}])
PAYLOADS = NESTED | st.sampled_from(["x" * 100_000, _cyclic(), _deep(500), {f"k{i}": i for i in range(5000)}])


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    with EmbeddedRedis() as server:
        handle = RedisHandle(server.url, f"fuzz:{uuid.uuid4().hex[:8]}")
        config = Settings.load(
            environ={}, redis_url=handle.url, stream=handle.stream, spool_max_bytes=0, **LIMITS
        )
        built = Pipeline(config, service="fuzz")
        built.handle = handle
        structlog.configure(
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            processors=[structlog.stdlib.render_to_log_kwargs],  # fields become attributes
        )
        loguru_logger.remove()  # its default stderr sink would print every fuzzed record
        # Records bound with `otel_sink=True` take our sink; the others go into stdlib.
        sinks = [
            loguru_logger.add(
                lambda message: built.logger.log(
                    logging.INFO, message.record["message"], extra=dict(message.record["extra"])
                ),
                filter=lambda record: "otel_sink" not in record["extra"],
                format="{message}",
                catch=False,
            ),
            loguru_logger.add(otel_sink, filter=lambda record: "otel_sink" in record["extra"], catch=False),
        ]
        with pytest.MonkeyPatch.context() as patch:
            # Our structlog and loguru integrations write through the global OTel logs API;
            # here that API leads to this pipeline's provider.
            patch.setattr(record_writer._logs, "get_logger", built.logger_provider.get_logger)
            # pytest 9 also hangs its capture handlers on loggers that do not propagate, like
            # ours, and they raise on a message that cannot be formatted, by design; ours must not.
            patch.setattr(logging, "raiseExceptions", False)
            yield built
        for sink in sinks:
            loguru_logger.remove(sink)
        loguru_logger.add(sys.stderr)
        structlog.reset_defaults()
        built.close()


def _stdlib_message(p: Pipeline, value: Any) -> None:
    p.logger.info(value)


def _stdlib_args(p: Pipeline, value: Any) -> None:
    p.logger.warning("value=%s other=%r", value, value)


def _stdlib_extra(p: Pipeline, value: Any) -> None:
    p.logger.error("with extra", extra={"k_value": value, "k_list": [value, value]})


def _stdlib_exception(p: Pipeline, value: Any) -> None:
    try:
        raise ValueError(value)
    except ValueError:
        p.logger.exception("failed")


def _structlog(p: Pipeline, value: Any) -> None:
    structlog.get_logger(p.logger.name).info("event", payload=value, **{"k_other": value})


def _structlog_event(p: Pipeline, value: Any) -> None:
    structlog.get_logger(p.logger.name).info(value)


def _loguru(p: Pipeline, value: Any) -> None:
    loguru_logger.bind(k_value=value).info("loguru {}", "message")


_structlog_direct = structlog.wrap_logger(structlog.ReturnLogger(), processors=[OTelProcessor()])


def _structlog_processor(p: Pipeline, value: Any) -> None:
    _structlog_direct.warning("direct", payload=value, k_list=[value])


def _structlog_processor_event(p: Pipeline, value: Any) -> None:
    _structlog_direct.info(value)


def _structlog_processor_exception(p: Pipeline, value: Any) -> None:
    _structlog_direct.error("failed", exc_info=_exception(value))


def _loguru_sink(p: Pipeline, value: Any) -> None:
    loguru_logger.bind(otel_sink=True, k_value=value).info("sink {}", "message")


def _loguru_sink_exception(p: Pipeline, value: Any) -> None:
    loguru_logger.bind(otel_sink=True).opt(exception=_exception(value)).error("failed")


def _exception(value: Any) -> BaseException:
    """The value itself if it is an exception, else a ValueError carrying it (whose str() is its str())."""
    return value if isinstance(value, BaseException) else ValueError(value)


def _otel_api(p: Pipeline, value: Any) -> None:
    otel = p.logger_provider.get_logger("fuzz.api")
    otel.emit(LogRecord(body=value, attributes={"k": str(type(value))}))


PATHS: dict[str, Callable[[Pipeline, Any], None]] = {
    "stdlib message": _stdlib_message,
    "stdlib args": _stdlib_args,
    "stdlib extra": _stdlib_extra,
    "stdlib exception": _stdlib_exception,
    "structlog": _structlog,
    "loguru": _loguru,
    "loguru otel_sink": _loguru_sink,
    "loguru otel_sink exception": _loguru_sink_exception,
    "structlog OTelProcessor": _structlog_processor,
    "structlog OTelProcessor event": _structlog_processor_event,
    "structlog OTelProcessor exception": _structlog_processor_exception,
    "otel api": _otel_api,
}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(sorted(PATHS)), value=PAYLOADS)
def test_bad_log_input_never_raises_and_is_accounted_for(pipeline: Pipeline, path: str, value: Any) -> None:
    counters = pipeline.logs.queue.counters
    assert pipeline.logs.force_flush(10_000)  # a failed example may have left one behind
    before = counters.exported + counters.dropped
    PATHS[path](pipeline, value)  # must not raise
    assert pipeline.logs.force_flush(10_000)
    assert counters.exported + counters.dropped == before + 1, path
    if counters.dropped == 0:
        with pipeline.handle.client() as client:
            ((_, fields),) = client.xrevrange(pipeline.handle.stream, count=1)
        _assert_within_limits(fields)


def _assert_within_limits(fields: dict[str, str]) -> None:
    for name in ("body", "exception_message", "exception_stacktrace"):
        text = fields[name]
        assert len(text) <= LIMITS["max_body_length"] + 40, name
        if len(text) > LIMITS["max_body_length"]:
            marker = TRUNCATED_IN_THE_MIDDLE if name == "exception_stacktrace" else TRUNCATED
            assert marker.search(text), name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=SPAN_VALUES, key=NASTY_TEXT)
def test_bad_span_attributes_never_raise_and_are_exported(pipeline: Pipeline, key: str, value: Any) -> None:
    counters = pipeline.spans.queue.counters
    assert pipeline.spans.force_flush(10_000)  # a failed example may have left one behind
    before = counters.exported + counters.dropped
    tracer = pipeline.tracer_provider.get_tracer("fuzz")
    with tracer.start_as_current_span("fuzzed", attributes={"k_start": str(type(value))}) as span:
        span.set_attribute(key or "empty", value)
        span.add_event("event", {"k_value": value} if isinstance(value, (str, int, float, bool)) else {})
    assert pipeline.spans.force_flush(10_000)
    assert counters.exported + counters.dropped == before + 1


def test_oversized_records_are_truncated_with_a_marker(pipeline: Pipeline) -> None:
    huge = "y" * 10_000_000
    pipeline.logger.info(huge, extra={f"k_{i}": "v" * 1000 for i in range(1000)} | {"k_deep": _deep(100)})
    assert pipeline.logs.force_flush(10_000)
    with pipeline.handle.client() as client:
        ((_, fields),) = client.xrevrange(pipeline.handle.stream, count=1)
    assert fields["body"].startswith("y" * 2000) and fields["body"].endswith("…[truncated 9998000 chars]")
    attributes = __import__("orjson").loads(fields["attributes"])
    assert attributes["tracestream.dropped_attributes"] == 1001 - LIMITS["max_attributes"]
    kept = [v for k, v in attributes.items() if k.startswith("k_") and isinstance(v, str)]
    assert kept and all(v.endswith("…[truncated 700 chars]") for v in kept)
    first = [f"k_{i}" for i in range(LIMITS["max_attributes"])]  # the app's, in its order, in any process
    assert [k for k in attributes if k.startswith("k_")] == first
    assert len(fields["attributes"]) < 40 * 400


class NotAString:
    """str() and repr() return an int, so both raise TypeError."""

    def __str__(self) -> Any:
        return 42

    __repr__ = __str__


class BrokenException(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for this exception")


HOSTILE = {
    "str and repr raise": Unprintable(),
    "str and repr return an int": NotAString(),
    "exception whose str raises": BrokenException(),
    "cyclic": _cyclic(),
    "invalid UTF-8 bytes": b"\xff\xfe\xfa",
    "lone surrogates": "\ud800 lone \udfff",
}


# structlog itself cannot pass a None event on to stdlib, so this path is not fuzzed.
HOSTILE_PATHS = {**PATHS, "structlog event": _structlog_event}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("path", sorted(HOSTILE_PATHS))
def test_hostile_values_never_reach_the_app_and_are_accounted_for(
    pipeline: Pipeline, path: str, kind: str
) -> None:
    """As a field, a format argument, an exception and (where the path takes one) the message itself."""
    # pytest's own capture handlers re-raise formatting errors by design; only ours is under test.
    pipeline.logger.handlers[:] = [pipeline.handler]
    counters = pipeline.logs.queue.counters
    exported, invalid, dropped = counters.exported, counters.dropped_invalid, counters.dropped
    HOSTILE_PATHS[path](pipeline, HOSTILE[kind])  # must not raise
    assert pipeline.logs.force_flush(10_000)
    assert (counters.exported, counters.dropped, counters.dropped_invalid) == (exported + 1, dropped, invalid)


@pytest.mark.parametrize("kind", ["invalid UTF-8 bytes", "lone surrogates"])
def test_hostile_text_as_a_loguru_message_reaches_redis(pipeline: Pipeline, kind: str) -> None:
    """loguru formats any other message itself, before any sink (a raising __str__ raises in loguru)."""
    loguru_logger.bind(otel_sink=True).info(HOSTILE[kind])
    assert pipeline.logs.force_flush(10_000)
    with pipeline.handle.client() as client:
        ((_, fields),) = client.xrevrange(pipeline.handle.stream, count=1)
    assert fields["body"] in (str(HOSTILE[kind]), "\\ud800 lone \\udfff")  # surrogates escaped


@pytest.mark.parametrize("route", ["stdlib", "structlog"])
def test_a_broken_exception_keeps_its_type_and_stacktrace(pipeline: Pipeline, route: str) -> None:
    """Every route writes what the stacktrace's last line shows in place of the message."""
    try:
        raise BrokenException()
    except BrokenException:
        if route == "stdlib":
            pipeline.logger.exception("failed")
        else:
            _structlog_direct.exception("failed")
    assert pipeline.logs.force_flush(10_000)
    with pipeline.handle.client() as client:
        ((_, fields),) = client.xrevrange(pipeline.handle.stream, count=1)
    assert fields["exception_type"] == f"{__name__}.BrokenException"
    assert fields["exception_message"] == "<exception str() failed>"
    assert fields["exception_stacktrace"].startswith("Traceback (most recent call last):")
    assert "BrokenException: <exception str() failed>" in fields["exception_stacktrace"]


class Counted:
    """Counts the repr() calls made on the application thread while it logs."""

    calls = 0
    counting = False

    def __repr__(self) -> str:
        if Counted.counting and threading.current_thread() is threading.main_thread():
            Counted.calls += 1
        return "counted"


HUGE = {f"k{i}": Counted() for i in range(100_000)}
# The huge value as a field, or as a structlog event (stdlib's `logging` formats a message, and
# every route an exception message, in full: that is the record's text).
BOUNDED_PATHS = [
    "loguru",
    "loguru otel_sink",
    "otel api",
    "stdlib extra",
    "structlog",
    "structlog OTelProcessor",
    "structlog OTelProcessor event",
]


@pytest.mark.parametrize("path", BOUNDED_PATHS)
def test_a_huge_value_costs_the_app_thread_bounded_work(pipeline: Pipeline, path: str) -> None:
    """A 100,000-entry dict: the stdlib bridge formats fields on the export worker, our structlog
    and loguru bridges a bounded prefix of it on the app thread."""
    Counted.calls, Counted.counting = 0, True
    try:
        HOSTILE_PATHS[path](pipeline, HUGE)
    finally:
        Counted.counting = False
    assert pipeline.logs.force_flush(10_000)
    assert Counted.calls <= 100, path
