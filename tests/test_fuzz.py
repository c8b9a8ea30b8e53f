"""Bad input through every logging path: nothing reaches the application, nothing vanishes uncounted.

Paths: stdlib messages and `extra=`, structlog and loguru (both routed into stdlib, as
docs/configuration.md shows), the OTel logs API with non-string bodies, and span
attributes. After each example the queue's counters must account for the record: exported
(and then found in Redis, within the size limits) or dropped with a reason.
"""

from __future__ import annotations

import logging
import re
import sys
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
from tracestream.integrations import records
from tracestream.integrations.loguru import otel_sink
from tracestream.integrations.structlog import OTelProcessor
from tracestream.otel_setup.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

LIMITS = {"max_body_length": 2_000, "max_attribute_length": 300, "max_attributes": 40}
TRUNCATED = re.compile(r"…\[truncated \d+ (chars|items)\]$")


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
        sink = loguru_logger.add(
            lambda message: built.logger.log(
                logging.INFO, message.record["message"], extra=dict(message.record["extra"])
            ),
            format="{message}",
            catch=False,
        )
        with pytest.MonkeyPatch.context() as patch:
            # Our structlog and loguru integrations write through the global OTel logs API;
            # here that API leads to this pipeline's provider.
            patch.setattr(records._logs, "get_logger", built.logger_provider.get_logger)
            yield built
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


def _loguru(p: Pipeline, value: Any) -> None:
    loguru_logger.bind(k_value=value).info("loguru {}", "message")


_structlog_direct = structlog.wrap_logger(structlog.ReturnLogger(), processors=[OTelProcessor()])


def _structlog_processor(p: Pipeline, value: Any) -> None:
    _structlog_direct.warning("direct", payload=value, k_list=[value])


def _loguru_sink(p: Pipeline, value: Any) -> None:
    record = {
        "name": "fuzz.loguru",
        "message": "sink",
        "level": type("Level", (), {"name": "INFO"})(),
        "extra": {"k_value": value},
        "file": type("File", (), {"path": __file__})(),
        "line": 1,
        "function": "f",
        "exception": None,
    }
    otel_sink(type("Message", (), {"record": record})())


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
    "structlog OTelProcessor": _structlog_processor,
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
            assert TRUNCATED.search(text), name


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
    assert len(fields["attributes"]) < 40 * 400


# The two integrations that write through the OTel API repr() odd values on the app thread
# (tracestream/integrations/structured.py), so a raising __repr__ still reaches the app there.
STDLIB_ROUTED = sorted(set(PATHS) - {"loguru otel_sink", "structlog OTelProcessor"})


@pytest.mark.parametrize("path", STDLIB_ROUTED)
def test_values_whose_repr_raises_never_reach_the_app(pipeline: Pipeline, path: str) -> None:
    # pytest's own capture handlers re-raise formatting errors by design; only ours is under test.
    pipeline.logger.handlers[:] = [pipeline.handler]
    counters = pipeline.logs.queue.counters
    before = counters.exported + counters.dropped
    PATHS[path](pipeline, Unprintable())  # must not raise
    assert pipeline.logs.force_flush(10_000)
    assert counters.exported + counters.dropped == before + 1
