"""What the FastAPI and Django end-to-end tests both check about a request record."""

from __future__ import annotations

import httpx

from tests.support import RedisHandle, wait_for
from tracestream.schema import LogEntry, SpanEntry

HTTP_SCOPE = "tracestream.http"


def request_record(stream: RedisHandle, response: httpx.Response) -> LogEntry:
    """The one request record in the trace named by the response's X-Trace-Id header."""
    trace_id = response.headers["x-trace-id"]
    found = wait_for(
        lambda: [e for e in stream.logs() if e.trace_id == trace_id and is_request_record(e)],
        what=f"the request record of {trace_id}",
    )
    assert len(found) == 1, found
    return found[0]


def is_request_record(entry: LogEntry) -> bool:
    return entry.scope == HTTP_SCOPE and entry.attributes.get("event.name") == "http.server.request"


def check_ok_record(
    stream: RedisHandle, record: LogEntry, response: httpx.Response, route: str, user_agent: str
) -> SpanEntry:
    """The fields of a 200 GET's record, written inside the server span (returned)."""
    assert record.severity == "INFO"
    attributes = record.attributes
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == route
    assert attributes["url.path"] == response.request.url.path
    assert attributes["http.response.status_code"] == 200
    assert attributes["client.address"] == "127.0.0.1"
    assert attributes["user_agent.original"] == user_agent
    assert attributes["http.response.body.size"] == len(response.content)
    assert 0 < attributes["http.server.duration_ms"] < 5000
    assert response.headers["traceparent"].split("-")[1] == record.trace_id
    spans = wait_for(
        lambda: [s for s in stream.spans() if s.trace_id == record.trace_id and s.kind == "SERVER"],
        what="the server span",
    )
    assert len(spans) == 1 and record.span_id == spans[0].span_id
    return spans[0]
