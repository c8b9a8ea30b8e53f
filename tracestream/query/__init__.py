"""Reading log records back: one `Query`, newest-first pages, live follow, whole traces and the trace list.

Functions take a decoding client and keep no state between calls: call them from a thread in async
code. On a Redis Cluster every shard is read and the results merged newest first (see
tracestream/shards.py). This package's modules are internal: import from `tracestream.query`.
"""

from tracestream.query.filters import (
    SEVERITY_FLOORS,
    AttributeMatch,
    Query,
    compile_regex,
    parse_severity,
    parse_trace_id,
    record_json,
)
from tracestream.query.follow import Follow, RecentIds, follow, last_id
from tracestream.query.query_error import QueryError
from tracestream.query.record_lookup import record_at
from tracestream.query.replies import run_script, tolerant_call
from tracestream.query.resources import resolve_flat_resources, resolve_resources, resolve_resources_async
from tracestream.query.scan import Cursor, Page, iter_records, search
from tracestream.query.stream_ids import StreamId, after, before, parse_stream_id
from tracestream.query.trace_list import TraceFilter, TraceSummary, recent_traces
from tracestream.query.trace_lookup import (
    SpanNode,
    TraceRecords,
    TraceTree,
    build_tree,
    fetch_trace,
    trace_tree,
)

__all__ = [
    "SEVERITY_FLOORS",
    "AttributeMatch",
    "Cursor",
    "Follow",
    "Page",
    "Query",
    "QueryError",
    "RecentIds",
    "SpanNode",
    "StreamId",
    "TraceFilter",
    "TraceRecords",
    "TraceSummary",
    "TraceTree",
    "after",
    "before",
    "build_tree",
    "compile_regex",
    "fetch_trace",
    "follow",
    "iter_records",
    "last_id",
    "parse_severity",
    "parse_stream_id",
    "parse_trace_id",
    "recent_traces",
    "record_at",
    "record_json",
    "resolve_flat_resources",
    "resolve_resources",
    "resolve_resources_async",
    "run_script",
    "search",
    "tolerant_call",
    "trace_tree",
]
