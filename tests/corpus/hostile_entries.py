"""Entries another writer could leave under a tracestream's keys, written raw (XADD, RPUSH).

Sources: a second application on the same stream name, an older schema, a buggy tool. Each
hostile entry sits between good records written by the real exporter, so a reader test can
check that the good ones still come back, in order, and that nothing raised.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import redis
from opentelemetry.sdk.trace import TracerProvider

from tests.seeded_records import RecordWriter, tracer_provider
from tests.support import RedisHandle
from tracestream.exporters.encoding import span_id_hex
from tracestream.schema import INDEX_LOG, INDEX_SPAN, LOG_FIELDS, SPAN_FIELDS, UNDECODABLE

MB20 = 20_000_000


@dataclass(frozen=True)
class Hostile:
    """One foreign entry: what it is, its fields' raw bytes, and whether readers must mark it."""

    name: str
    changes: dict[str, bytes | None]  # None removes the field
    marked: bool = True


HOSTILE_LOGS = (
    Hostile("attributes that are not JSON", {"attributes": b"{user: 'x'"}),
    Hostile("attributes that are a JSON list", {"attributes": b"[1, 2, 3]"}),
    Hostile("resource that is a JSON string", {"resource": b'"api"'}),
    Hostile("a resource reference with nothing stored under it", {"resource": b"@0123456789abcdef"}, False),
    Hostile("a resource reference that is not one", {"resource": b"@../../x\n{tag}"}, False),
    Hostile("ts that is not an integer", {"ts": b"2024-05-01T12:00:00Z"}),
    Hostile("ts far out of range", {"ts": b"9" * 40}),
    Hostile("ts negative", {"ts": b"-1"}),
    Hostile("ts with more digits than Python parses", {"ts": b"7" * 5000}),
    Hostile("severity_number that is not an integer", {"severity_number": b"ERROR"}),
    Hostile("severity_number far out of range", {"severity_number": b"1" + b"0" * 30}),
    Hostile("trace_flags that are not an integer", {"trace_flags": b"0x01"}),
    Hostile("trace_flags far out of range", {"trace_flags": b"18446744073709551616"}),
    Hostile("attributes nested 500 deep", {"attributes": b'{"a":' * 500 + b"1" + b"}" * 500}),
    Hostile("attributes nested 5000 deep", {"attributes": b"[" * 5000 + b"]" * 5000}),
    Hostile("a 20 MB body", {"body": b"x" * MB20}),
    Hostile(
        "invalid UTF-8", {"body": b"caf\xe9 \xff\xfe", "service": b"api\xff", "severity": b"\xc3"}, False
    ),
    Hostile("a tab and a newline in the service name", {"service": b"api\tsplit\nhere"}, False),
    Hostile(
        "a tab in severity and exception type", {"severity": b"ERR\tOR", "exception_type": b"a\tb"}, False
    ),
    Hostile("every field missing but the body", {name: None for name in LOG_FIELDS if name != "body"}, False),
    Hostile("extra unknown fields, another schema version", {"v": b"99", "color": b"red"}, False),
)

HOSTILE_SPANS = (
    Hostile("events that are not JSON", {"events": b"[{"}),
    Hostile("events that are a JSON object", {"events": b'{"name": "x"}'}),
    Hostile("events holding a number", {"events": b'[1, {"name": "ok", "ts": 1, "attributes": {}}]'}),
    Hostile("start_ts that is not an integer", {"start_ts": b"soon"}),
    Hostile("start_ts far out of range", {"start_ts": b"-" + b"9" * 30}),
    Hostile("span attributes that are not an object", {"attributes": b"null"}),
    Hostile("span name that is not UTF-8", {"name": b"GET /\xff"}, False),
)
# log fields in the spans stream: a span with most fields missing, nothing undecodable
WRONG_SHAPE = Hostile("a log entry in the spans stream", {}, False)


@dataclass
class Corpus:
    """What was written: good record ids oldest first, the trace they share, hostile stream ids."""

    handle: RedisHandle
    trace_id: str
    span_id: str
    good: list[str] = field(default_factory=list)  # bodies, oldest first
    hostile_logs: dict[str, str] = field(default_factory=dict)  # stream id -> Hostile.name
    hostile_spans: dict[str, str] = field(default_factory=dict)
    marker: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @staticmethod
    def is_marked(name: str, attributes: dict[str, object]) -> bool:
        """Whether the hostile entry `name` came back marked exactly when the corpus says it must be."""
        hostile = next(h for h in (*HOSTILE_LOGS, *HOSTILE_SPANS, WRONG_SHAPE) if h.name == name)
        return (UNDECODABLE in attributes) == hostile.marked


def _log_fields(trace_id: str, span_id: str, name: str, changes: dict[str, bytes | None]) -> dict[str, bytes]:
    now = str(time.time_ns()).encode()
    fields: dict[str, bytes | None] = {
        "v": b"1", "rid": f"hostile{uuid.uuid4().hex}".encode(), "ts": now, "observed_ts": now,
        "severity": b"ERROR", "severity_number": b"17", "body": f"hostile: {name}".encode(),
        "service": b"api", "trace_id": trace_id.encode(), "span_id": span_id.encode(), "trace_flags": b"1",
        "scope": b"foreign", "code": b"", "attributes": b"{}", "resource": b'{"service.name": "api"}',
        "exception_type": b"ForeignError", "exception_message": b"", "exception_stacktrace": b"",
    }  # fmt: skip
    fields.update(changes)
    return {key: value for key, value in fields.items() if value is not None}


def _span_fields(trace_id: str, parent: str, name: str, changes: dict[str, bytes | None]) -> dict[str, bytes]:
    now = time.time_ns()
    fields: dict[str, bytes | None] = {
        "v": b"1", "rid": f"hostile{uuid.uuid4().hex}".encode(), "trace_id": trace_id.encode(),
        "span_id": uuid.uuid4().hex[:16].encode(), "parent_span_id": parent.encode(),
        "name": f"hostile: {name}".encode(), "kind": b"INTERNAL", "start_ts": str(now).encode(),
        "end_ts": str(now + 1000).encode(), "status": b"UNSET", "status_message": b"", "service": b"api",
        "scope": b"foreign", "attributes": b"{}", "events": b"[]", "resource": b"{}",
    }  # fmt: skip
    assert set(fields) == set(SPAN_FIELDS)
    fields.update(changes)
    return {key: value for key, value in fields.items() if value is not None}


def _digest_line(stream_id: str, fields: dict[str, bytes]) -> bytes:
    """A digest line as the exporter writes one, built from raw bytes (tabs and newlines become spaces)."""
    parts = [fields.get(name, b"") for name in ("service", "severity_number")]
    parts += [stream_id.encode()]
    parts += [fields.get(name, b"")[:200] for name in ("body", "exception_type", "exception_message")]
    return b"\n" + b"\t".join(part.replace(b"\t", b" ").replace(b"\n", b" ") for part in parts)


def write_corpus(handle: RedisHandle, good_before: int = 3, good_after: int = 3) -> Corpus:
    """Good records (a span and its logs, by the exporter), every hostile entry, then more good ones.

    The hostile log entries get a digest entry of their own and trace index members, as the
    exporter would have written them, plus index members and digest lines that are not ids.
    """
    provider: TracerProvider = tracer_provider(handle, "api")
    with provider.get_tracer("corpus").start_as_current_span("good root") as span:
        context = span.get_span_context()
    provider.shutdown()
    corpus = Corpus(handle, format(context.trace_id, "032x"), span_id_hex(context.span_id))
    writer = RecordWriter(handle)
    raw = redis.Redis.from_url(handle.url)
    keys = handle.keys
    try:
        _good(corpus, writer, good_before)
        lines, index = [], []
        for hostile in HOSTILE_LOGS:
            fields = _log_fields(corpus.trace_id, corpus.span_id, hostile.name, hostile.changes)
            stream_id = raw.xadd(keys.logs, fields).decode()  # type: ignore[arg-type]
            corpus.hostile_logs[stream_id] = hostile.name
            lines.append(_digest_line(stream_id, fields))
            index.append(f"{INDEX_LOG}{stream_id}")
        for hostile in HOSTILE_SPANS:
            fields = _span_fields(corpus.trace_id, corpus.span_id, hostile.name, hostile.changes)
            stream_id = raw.xadd(keys.spans, fields).decode()  # type: ignore[arg-type]
            corpus.hostile_spans[stream_id] = hostile.name
            index.append(f"{INDEX_SPAN}{stream_id}")
        # a log entry in the spans stream, and members that name nothing valid
        fields = _log_fields(corpus.trace_id, corpus.span_id, WRONG_SHAPE.name, WRONG_SHAPE.changes)
        wrong_shape = raw.xadd(keys.spans, fields).decode()  # type: ignore[arg-type]
        corpus.hostile_spans[wrong_shape] = WRONG_SHAPE.name
        index += [f"{INDEX_SPAN}{wrong_shape}", "lnot-an-id", "s99999999999999999999999-0", "x1-0", "l", ""]
        index += [f"{INDEX_LOG}{next(iter(corpus.hostile_spans))}"]  # a span's id as a log member
        raw.rpush(keys.trace_index(corpus.trace_id), *index)
        lines += [
            b"\napi\t17\tnot-an-id\tbad id",
            b"\napi\t17\t99999999999999999999999-0\ttoo big",
            b"\nnot a line",
        ]
        # digest entry ids are record ids, as the exporter's are, so later records get theirs
        first, *_, last = corpus.hostile_logs
        raw.xadd(keys.digest, {"first": "garbage", "n": "many", "d": b"\napi\tx\ty\tz"}, id=first)
        raw.xadd(keys.digest, {"first": first, "n": len(lines), "d": b"".join(lines)}, id=last)
        raw.set(keys.trace_index("cd" * 16), "a string where a list belongs")
        _good(corpus, writer, good_after)
    finally:
        writer.close()
        raw.close()
    return corpus


def _good(corpus: Corpus, writer: RecordWriter, count: int) -> None:
    trace, span = int(corpus.trace_id, 16), int(corpus.span_id, 16)
    for _ in range(count):
        body = f"good {corpus.marker} {len(corpus.good)}"
        writer.log(body, severity="ERROR", trace_id=trace, span_id=span, exception=("GoodError", body, ""))
        corpus.good.append(body)
