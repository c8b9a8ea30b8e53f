"""The stream schema: what the writer lays out, the reader reads back unchanged."""

from __future__ import annotations

import logging
import os
import re

from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from tracestream import schema
from tracestream.exporters import encoding

RESOURCE = encoding.EncodedResource.of(Resource({"service.name": "api", "service.version": "1.2"}))
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331


def _context() -> object:
    span = NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1)))
    return trace.set_span_in_context(span)


def _as_entry(values: list[str]) -> schema.LogEntry:
    assert len(values) == len(schema.LOG_FIELDS)
    return schema.LogEntry.from_fields("1-0", dict(zip(schema.LOG_FIELDS, values, strict=True)))


def test_otel_log_record_round_trip() -> None:
    record = ReadableLogRecord(
        log_record=LogRecord(
            timestamp=1_700_000_000_123_456_789,
            observed_timestamp=1_700_000_000_200_000_000,
            context=_context(),  # type: ignore[arg-type]
            severity_text="WARN",
            severity_number=SeverityNumber.WARN,
            body="disk almost full",
            attributes={
                "disk.free": 0.05,
                "code.file.path": "app/disk.py",
                "code.line.number": 42,
                "code.function.name": "check",
                "exception.type": "OSError",
                "exception.message": "no space",
                "exception.stacktrace": "Traceback ...",
            },
        ),
        resource=Resource({}),
        instrumentation_scope=InstrumentationScope("app.disk"),
    )
    entry = _as_entry(encoding.otel_log_values(record, "rid-1", RESOURCE))
    assert entry.schema_version == schema.SCHEMA_VERSION
    assert entry.record_id == "rid-1"
    assert entry.timestamp_ns == 1_700_000_000_123_456_789
    assert (entry.severity, entry.severity_number) == ("WARN", 13)
    assert entry.body == "disk almost full"
    assert entry.service == "api"
    assert entry.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert entry.span_id == "b7ad6b7169203331"
    assert entry.trace_flags == 1
    assert entry.scope == "app.disk"
    assert entry.code == "app/disk.py:42 in check"
    assert entry.attributes == {"disk.free": 0.05}
    assert entry.resource == {"service.name": "api", "service.version": "1.2"}
    assert (entry.exception_type, entry.exception_message) == ("OSError", "no space")
    assert entry.exception_stacktrace == "Traceback ..."


def test_record_without_span_has_empty_ids() -> None:
    record = ReadableLogRecord(
        log_record=LogRecord(timestamp=1, body={"structured": [1, 2]}), resource=Resource({})
    )
    entry = _as_entry(encoding.otel_log_values(record, "rid-2", RESOURCE))
    assert (entry.trace_id, entry.span_id, entry.trace_flags) == ("", "", 0)
    assert entry.body == '{"structured":[1,2]}'


def test_span_round_trip() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "worker"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("celery")
    with tracer.start_as_current_span("parent"), tracer.start_as_current_span("run/add") as child:
        child.set_attribute("celery.task_name", "add")
        child.add_event("retry", {"attempt": 2})
        child.set_status(Status(StatusCode.ERROR, "boom"))
    finished = {span.name: span for span in exporter.get_finished_spans()}
    values = encoding.span_values(
        finished["run/add"], "rid-3", encoding.EncodedResource.of(finished["run/add"].resource)
    )
    entry = schema.SpanEntry.from_fields("2-0", dict(zip(schema.SPAN_FIELDS, values, strict=True)))
    parent = finished["parent"].context
    assert entry.trace_id == format(parent.trace_id, "032x")
    assert entry.parent_span_id == format(parent.span_id, "016x")
    assert (entry.name, entry.kind, entry.status, entry.status_message) == (
        "run/add",
        "INTERNAL",
        "ERROR",
        "boom",
    )
    assert entry.service == "worker" and entry.scope == "celery"
    assert entry.attributes == {"celery.task_name": "add"}
    assert entry.events[0]["name"] == "retry" and entry.events[0]["attributes"] == {"attempt": 2}
    assert entry.end_ns >= entry.start_ns > 0


def test_rows_survive_text_that_is_not_valid_unicode() -> None:
    rows = [["ok", "lone surrogate \udcff here", "nul \x00 and ansi \x1b[31m"]]
    import orjson

    decoded = orjson.loads(schema.dump_rows(rows))
    assert decoded[0][0] == "ok"
    assert "\\udcff" in decoded[0][1]
    assert decoded[0][2] == "nul \x00 and ansi \x1b[31m"


def test_unserialisable_attributes_become_text() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    text = schema.dump_json(
        {"obj": object(), "bytes": b"\xff\x00", "set": {1}, "big": 2**80, "cycle": cyclic}
    )
    assert '"big":"1208925819614629174706176"' in text
    assert "<cycle>" in text  # a cycle is cut where it closes, not expanded to the depth limit


def test_record_ids_are_unique_and_differ_after_fork() -> None:
    ids = schema.RecordIds()
    first = {ids.next() for _ in range(1000)}
    assert len(first) == 1000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report one id and leave without running pytest's teardown
        os.write(write, ids.next().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_id = os.read(read, 100).decode()
    assert child_id not in first and child_id[:16] != next(iter(first))[:16]


def test_stdlib_level_names_follow_otel() -> None:
    from tracestream.otel_setup.logging_bridge import _severity

    assert _severity(logging.WARNING, "WARNING") == ("WARN", 13)
    assert _severity(logging.CRITICAL, "CRITICAL") == ("FATAL", 21)
    assert _severity(logging.DEBUG, "DEBUG") == ("DEBUG", 5)


# Routes as frameworks hand them over, and as records name them.
ROUTES = {
    "orders/<int:order_id>/": "/orders/<int:order_id>/",  # Django's path()
    "": "/",  # path("", ...)
    "/items/{item_id}": "/items/{item_id}",  # FastAPI's, from `/` already
    # re_path, as the Django docs' "Using regular expressions" writes it, and DRF's SimpleRouter
    r"^articles/(?P<year>[0-9]{4})/$": r"^/articles/(?P<year>[0-9]{4})/$",
    r"^users/(?P<pk>[^/.]+)/$": r"^/users/(?P<pk>[^/.]+)/$",
    r"^$": r"^/$",
    # a regex included under a path(): Django joins the two without the regex's `^`
    r"api/users/(?P<pk>[^/.]+)/$": r"/api/users/(?P<pk>[^/.]+)/$",
}


def test_routes_are_rooted_at_slash_and_a_regex_stays_one() -> None:
    """A regex route rooted before its `^` anchor (`/^users/…`) was neither a route nor a regex
    that matched anything."""
    assert {route: schema.rooted_route(route) for route in ROUTES} == ROUTES
    assert [schema.rooted_route(rooted) for rooted in ROUTES.values()] == list(ROUTES.values())
    assert re.fullmatch(ROUTES[r"^users/(?P<pk>[^/.]+)/$"], "/users/7/")
    assert schema.rooted_route(None) is None
