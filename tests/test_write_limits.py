"""One entry's size is bounded whatever its values nest or hold, and every cut says what it cut."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterator

import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.trace import Span

from tests.pipelines import PrivatePipeline
from tests.support import RedisHandle
from tracestream import schema
from tracestream.exporters.shaping import (
    DROPPED_ATTRIBUTES,
    ENTRY_TRUNCATED,
    MAX_ENTRY_BYTES,
    TIMESTAMP_REPLACED,
    RowShaper,
)
from tracestream.settings import ConfigError, Settings


@pytest.fixture
def pipeline(stream: RedisHandle) -> Iterator[PrivatePipeline]:
    settings = Settings.load(environ={}, redis_url=stream.url, stream=stream.stream)
    pipeline = PrivatePipeline(settings)
    yield pipeline
    pipeline.close()


def _entry_sizes(stream: RedisHandle, key: str) -> list[int]:
    with stream.client() as client:
        return [sum(len(value.encode()) for value in fields.values()) for _, fields in client.xrange(key)]


def test_nesting_cannot_multiply_the_per_value_limits(stream: RedisHandle, pipeline: PrivatePipeline) -> None:
    """128 lists of 128 strings pass every per-value limit (of 4096 characters they made a 67 MB
    entry; of 200, 3.3 MB). The entry keeps the first rows of the grid and says how much went."""
    grid = [[f"{row:03}" + "x" * 197 for _ in range(128)] for row in range(128)]
    pipeline.logger.info("the grid", extra={"grid": grid, "order_id": 7})
    assert pipeline.flush()
    [entry] = stream.logs()
    assert _entry_sizes(stream, stream.stream) == [pytest.approx(MAX_ENTRY_BYTES, rel=0.05)]
    assert max(_entry_sizes(stream, stream.stream)) <= MAX_ENTRY_BYTES
    assert entry.body == "the grid"
    kept = entry.attributes["grid"]
    assert kept[0][0] == grid[0][0] and kept[-1] == f"…[truncated {128 - len(kept) + 1} items]"
    assert entry.attributes[ENTRY_TRUNCATED].startswith("attributes: ")
    assert f"to the {MAX_ENTRY_BYTES}-byte entry limit" in entry.attributes[ENTRY_TRUNCATED]
    assert pipeline.logs.queue.counters.dropped == 0


def test_a_huge_attribute_key_is_cut_like_a_value(stream: RedisHandle, pipeline: PrivatePipeline) -> None:
    key = "k" * 10_000_000
    pipeline.logger.info("odd key", extra={key: 1, "small": "kept"})
    assert pipeline.flush()
    [entry] = stream.logs()
    assert entry.attributes == {"k" * 4096 + f"…[truncated {10_000_000 - 4096} chars]": 1, "small": "kept"}


@pytest.mark.parametrize(("wide", "stored"), [("\U0001f600", "\U0001f600"), ("\udc80", "\\udc80")])
def test_wide_characters_in_every_text_field_are_cut_to_the_limit(
    stream: RedisHandle, pipeline: PrivatePipeline, wide: str, stored: str
) -> None:
    """Each text field within its 32768-character limit, but four bytes per character (six for
    a lone surrogate, stored as an escape): the largest fields other than the body are cut
    first, until the entry fits."""
    text = wide * 40_000
    try:
        raise ValueError(text)
    except ValueError:
        record = pipeline.logger.makeRecord("unit", logging.ERROR, __file__, 0, text, (), sys.exc_info())
    # straight to the bridge: pytest's log capture (a handler on every non-propagating logger)
    # would carry the lone surrogates to pytest-xdist, which cannot encode them
    pipeline.handler.handle(record)
    assert pipeline.flush()
    [entry] = stream.logs()
    assert max(_entry_sizes(stream, stream.stream)) <= MAX_ENTRY_BYTES
    assert entry.attributes[ENTRY_TRUNCATED].startswith("exception_message")
    assert entry.exception_type == "ValueError" and entry.exception_message.endswith(" chars]")
    assert entry.body == stored * 32_768 + "…[truncated 7232 chars]"  # the body is cut last


def _descend(depth: int) -> None:
    if depth == 0:
        raise RuntimeError("the innermost step failed; password=hunter2")
    try:
        _descend(depth - 1)
    except RuntimeError as error:
        raise RuntimeError(f"step {depth} failed") from error


def test_a_long_stack_trace_keeps_its_start_and_the_exception_raised(
    stream: RedisHandle, pipeline: PrivatePipeline
) -> None:
    """A 400-deep chain is some 100,000 characters: the cut keeps where it began and, at its end,
    the exception raised and its frames (the start alone held only the earliest causes, and the
    issue's frame came from them). What is kept is scrubbed as before."""
    try:
        _descend(400)
    except RuntimeError:
        pipeline.logger.exception("checkout failed")
    assert pipeline.flush()
    [entry] = stream.logs()
    stacktrace = entry.exception_stacktrace
    assert stacktrace.startswith("Traceback (most recent call last):\n")
    assert stacktrace.endswith("\nRuntimeError: step 400 failed\n")
    assert 32_768 - 200 < len(stacktrace) <= 32_768 + 40
    [cut] = re.findall(r"\n…\[truncated (\d+) chars\]…\n", stacktrace)
    assert int(cut) > 50_000
    assert "hunter2" not in stacktrace and "[REDACTED]" in stacktrace


def test_a_spans_exception_event_keeps_the_exception_raised(
    stream: RedisHandle, pipeline: PrivatePipeline
) -> None:
    """The event's `exception.stacktrace` was cut from its end at the attribute limit (4,096): a
    FastAPI endpoint's trace on Python 3.13 (4,352 characters) lost the app's frame and the
    exception line, which the request's record kept."""
    tracer = pipeline.tracer_provider.get_tracer("unit")
    with pytest.raises(RuntimeError), tracer.start_as_current_span("checkout"):
        _descend(40)
    assert pipeline.flush()
    [entry] = stream.spans()
    [event] = entry.events
    stacktrace = event["attributes"]["exception.stacktrace"]
    assert stacktrace.startswith("Traceback (most recent call last):\n")
    assert stacktrace.endswith("\nRuntimeError: step 40 failed\n")
    assert "…[truncated " in stacktrace and len(stacktrace) <= 4096 + 40


def test_a_span_with_many_long_attributes_and_events_fits(
    stream: RedisHandle, pipeline: PrivatePipeline
) -> None:
    tracer = pipeline.tracer_provider.get_tracer("unit")
    span: Span
    with tracer.start_as_current_span("wide") as span:
        span.set_attributes({f"a{index:03}": "v" * 4096 for index in range(100)})
        for index in range(60):
            span.add_event(f"e{index}", {f"x{item}": "w" * 500 for item in range(10)})
    assert pipeline.flush()
    [entry] = stream.spans()
    assert max(_entry_sizes(stream, stream.keys.spans)) <= MAX_ENTRY_BYTES
    assert entry.name == "wide"
    assert entry.attributes[ENTRY_TRUNCATED].startswith("attributes, events: ")
    assert entry.attributes[DROPPED_ATTRIBUTES] == 100  # the largest field: cut to its marker
    with stream.client() as client:
        [(_, fields)] = client.xrange(stream.keys.spans)
    events = json.loads(fields["events"])  # as stored: a cut list ends in its marker
    assert events[0]["name"] == "e0" and events[-1] == f"…[truncated {60 - len(events) + 1} items]"


def test_entries_within_the_limit_are_not_touched(stream: RedisHandle, pipeline: PrivatePipeline) -> None:
    pipeline.logger.log(logging.WARNING, "x" * 32_768, extra={f"k{index}": "v" * 4096 for index in range(40)})
    assert pipeline.flush()
    [entry] = stream.logs()
    assert ENTRY_TRUNCATED not in entry.attributes and len(entry.attributes) == 40
    assert entry.body == "x" * 32_768


def test_the_entry_limit_is_a_setting_with_a_floor(stream: RedisHandle) -> None:
    with pytest.raises(
        ConfigError, match="TRACESTREAM_MAX_ENTRY_BYTES='8KiB' is invalid: must be at least 16KiB"
    ):
        Settings.load({"TRACESTREAM_MAX_ENTRY_BYTES": "8KiB"})
    settings = Settings.load(
        {"TRACESTREAM_MAX_ENTRY_BYTES": "32KiB"}, redis_url=stream.url, stream=stream.stream
    )
    pipeline = PrivatePipeline(settings)
    try:
        pipeline.logger.info("wide", extra={"rows": ["y" * 4000 for _ in range(64)]})
        assert pipeline.flush()
    finally:
        pipeline.close()
    assert _entry_sizes(stream, stream.stream) == [pytest.approx(32 << 10, rel=0.05)]
    assert "to the 32768-byte entry limit" in stream.logs()[0].attributes[ENTRY_TRUNCATED]


def test_impossible_timestamps_become_the_export_time_and_are_flagged(
    stream: RedisHandle, pipeline: PrivatePipeline
) -> None:
    """A timestamp 1000x too large through the OTel logs API, and start_time=-1 on a span: the
    forwarder could not encode either, so the exporter keeps them readable and says what they were."""
    before = time.time_ns()
    too_large = before * 1000
    pipeline.logger_provider.get_logger("clock").emit(
        LogRecord(timestamp=too_large, observed_timestamp=before, body="from the future")
    )
    pipeline.tracer_provider.get_tracer("clock").start_span("negative", start_time=-1).end()
    assert pipeline.flush()
    [entry] = stream.logs()
    [span] = stream.spans()
    after = time.time_ns()
    assert before <= entry.timestamp_ns <= after
    assert entry.attributes[TIMESTAMP_REPLACED] == f"ts={too_large}"
    assert before <= span.start_ns <= after
    assert span.attributes[TIMESTAMP_REPLACED] == "start_ts=-1"


@pytest.mark.parametrize(
    ("ts", "replaced"),
    [
        ("", False),
        ("0", False),
        ("1796533230760959353", False),  # December 2026
        (str(2**63 - 1), False),
        (str(2**63), True),
        ("9" * 19, True),
        ("1" + "0" * 19, True),
        ("-1", True),
        ("12a", True),
    ],
)
def test_a_time_past_63_bits_or_not_a_count_is_replaced(ts: str, replaced: bool) -> None:
    fields = schema.LOG_FIELDS
    row = ["" for _ in fields]
    row[fields.index("ts")], row[fields.index("attributes")], row[fields.index("resource")] = ts, "{}", "{}"
    [shaped] = RowShaper(fields, Settings.load(environ={})).shape_rows([row])
    noted = json.loads(shaped[fields.index("attributes")])
    assert (TIMESTAMP_REPLACED in noted) is replaced
    assert noted.get(TIMESTAMP_REPLACED, f"ts={ts}") == f"ts={ts}"
