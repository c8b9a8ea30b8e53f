"""What `import tracestream` and `tracestream.query` expose: a change here is a change for users."""

from __future__ import annotations

import tracestream
import tracestream.query


def test_tracestream_exports() -> None:
    assert tracestream.__all__ == ["ConfigError", "Settings", "Telemetry", "__version__", "configure"]


def test_tracestream_exports_resolve() -> None:
    from tracestream import Telemetry, configure

    assert callable(configure) and Telemetry.__name__ == "Telemetry"


def test_query_exports() -> None:
    assert tracestream.query.__all__ == [
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


def test_every_declared_name_exists() -> None:
    for module in (tracestream, tracestream.query):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == [], module.__name__
