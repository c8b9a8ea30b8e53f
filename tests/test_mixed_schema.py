"""A stream holding entries of schema 1 (before resources were stored by reference) and of
schema 2 reads as one, through every reader: search, trace lookup, live follow, summaries,
the console, the forwarder and the alerts runner.

Schema 1 entries are laid down here as the schema 1 writer stored them: every field (with
`observed_ts`), the severity text, and the resource JSON inline, plus their search digest
line and trace index members (docs/stream-schema.md). Schema 2 entries come from the exporter.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace

from tests.apps.alerts_webhook import WebhookReceiver
from tests.otlp_receiver import OtlpReceiver
from tests.seeded_records import RecordWriter, tracer_provider
from tests.support import RedisHandle, wait_for
from tests.test_alerts import notified, rule_file, running
from tests.test_console_live import ConsoleProcess
from tests.test_forward import forwarding
from tracestream import schema
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.query import Follow, Query, fetch_trace, follow, search
from tracestream.summary import summarize

SCHEMA_1_LOG_FIELDS = (
    "v", "rid", "ts", "observed_ts", "severity", "severity_number", "body", "service", "trace_id",
    "span_id", "trace_flags", "scope", "code", "attributes", "resource", "exception_type",
    "exception_message", "exception_stacktrace",
)  # fmt: skip
OLD_RESOURCE = {"service.name": "mixed", "service.version": "1.0", "host.name": "old-host", "process.pid": 11}
NEW_RESOURCE = {"service.name": "mixed", "service.instance.id": "new"}
TRACE = 0x5CE1E7ED0000000000000000000000AB
TRACE_HEX = format(TRACE, "032x")


def _write_schema_1_log(
    client: Any, keys: schema.StreamKeys, body: str, severity: str, number: int, resource: str | None = None
) -> str:
    """One log entry, its digest line and its trace index member, as the schema 1 writer left them
    (with `resource`, a schema 2 entry whose resource is that text)."""
    values = {
        "v": "1", "rid": uuid.uuid4().hex[:16] + "1", "ts": "1764784801101000000",
        "observed_ts": "1764784801102000000", "severity": severity, "severity_number": str(number),
        "body": body, "service": "mixed", "trace_id": TRACE_HEX, "span_id": "00f067aa0ba902b7",
        "trace_flags": "1", "scope": "old.app", "code": "app/old.py:3 in handle",
        "attributes": '{"era":"one"}', "resource": schema.dump_json(OLD_RESOURCE),
        "exception_type": "ValueError" if number >= 17 else "", "exception_message": "",
        "exception_stacktrace": "",
    }  # fmt: skip
    assert tuple(values) == SCHEMA_1_LOG_FIELDS
    if resource is not None:
        values.update(v="2", resource=resource)
    stream_id: str = client.xadd(keys.logs, values)
    line = "\n" + "\t".join(("mixed", str(number), stream_id, body, values["exception_type"], ""))
    client.xadd(keys.digest, {"first": stream_id, "n": 1, "d": line}, id=stream_id)
    client.rpush(keys.trace_index(TRACE_HEX), schema.INDEX_LOG + stream_id)
    return stream_id


def _write_schema_1_span(client: Any, keys: schema.StreamKeys) -> None:
    values = {
        "v": "1", "rid": uuid.uuid4().hex[:16] + "2", "trace_id": TRACE_HEX, "span_id": "00f067aa0ba902b7",
        "parent_span_id": "", "name": "GET /old", "kind": "SERVER", "start_ts": "1764784801100000000",
        "end_ts": "1764784801105000000", "status": "UNSET", "status_message": "", "service": "mixed",
        "scope": "old.app", "attributes": "{}", "events": "[]", "resource": schema.dump_json(OLD_RESOURCE),
    }  # fmt: skip
    stream_id = client.xadd(keys.spans, values)
    client.rpush(keys.trace_index(TRACE_HEX), schema.INDEX_SPAN + stream_id)


@pytest.fixture(scope="module")
def mixed(redis_server: EmbeddedRedis) -> Iterator[RedisHandle]:
    """Two schema 1 records and a span, then two schema 2 records and a span, all in one trace."""
    handle = RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    with handle.client() as client:
        _write_schema_1_log(client, handle.keys, "old checkout ok", "INFO", 9)
        _write_schema_1_log(client, handle.keys, "old checkout failed", "ERROR", 17)
        _write_schema_1_span(client, handle.keys)
    writer = RecordWriter(handle)
    for body, severity in (("new checkout ok", "INFO"), ("new checkout failed", "ERROR")):
        writer.write(
            writer.row(body, service="mixed", instance="new", severity=severity, trace_id=TRACE, span_id=1)
        )
    writer.close()
    provider = tracer_provider(handle, "mixed")
    parent = trace.NonRecordingSpan(
        trace.SpanContext(TRACE, 1, is_remote=True, trace_flags=trace.TraceFlags(1))
    )
    provider.get_tracer("new.app").start_span("GET /new", context=trace.set_span_in_context(parent)).end()
    provider.shutdown()
    return handle


def _resource_of(era: str) -> dict[str, Any]:
    return OLD_RESOURCE if era == "old" else NEW_RESOURCE


def test_the_stream_holds_both_layouts(mixed: RedisHandle) -> None:
    with mixed.client() as client:
        entries = client.xrange(mixed.keys.logs)
    assert [fields["v"] for _, fields in entries] == ["1", "1", "2", "2"]
    new = entries[-1][1]
    assert new["resource"].startswith(schema.RESOURCE_REFERENCE) and len(new["resource"]) == 17
    assert "observed_ts" not in new and new["severity"] == ""  # ERROR is what 17 implies


def test_search_reads_both_as_one(mixed: RedisHandle) -> None:
    with mixed.client() as client:
        page = search(client, mixed.stream, Query.parse(text="checkout"), limit=10)
        errors = search(client, mixed.stream, Query.parse(severity="ERROR"), limit=10)
    found = {entry.body: entry for entry in page.records}
    assert set(found) == {"old checkout ok", "old checkout failed", "new checkout ok", "new checkout failed"}
    for body, entry in found.items():
        assert entry.resource == _resource_of(body.split()[0])
        assert entry.severity == ("ERROR" if "failed" in body else "INFO")
    assert {entry.body for entry in errors.records} == {"old checkout failed", "new checkout failed"}


def test_a_trace_gathers_both(mixed: RedisHandle) -> None:
    with mixed.client() as client:
        records = fetch_trace(client, mixed.stream, TRACE_HEX)
    assert {span.name: span.resource for span in records.spans} == {
        "GET /old": OLD_RESOURCE,
        "GET /new": {"service.name": "mixed"},
    }
    assert sorted(log.resource["service.name"] for log in records.logs) == ["mixed"] * 4
    assert {log.body: log.resource for log in records.logs}["old checkout ok"] == OLD_RESOURCE


def test_follow_reads_both(mixed: RedisHandle) -> None:
    with mixed.client() as client:
        state = Follow(positions={mixed.stream: "0-0"})
        seen = []
        for entry in follow(client, mixed.stream, Query.parse(), state, block_ms=100):
            if entry is None:
                break
            seen.append(entry)
    assert [entry.resource for entry in seen] == [OLD_RESOURCE, OLD_RESOURCE, NEW_RESOURCE, NEW_RESOURCE]


def test_summaries_count_both_with_their_severity(mixed: RedisHandle) -> None:
    with mixed.client() as client:
        summary = summarize(client, mixed.stream, since_ms=0)
    service = summary.services["mixed"]
    assert (service.stored, service.errors, len(service.instances)) == (4, 2, 2)
    assert {severity for _, name, severity in summary.per_minute if name == "mixed"} == {"INFO", "ERROR"}


def test_the_console_shows_both_resources(mixed: RedisHandle) -> None:
    with mixed.client() as client:
        ids = [stream_id for stream_id, _ in client.xrange(mixed.keys.logs)]
    console = ConsoleProcess(mixed).start()
    try:
        views = [httpx.get(f"{console.url}api/record/{i}", headers=console.headers()).json() for i in ids]
    finally:
        console.stop()
    assert [view["resource"] for view in views] == [OLD_RESOURCE, OLD_RESOURCE, NEW_RESOURCE, NEW_RESOURCE]
    assert [view["severity"] for view in views] == ["INFO", "ERROR", "INFO", "ERROR"]


def test_the_forwarder_sends_both_with_their_resources(mixed: RedisHandle) -> None:
    with OtlpReceiver() as receiver, forwarding(mixed, receiver):
        wait_for(lambda: len(receiver.logs) >= 4 and len(receiver.spans) >= 2, what="every entry forwarded")
        logs, spans = list(receiver.logs), list(receiver.spans)
    got = {r.record.body.string_value: r for r in logs}
    for body, received in got.items():
        assert received.resource == _resource_of(body.split()[0])
        assert received.record.severity_text == ("ERROR" if "failed" in body else "INFO")
    assert sorted(r.resource.get("host.name", "") for r in spans) == ["", "old-host"]


def test_the_alerts_runner_matches_both(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """The runner reads what arrives after it starts: one record of each layout."""
    handle = RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    rules = [{"name": "failed", "kind": "match", "filter": {"service": "mixed", "severity": "ERROR"},
              "cooldown": "1s", "notify": ["ops"]}]  # fmt: skip
    writer = RecordWriter(handle)
    with WebhookReceiver() as receiver, running(handle, rule_file(tmp_path, receiver, rules)):
        with handle.client() as client:
            _write_schema_1_log(client, handle.keys, "old checkout failed", "ERROR", 17)
        writer.log("new checkout failed", service="mixed", severity="ERROR")
        firing, resolved = notified(receiver, "failed", 2, timeout=20)
    assert firing["state"] == "firing"
    writer.close()
    assert resolved["count"] == 2
    assert sorted(sample["body"] for sample in resolved["samples"]) == [
        "new checkout failed",
        "old checkout failed",
    ]
    assert {sample["severity"] for sample in resolved["samples"]} == {"ERROR"}


def test_a_reference_whose_resource_expired_is_shown_and_forwarded_as_the_reference(
    redis_server: EmbeddedRedis,
) -> None:
    handle = RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    gone = schema.RESOURCE_REFERENCE + "0123456789abcdef"
    with handle.client() as client:
        _write_schema_1_log(client, handle.keys, "its process is long gone", "INFO", 9, resource=gone)
    assert [entry.resource for entry in handle.logs()] == [{schema.UNRESOLVED_RESOURCE: gone}]
    with OtlpReceiver() as receiver, forwarding(handle, receiver):
        wait_for(lambda: receiver.logs, what="the record forwarded")
        assert [received.resource for received in receiver.logs] == [{schema.UNRESOLVED_RESOURCE: gone}]
