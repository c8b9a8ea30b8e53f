"""Stream entries turned back into OTLP protobuf requests, for `tracestream forward`.

A Collector (and Loki, Tempo, ClickHouse or Jaeger behind it) then sees each record as the
service made it: same trace and span ids, timestamps, severity, attributes, resource and
scope. The OTLP LogRecord has no id field, so every record carries its record id (`rid`,
the same in every copy, unlike the stream entry id) as the attribute `tracestream.record_id`;
receivers can drop the duplicates that at-least-once delivery may produce.

This is the forwarder's hot path, so it works on entries exactly as Redis sends them
(bytes, fields in schema order) and writes the protobuf wire format directly, with field
numbers from opentelemetry-proto's logs.proto, trace.proto and common.proto. Building the
generated message classes from `schema.LogEntry` cost ~37 µs a record, which cannot keep
up with one exporting process; this costs ~10 µs. The tests decode every request with the
generated classes.
"""

from __future__ import annotations

import binascii
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from tracestream.schema import (
    EXCEPTION_KEYS,
    LOG_FIELDS,
    RESOURCE_REFERENCE,
    SPAN_FIELDS,
    UNRESOLVED_RESOURCE,
    implied_severity_text,
)

RECORD_ID = "tracestream.record_id"

# (entry id, [name, value, name, value, ...]) as XREADGROUP returns it without parsing.
RawEntry = tuple[bytes, list[bytes]]

_LOG_NAMES = [name.encode() for name in LOG_FIELDS]
_SPAN_NAMES = [name.encode() for name in SPAN_FIELDS]
_CODE = re.compile(r"^(?P<path>.+?)(?::(?P<line>\d+))?(?: in (?P<function>\S+))?$")
_SPAN_KINDS = {b"INTERNAL": 1, b"SERVER": 2, b"CLIENT": 3, b"PRODUCER": 4, b"CONSUMER": 5}
_STATUS_CODES = {b"OK": 1, b"ERROR": 2}
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_DOUBLE = struct.Struct("<d").pack
_unhex = binascii.unhexlify


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Lengths below this are looked up, not computed: nearly every field is shorter.
_SHORT = 16384
_LENGTHS = [_varint(n) for n in range(_SHORT)]


def _length(size: int) -> bytes:
    return _LENGTHS[size] if size < _SHORT else _varint(size)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _length(len(payload)) + payload


def _utf8(raw: bytes) -> bytes:
    """Protobuf strings must be UTF-8, or a receiver refuses the whole request: another writer's
    bytes that are not become `\\xNN` escapes, as readers show them."""
    if raw.isascii():
        return raw
    try:
        raw.decode()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace").encode()
    return raw


def _decoded(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _text(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode("utf-8", "surrogatepass"))


def any_value(value: object) -> bytes:
    """A JSON value as an AnyValue; null stays an empty AnyValue, as OTLP defines it."""
    kind = type(value)
    if kind is str:
        return _text(b"\x0a", value)  # type: ignore[arg-type]
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        number: int = value  # type: ignore[assignment]
        if -(2**63) <= number < 2**63:
            return b"\x18" + _varint(number & 0xFFFFFFFFFFFFFFFF)
        return _text(b"\x0a", str(number))
    if kind is float:
        return b"\x21" + _DOUBLE(value)  # type: ignore[arg-type]
    if value is None:
        return b""
    if isinstance(value, list):
        return _field(b"\x2a", b"".join(_field(b"\x0a", any_value(item)) for item in value))
    if isinstance(value, dict):
        return _field(b"\x32", key_values(b"\x0a", value))
    return _text(b"\x0a", str(value))


@lru_cache(maxsize=4096)
def _key(key: str) -> bytes:
    return _text(b"\x0a", key) + b"\x12"


def key_values(tag: bytes, attributes: Mapping[str, object]) -> bytes:
    """Repeated KeyValue fields under `tag`. Flat on purpose: it runs for every attribute."""
    parts: list[bytes] = []
    for key, value in attributes.items():
        if type(value) is str:
            text = value.encode("utf-8", "surrogatepass")
            encoded = b"\x0a" + _length(len(text)) + text
        else:
            encoded = any_value(value)
        pair = _key(key) + _length(len(encoded)) + encoded
        parts += (tag, _length(len(pair)), pair)
    return b"".join(parts)


def _values(flat: list[bytes], names: list[bytes]) -> list[bytes]:
    """Values in schema order. The exporter writes them in that order; anything else is looked up."""
    if flat[0::2] == names:
        return flat[1::2]
    found = dict(zip(flat[0::2], flat[1::2], strict=True))
    return [found.get(name, b"") for name in names]


def _resource_attributes(raw: bytes) -> dict[str, Any]:
    """A reference the forwarder could not resolve (its hash expired) is sent as what it is."""
    if raw.startswith(RESOURCE_REFERENCE.encode()):
        return {UNRESOLVED_RESOURCE: _decoded(raw)}
    return _attributes(raw)


def _attributes(raw: bytes) -> dict[str, Any]:
    value = orjson.loads(raw) if raw else {}
    if not isinstance(value, dict):
        raise ValueError("attributes are not a JSON object")
    return value


@dataclass
class Encoded:
    """One request body, and the entries that could not be encoded (index, reason)."""

    body: bytes
    count: int
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _encode(
    entries: Iterable[RawEntry], names: list[bytes], record: Callable[[list[bytes]], bytes], scope_at: int
) -> Encoded:
    """ExportLogsServiceRequest and ExportTraceServiceRequest share this shape: resource, scope, records."""
    resource_at = names.index(b"resource")
    resources: dict[bytes, bytes] = {}  # each distinct resource JSON, encoded once
    groups: dict[bytes, dict[bytes, list[bytes]]] = {}
    rejected = []
    count = 0
    for index, (_, flat) in enumerate(entries):
        try:
            values = _values(flat, names)
            resource_json = values[resource_at]
            if resource_json not in resources:
                resources[resource_json] = key_values(b"\x0a", _resource_attributes(resource_json))
            encoded = record(values)
        except Exception as error:  # anything another writer or an old tool left: this entry only
            rejected.append((index, f"cannot encode entry: {type(error).__name__}: {error}"))
            continue
        scopes = groups.get(resource_json)
        if scopes is None:
            scopes = groups[resource_json] = {}
        records = scopes.get(values[scope_at])
        if records is None:
            records = scopes[values[scope_at]] = []
        records += (b"\x12", _length(len(encoded)), encoded)
        count += 1
    parts = []
    for resource_json, scopes in groups.items():
        resource = _field(b"\x0a", resources[resource_json])
        scoped = b"".join(
            _field(b"\x12", _field(b"\x0a", _field(b"\x0a", _utf8(scope))) + b"".join(records))
            for scope, records in scopes.items()
        )
        parts.append(_field(b"\x0a", resource + scoped))
    return Encoded(b"".join(parts), count, rejected)


def encode_logs(entries: Sequence[RawEntry]) -> Encoded:
    """A serialised ExportLogsServiceRequest for log stream entries."""
    return _encode(entries, _LOG_NAMES, _log_record, LOG_FIELDS.index("scope"))


def _log_record(values: list[bytes]) -> bytes:
    (_, rid, ts, severity, number, body, _, trace_id, span_id, flags, _, code, attributes_json, _,
     exception_type, exception_message, stacktrace) = values  # fmt: skip
    attributes = _attributes(attributes_json)
    if exception_type or exception_message:
        exception = (_decoded(exception_type), _decoded(exception_message), _decoded(stacktrace))
        attributes.update(zip(EXCEPTION_KEYS, exception, strict=True))
    attributes[RECORD_ID] = _decoded(rid)
    body = _utf8(body)
    body = b"\x0a" + _length(len(body)) + body
    parts = [
        b"\x09",
        _FIXED64(int(ts or 0)),
        _severity(severity, number),
        b"\x2a",
        _length(len(body)),
        body,
        key_values(b"\x32", attributes),
        _code_attributes(code) if code else b"",
        b"\x45",
        _FIXED32(int(flags or 0)),
        b"\x59",
        _FIXED64(int(ts or 0)),  # the stream keeps no observed time: the bridge sees a record as it is made
    ]
    if trace_id:
        parts += (b"\x4a\x10", _unhex(trace_id))
    if span_id:
        parts += (b"\x52\x08", _unhex(span_id))
    return b"".join(parts)


@lru_cache(maxsize=64)
def _severity(text: bytes, number: bytes) -> bytes:
    severity_number = int(number or 0)
    if not 0 <= severity_number <= 24:
        raise ValueError(f"severity_number {severity_number} is outside 0 to 24")
    text = text or implied_severity_text(severity_number).encode()
    return b"\x10" + _varint(severity_number) + _field(b"\x1a", _utf8(text))


@lru_cache(maxsize=4096)
def _code_attributes(code: bytes) -> bytes:
    """The stream keeps `path:line in function`; OTLP receivers expect the semconv attributes."""
    match = _CODE.match(_decoded(code))
    if match is None:
        return b""
    attributes: dict[str, object] = {"code.file.path": match["path"]}
    if match["line"]:
        attributes["code.line.number"] = int(match["line"])
    if match["function"]:
        attributes["code.function.name"] = match["function"]
    return key_values(b"\x32", attributes)


def encode_spans(entries: Sequence[RawEntry]) -> Encoded:
    """A serialised ExportTraceServiceRequest for span stream entries."""
    return _encode(entries, _SPAN_NAMES, _span, SPAN_FIELDS.index("scope"))


def _span(values: list[bytes]) -> bytes:
    (_, rid, trace_id, span_id, parent_span_id, name, kind, start, end, status, status_message, _, _,
     attributes_json, events, _) = values  # fmt: skip
    attributes = _attributes(attributes_json)
    attributes[RECORD_ID] = _decoded(rid)
    status_field = _field(b"\x12", _utf8(status_message)) + b"\x18" + _varint(_STATUS_CODES.get(status, 0))
    parts = [
        _field(b"\x0a", _unhex(trace_id)),
        _field(b"\x12", _unhex(span_id)),
        _field(b"\x22", _unhex(parent_span_id)),
        _field(b"\x2a", _utf8(name)),
        b"\x30" + _varint(_SPAN_KINDS.get(kind, 0)),
        b"\x39" + _FIXED64(int(start or 0)),
        b"\x41" + _FIXED64(int(end or 0)),
        key_values(b"\x4a", attributes),
        *(_field(b"\x5a", _event(event)) for event in (orjson.loads(events) if events else [])),
        _field(b"\x7a", status_field),
    ]
    return b"".join(parts)


def _event(event: Mapping[str, Any]) -> bytes:
    return (
        b"\x09"
        + _FIXED64(int(event.get("ts") or 0))
        + _text(b"\x12", str(event.get("name", "")))
        + key_values(b"\x1a", event.get("attributes") or {})
    )
