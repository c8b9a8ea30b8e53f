"""Reading the streams back. For now: everything about one trace, from the trace index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from tracestream.schema import INDEX_LOG, INDEX_SPAN, LogEntry, SpanEntry, StreamKeys


@dataclass(frozen=True)
class TraceRecords:
    """A trace's spans and log records, each in time order."""

    trace_id: str
    spans: list[SpanEntry]
    logs: list[LogEntry]


def fetch_trace(client: redis.Redis, stream: str, trace_id: str) -> TraceRecords:
    """One LRANGE on the index, then one pipelined XRANGE per member: no stream scan.

    `client` must decode responses. Members whose entries were trimmed are skipped.
    """
    keys = StreamKeys(stream)
    members = cast(list[str], client.lrange(keys.trace_index(trace_id), 0, -1))
    pipe = client.pipeline(transaction=False)
    for member in members:
        key = keys.logs if member[0] == INDEX_LOG else keys.spans
        entry_id = member[1:]
        pipe.xrange(key, entry_id, entry_id)
    spans: list[SpanEntry] = []
    logs: list[LogEntry] = []
    seen: set[str] = set()
    for member, found in zip(members, pipe.execute(), strict=True):
        for entry_id, fields in found:
            if fields.get("rid") in seen:  # a retried export may have written it twice
                continue
            seen.add(fields.get("rid", ""))
            if member[0] == INDEX_SPAN:
                spans.append(SpanEntry.from_fields(entry_id, fields))
            else:
                logs.append(LogEntry.from_fields(entry_id, fields))
    spans.sort(key=lambda span: span.start_ns)
    logs.sort(key=lambda log: log.timestamp_ns)
    return TraceRecords(trace_id, spans, logs)
