"""The runner's fast matching decides as the query API does, counts a record for the weight the
summaries read, and latency bins stay within 1%.

The runner decodes a record only as far as its rules look (tracestream/alerts/matching.py); these
tests hold it to `Query.matches` on the fully decoded entry, for good records and for every kind
of foreign entry readers must survive.
"""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.corpus.hostile_entries import HOSTILE_LOGS
from tracestream.alerts.histogram import RELATIVE_ERROR, bin_of, percentile
from tracestream.alerts.matching import Filter, Seen, leading_literal
from tracestream.query import Query, QueryError, compile_regex
from tracestream.schema import LOG_FIELDS, LogEntry
from tracestream.settings import SAMPLE_WEIGHT
from tracestream.summary import sample_weight

QUERIES = [
    Query.parse(),
    Query.parse(services=["api"]),
    Query.parse(services=["api", "worker"], severity="ERROR"),
    Query.parse(severity="WARN"),
    Query.parse(text="declined"),
    Query.parse(text="KeyError"),
    Query.parse(regex="declined [0-9]+"),
    Query.parse(regex="x*"),  # matches empty text
    Query.parse(regex="^$"),
    Query.parse(attributes=["http.route=/pay"]),
    Query.parse(attributes=["http.status_code=500"]),  # a number, compared as JSON
    Query.parse(attributes=["http.route=/pay", "user=ann"]),
    Query.parse(attributes=["tracestream.undecodable=attributes is not JSON"]),
    Query.parse(services=["api"], text="card", attributes=["http.route=/pay"], regex="[0-9]{2}"),
    Query.parse(trace_id="4bf92f3577b34da6a3ce929d0e0e4736"),
]


def good_fields(**changes: str) -> dict[str, str]:
    fields = dict.fromkeys(LOG_FIELDS, "")
    fields.update(
        v="1",
        rid="a1b2c3d4e5f60718" + "1",
        ts="1764784801101000000",
        severity="ERROR",
        severity_number="17",
        body="card declined 42",
        service="api",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        attributes=orjson.dumps({"http.route": "/pay", "http.status_code": 500, "user": "ann"}).decode(),
        resource='{"service.name": "api"}',
        exception_type="KeyError",
        exception_message="'card'",
    )
    fields.update(changes)
    return fields


RECORDS = [
    good_fields(),
    good_fields(severity="INFO", severity_number="9", body="GET /pay ok", exception_type=""),
    good_fields(service="worker", body="", exception_type="", exception_message=""),
    good_fields(attributes=""),
    good_fields(ts=""),
    *(
        {
            name: value.decode("utf-8", "backslashreplace")
            for name, value in {
                **{k: v.encode() for k, v in good_fields().items()},
                **hostile.changes,
            }.items()
            if value is not None
        }
        for hostile in HOSTILE_LOGS
    ),
]


@pytest.mark.parametrize("fields", RECORDS, ids=range(len(RECORDS)))
def test_a_filter_on_a_record_as_read_decides_as_the_query_on_the_decoded_entry(
    fields: dict[str, str],
) -> None:
    stream_id = "1764784801200-3"
    # No rule looks at the resource: a bad one marks the entry for other readers, not for alerts.
    entry = LogEntry.from_fields(stream_id, {k: v for k, v in fields.items() if k != "resource"})
    record = Seen(stream_id, fields)
    expected = [query.matches(entry) for query in QUERIES]
    assert [Filter(query).passes(record) for query in QUERIES] == expected
    assert record.attributes == entry.attributes
    shown = record.sample()
    assert (shown["service"], shown["severity"], shown["body"], shown["trace_id"]) == (
        entry.service,
        entry.severity,
        entry.body[:500],
        entry.trace_id,
    )
    assert record.at_ms == (entry.timestamp_ns // 1_000_000 if entry.timestamp_ns else 1764784801200)


@pytest.mark.parametrize("fields", RECORDS, ids=range(len(RECORDS)))
def test_a_record_counts_for_the_weight_the_summaries_read(fields: dict[str, str]) -> None:
    entry = LogEntry.from_fields("1-0", {k: v for k, v in fields.items() if k != "resource"})
    assert Seen("1-0", fields).weight == sample_weight(entry.attributes)


def weighted(weight: object) -> dict[str, str]:
    return good_fields(attributes=orjson.dumps({SAMPLE_WEIGHT: weight, "http.route": "/pay"}).decode())


@pytest.mark.parametrize(
    ("fields", "weight"),
    [
        (weighted(10.0), 10.0),
        (weighted(0.0), 0.0),  # released by an error
        (weighted(4), 4.0),
        (weighted("10"), 1.0),  # not a number
        (weighted(True), 1.0),
        (weighted(-2.5), 1.0),
        (weighted(1e300), 1.0),  # no ratio sampler gives it, and sums of it would overflow
        (good_fields(attributes=f'{{"{SAMPLE_WEIGHT}": 10'), 1.0),  # not JSON: marked, no weight
        (good_fields(body=SAMPLE_WEIGHT, attributes=orjson.dumps({"note": SAMPLE_WEIGHT}).decode()), 1.0),
    ],
)
def test_sample_weights_as_counted(fields: dict[str, str], weight: float) -> None:
    assert Seen("1-0", fields).weight == weight


def test_the_filters_see_something_to_decide() -> None:
    """The records above are not all matched or all refused by one query: the comparison means something."""
    decisions = {tuple(Filter(q).passes(Seen("1-0", fields)) for q in QUERIES) for fields in RECORDS}
    assert len(decisions) > 3


@given(
    st.lists(st.floats(min_value=0.0, max_value=1e7, allow_nan=False), min_size=1, max_size=300),
    st.floats(1, 100),
)
def test_a_percentile_from_bins_is_within_one_percent_of_the_nearest_rank(
    durations: list[float], wanted: float
) -> None:
    bins: dict[int, int] = {}
    for duration in durations:
        bins[bin_of(duration)] = bins.get(bin_of(duration), 0) + 1
    value, count = percentile(bins, wanted)
    exact = sorted(durations)[max(0, math.ceil(wanted / 100 * len(durations)) - 1)]
    assert count == len(durations)
    assert abs(value - max(exact, 0.001)) <= RELATIVE_ERROR * max(exact, 0.001) * 1.000001


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        ("declined [0-9]+", "declined "),
        ("^GET /pay", "GET /pay"),
        ("ab?c", "a"),
        ("abc*", "ab"),
        ("ab{2}", "a"),
        ("a|b", ""),
        ("(?i)abc", ""),
        ("x*", ""),
        (r"\d+ items", ""),
        ("order.id", "order"),
        ("a(?i)?", ""),  # the ? makes the a optional
        ("ab(c)", "ab"),
        (r"ab\Q\E?", "a"),
        ("ab+", "a"),
        ("ab+(?-i)?", "a"),  # the ? after the flag group makes b+ optional
    ],
)
def test_the_text_a_regex_starts_with(pattern: str, literal: str) -> None:
    assert leading_literal(pattern) == literal


PIECES = ["a", "b", " ", "-", "[0-9]+", "?", "*", "+", "(c|d)", "^", ".", r"\d", "{2}", "$", "(?i)", "e"]
PIECES += [r"\Q", r"\E", "()", "(?:", ")", "{0}", "{0,1}", "(?-i)", "??", "|"]


@settings(max_examples=1000)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=6), st.text("abcdeAB 0123-.", max_size=12))
def test_every_match_holds_the_leading_literal(pieces: list[str], text: str) -> None:
    try:
        regex = compile_regex("".join(pieces))
    except QueryError:  # not a pattern RE2 takes: nothing to check
        return
    if regex.search(text) is not None:
        assert leading_literal(regex.pattern) in text
