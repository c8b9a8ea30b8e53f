"""Issue 15 item 9: a flood of INFO records from one service, past `max_entries`, never trims away
another service's errors. Their copies in `<stream>:errors` keep them for search, trace lookup,
summaries and `tracestream errors`."""

from __future__ import annotations

import time

from tests.seeded_records import RecordWriter
from tests.support import RedisHandle
from tests.test_cli import ndjson, run
from tracestream.error_issues import list_issues, newest_record
from tracestream.exporters.encoding import exception_fields
from tracestream.query import Query, fetch_trace, search
from tracestream.summary import summarize

MAX_ENTRIES = 500
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def _failure() -> tuple[str, str, str]:
    try:
        raise LookupError("card 4242 declined")
    except LookupError as error:
        return exception_fields(LookupError, error, error.__traceback__)


def test_a_flood_of_info_from_one_service_leaves_another_services_errors(stream: RedisHandle) -> None:
    writer = RecordWriter(stream, max_entries=MAX_ENTRIES)
    started_ms = int(time.time() * 1000)
    writer.write(
        writer.row("charging", service="billing", trace_id=TRACE_ID, span_id=7),
        writer.row("charge failed", service="billing", severity="ERROR", trace_id=TRACE_ID, span_id=7,
                   exception=_failure()),
    )  # fmt: skip
    for batch in range(10):  # 5,000 INFO records: ten times what the stream keeps
        writer.write(*(writer.row(f"noise {batch}.{i}", service="noisy") for i in range(500)))
    writer.close()

    with stream.client() as client:
        kept = client.xrange(stream.keys.logs)
        assert len(kept) < 2 * MAX_ENTRIES  # trimmed by count...
        assert not [fields for _, fields in kept if fields["service"] == "billing"]  # ...billing's too

        found = search(client, stream.stream, Query.parse(severity="ERROR")).records
        assert [(e.service, e.body, e.exception_type) for e in found] == [
            ("billing", "charge failed", "LookupError")
        ]
        assert "in _failure" in found[0].exception_stacktrace
        by_service = search(client, stream.stream, Query.parse(severity="WARN", services=["billing"]))
        assert [e.body for e in by_service.records] == []  # below ERROR, trimmed records stay trimmed
        at_error = search(
            client, stream.stream, Query.parse(severity="ERROR", services=["billing"], text="failed")
        )
        assert [e.body for e in at_error.records] == ["charge failed"]

        trace = fetch_trace(client, stream.stream, f"{TRACE_ID:032x}")
        assert [e.body for e in trace.logs] == ["charge failed"]  # the INFO line went with the flood

        summary = summarize(client, stream.stream, started_ms - 1000)
        assert summary.services["billing"].errors == 1
        assert [(g.exception_type, g.count) for g in summary.top_errors()] == [("LookupError", 1)]
        assert summary.services["noisy"].errors == 0

        (issue,) = list_issues(client, stream.stream)
        newest = newest_record(client, stream.stream, issue)  # for the issue's page: its stack trace
        assert newest is not None and newest.stream_id == found[0].stream_id
        assert "in _failure" in newest.exception_stacktrace

    listed = run(stream, "errors", "--json")
    assert listed.returncode == 0, listed.stderr
    issues = ndjson(listed.stdout)
    assert [(i["service"], i["type"], i["count"], i["trace_id"]) for i in issues] == [
        ("billing", "LookupError", 1, f"{TRACE_ID:032x}")
    ]


def test_the_errors_copy_has_a_cap_of_its_own(stream: RedisHandle) -> None:
    writer = RecordWriter(stream, max_entries=MAX_ENTRIES, errors_maxlen=200)
    for batch in range(6):
        writer.write(*(writer.row(f"failed {batch}.{i}", severity="ERROR") for i in range(100)))
    writer.close()
    with stream.client() as client:
        kept = client.xlen(stream.keys.errors)
        assert 200 <= kept < 600  # approximate trimming, as the stream's MAXLEN ~
        newest = client.xrevrange(stream.keys.errors, count=1)[0]
        assert newest[1]["body"] == "failed 5.99"
        assert client.xrevrange(stream.keys.logs, count=1)[0][0] == newest[0]  # the same stream id
