"""The Redis stream schema: the layout shared by the exporters and every reader.

Entries are flat string fields so `redis-cli XRANGE` stays readable. Every log entry
carries the same field set (empty strings where a value is absent), which lets Redis
store field names once per stream node instead of once per entry.
Writing entries from OTel objects is the exporters' job (tracestream/exporters/encoding.py):
this module imports nothing of the OTel SDK, so readers never load it. See docs/stream-schema.md.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from itertools import count
from typing import Any, cast

import orjson

from tracestream.forks import renew_in_child

SCHEMA_VERSION = "2"

LOG_FIELDS = (
    "v",
    "rid",
    "ts",
    "severity",
    "severity_number",
    "body",
    "service",
    "trace_id",
    "span_id",
    "trace_flags",
    "scope",
    "code",
    "attributes",
    "resource",
    "exception_type",
    "exception_message",
    "exception_stacktrace",
)

SPAN_FIELDS = (
    "v",
    "rid",
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_ts",
    "end_ts",
    "status",
    "status_message",
    "service",
    "scope",
    "attributes",
    "events",
    "resource",
)

# Index members are prefixed so one list per trace can point at both streams.
INDEX_LOG = "l"
INDEX_SPAN = "s"

# Since version 2 an entry's `resource` is usually a reference, `@` and the first 16 hex
# digits of the SHA1 of the resource's JSON, stored once under `StreamKeys.resource`; version
# 1 entries, and any entry whose writer could not store its resource, carry the JSON itself.
RESOURCE_REFERENCE = "@"
# What a reader shows for a reference whose resource is gone (its hash expired).
UNRESOLVED_RESOURCE = "tracestream.resource_ref"

# OTel's short name for each severity number 0-24: '' for 0, then TRACE, TRACE2, TRACE3, TRACE4,
# DEBUG, ..., FATAL4. Since version 2 an entry's `severity` is left empty when it is the name its
# number implies. summary.lua is handed this table, so the rule is written once.
IMPLIED_SEVERITY_TEXTS = (
    "",
    *(
        name if step == 0 else f"{name}{step + 1}"
        for name in ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
        for step in range(4)
    ),
)


def implied_severity_text(number: int) -> str:
    """The short name OTel gives a severity number: 9 is INFO, 10 INFO2, 17 ERROR; '' off the scale."""
    return IMPLIED_SEVERITY_TEXTS[number] if 0 <= number <= 24 else ""


# A digest line: a newline, then service, severity number, the record's stream id, body,
# exception type and message, tab-separated, with tabs and newlines inside values turned
# into spaces. Searches read these instead of whole entries.
DIGEST_FIELDS = ("service", "severity_number", "body", "exception_type", "exception_message")

# The trace list: a summary per local root span, `[trace_id, start_ns, end_ns, error, service,
# name]` as JSON, in sorted sets by start time and, per hour of start, by duration.
TRACE_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class StreamKeys:
    """Every key tracestream uses, derived from one configurable name."""

    logs: str

    @property
    def spans(self) -> str:
        return f"{self.logs}:spans"

    @property
    def errors(self) -> str:
        """Copies of the ERROR+ log entries, under the same stream ids: a flood of other records
        trimming the log stream by count never takes them with it (docs/reliability.md)."""
        return f"{self.logs}:errors"

    @property
    def issues(self) -> str:
        """Every error issue's fingerprint, scored by when it was last seen (ms)."""
        return f"{self.logs}:issues"

    def issue(self, fingerprint: str) -> str:
        """One error issue: a hash of its counts, status and samples (docs/errors.md)."""
        return f"{self.logs}:issue:{fingerprint}"

    def trace_index(self, trace_id: str) -> str:
        return f"{self.logs}:trace:{trace_id}"

    def resource(self, reference: str) -> str:
        """A hash holding, under `json`, the resource that entries name by `reference` (`@` and
        16 hex digits) instead of carrying it; it expires as a writer's marks do."""
        return f"{self.logs}:resource:{reference.removeprefix(RESOURCE_REFERENCE)}"

    @property
    def digest(self) -> str:
        """One entry per written batch: each record's id, severity, service and text, as lines."""
        return f"{self.logs}:digest"

    @property
    def digest_sizes(self) -> str:
        """`<lines> <digest id>` per digest entry, oldest first: trims the digest by record count."""
        return f"{self.logs}:digest:sizes"

    @property
    def digest_lines(self) -> str:
        """How many lines the entries named in `digest_sizes` hold."""
        return f"{self.logs}:digest:lines"

    def traces(self, service: str | None = None) -> str:
        """Trace summaries (one per local root span) by start time: one service's, or, with no
        service, every service's as writers before 2026-12-04 also kept them (read until it expires)."""
        return f"{self.logs}:traces" if service is None else f"{self.logs}:traces:service:{service}"

    @property
    def trace_services(self) -> str:
        """The services that have trace summaries, each scored by its newest start (ms)."""
        return f"{self.logs}:traces:services"

    @property
    def error_traces(self) -> str:
        """The summaries of local roots that failed, by start time."""
        return f"{self.logs}:traces:errors"

    def slowest_traces(self, hour: int, service: str | None = None) -> str:
        """Summaries of local roots that started in `hour` (ms // TRACE_HOUR_MS), by duration: one
        service's, or every service's as writers before 2026-12-04 also kept them."""
        every = f"{self.logs}:traces:slowest:{hour}"
        return every if service is None else f"{every}:{service}"

    @property
    def trace_hours(self) -> str:
        """The hours that have a `slowest_traces` set, each scored by itself."""
        return f"{self.logs}:traces:hours"


UNKNOWN_SERVICE = "unknown_service"


@dataclass(frozen=True)
class Keyspace:
    """Which `StreamKeys` a record goes to: the plain ones on one Redis, a shard's on a cluster.

    On a cluster, every key of one shard carries the same hash tag, so each script call
    (stream, trace index, digest) stays in one slot: `{<stream>}` unsharded, or
    `<stream>:{<service>}` with one shard per service, which spreads services over masters.
    Writers add each shard's log stream key to the `registry` set, so readers find them all.
    """

    stream: str
    cluster: bool = False
    shard_by_service: bool = False

    @property
    def registry(self) -> str:
        return f"{self.stream}:shards"

    def shard(self, service: str) -> StreamKeys:
        if not self.cluster:
            return StreamKeys(self.stream)
        if not self.shard_by_service:
            return StreamKeys(f"{{{self.stream}}}")
        return StreamKeys(f"{self.stream}:{{{service or UNKNOWN_SERVICE}}}")


# ---------------------------------------------------------------------------
# record ids


class RecordIds:
    """Cheap unique ids: a random per-process prefix and a counter.

    The prefix is redrawn after fork, so forked workers never reuse their parent's ids.
    """

    def __init__(self) -> None:
        self._restart()
        renew_in_child(self._restart)

    def _restart(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


def writer_and_counter(record_id: str) -> tuple[str, int] | None:
    """A record id's writer (its 16-hex-digit prefix) and counter; None for another form."""
    try:
        return (record_id[:16], int(record_id[16:], 16)) if len(record_id) > 16 else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# JSON values


def safe_repr(value: object) -> str:
    """repr() that cannot raise: a broken __repr__ must not cost the record (or reach the app)."""
    try:
        return repr(value)
    except Exception:  # raised by it, or a non-str result
        return f"<unrepresentable {type(value).__qualname__}>"


def _json_default(value: object) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (set, frozenset)):
        return list(value)
    return safe_repr(value)


_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def dump_json(value: object) -> str:
    """Serialise anything; values JSON cannot hold become their repr instead of raising."""
    try:
        return orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(_json_safe(value, depth=0), default=_json_default, option=_JSON_OPTIONS).decode()


def _json_safe(value: object, depth: int, path: frozenset[int] = frozenset()) -> object:
    """Slow path for what orjson refuses: deep nesting, huge ints, cycles, non-str keys."""
    if depth > 32:
        return "<nested too deeply>"
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in path:  # a cycle: without this, each level would double the output
            return "<cycle>"
        path = path | {id(value)}
        if isinstance(value, Mapping):
            return {_valid_unicode(str(k)): _json_safe(v, depth + 1, path) for k, v in value.items()}
        return [_json_safe(v, depth + 1, path) for v in value]
    if isinstance(value, str):
        return _valid_unicode(value)  # lone surrogates are escaped, not lost
    if isinstance(value, (bool, float)) or value is None:
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    return _json_default(value)


def dump_rows(rows: list[list[str]]) -> bytes:
    """A batch of entries as one JSON array; text that is not valid Unicode is escaped, not lost."""
    try:
        return orjson.dumps(rows)
    except orjson.JSONEncodeError:
        return orjson.dumps([[_valid_unicode(value) for value in row] for row in rows])


def _valid_unicode(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def load_json(text: str) -> Any:
    return orjson.loads(text) if text else {}


# ---------------------------------------------------------------------------
# reading entries: any writer may share a stream name, so nothing read is trusted

UNDECODABLE = "tracestream.undecodable"  # attribute naming what a reader could not decode
RAW_PREFIX = "tracestream.raw."  # attribute prefix keeping an undecodable field's text
READ_TEXT_LIMIT = 262_144  # characters a reader keeps of one field: a whole entry's limit when written
MAX_DEPTH = 64  # JSON nested deeper is undecodable: output encoders refuse 255 levels
_NS_MAX = 2**64 - 1  # OTLP times are unsigned 64-bit nanoseconds
_reader_log = logging.getLogger("tracestream.readers")
_warned = False


# What one entry's decoding found wrong: (field, reason, its raw text, or None to keep none)
_Problems = list[tuple[str, str, str | None]]


def _marked(stream_id: str, problems: _Problems, attributes: dict[str, Any]) -> dict[str, Any]:
    """`attributes` with the problems and raw fields added; the first such entry is logged."""
    global _warned
    reasons = "; ".join(f"{name} {reason}" for name, reason, _ in problems)
    if not _warned:
        _warned = True
        _reader_log.warning(
            "tracestream: entry %s is not a valid entry (%s); it and any later ones are shown "
            "marked with the attribute %s",
            stream_id,
            reasons,
            UNDECODABLE,
        )
    raw = {RAW_PREFIX + name: text[:READ_TEXT_LIMIT] for name, _, text in problems if text is not None}
    return {**attributes, UNDECODABLE: reasons, **raw}


def _int(fields: Mapping[str, str], name: str, problems: _Problems, high: int = _NS_MAX) -> int:
    text = fields.get(name, "")
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        problems.append((name, "is not an integer", text))
        return 0
    if 0 <= value <= high:
        return value
    problems.append((name, f"is outside 0 to {high}", text))
    return 0


def _within_limit(fields: Mapping[str, str], problems: _Problems) -> Mapping[str, str]:
    """`fields`, each value cut to `READ_TEXT_LIMIT` characters: one pass in C when none is longer."""
    if max(map(len, fields.values()), default=0) <= READ_TEXT_LIMIT:
        return fields
    problems += (
        (name, f"cut from {len(text)} to {READ_TEXT_LIMIT} characters", None)
        for name, text in fields.items()
        if len(text) > READ_TEXT_LIMIT
    )
    return {name: text[:READ_TEXT_LIMIT] for name, text in fields.items()}


def _json(fields: Mapping[str, str], name: str, problems: _Problems, kind: type) -> Any:
    """A JSON field's value when it is a `kind` nested at most `MAX_DEPTH` deep, else an empty one."""
    text = fields.get(name, "")
    if not text:
        return kind()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        problems.append((name, "is not JSON", text))
        return kind()
    if not isinstance(value, kind):
        problems.append((name, f"is not a JSON {'object' if kind is dict else 'list'}", text))
        return kind()
    # Only text with that many brackets can nest that deep: the walk is rare.
    if (
        len(text) > 2 * MAX_DEPTH
        and text.count("{") + text.count("[") > MAX_DEPTH
        and _depth(value) > MAX_DEPTH
    ):
        problems.append((name, f"is nested deeper than {MAX_DEPTH} levels", text))
        return kind()
    return value


def _resource(fields: Mapping[str, str], problems: _Problems) -> Any:
    """The resource's JSON; a reference no reader resolved (its hash expired) is kept, by name."""
    text = fields.get("resource", "")
    if text.startswith(RESOURCE_REFERENCE):
        return {UNRESOLVED_RESOURCE: text}
    return _json(fields, "resource", problems, dict)


def _depth(value: object) -> int:
    deepest, level = 0, [value]
    while level:
        deepest += 1
        level = [
            item
            for container in level
            if isinstance(container, (dict, list))
            for item in (container.values() if isinstance(container, dict) else container)
            if isinstance(item, (dict, list))
        ]
    return deepest


def _events(fields: Mapping[str, str], problems: _Problems) -> list[dict[str, Any]]:
    events = _json(fields, "events", problems, list)
    if all(isinstance(event, dict) for event in events):
        return cast(list[dict[str, Any]], events)
    problems.append(("events", "holds items that are not JSON objects", fields["events"]))
    return [event for event in events if isinstance(event, dict)]


def tolerant_text(value: object) -> Any:
    """A reply read without decoding, as a decoding client gives it; bytes that are not UTF-8
    (another writer's) become `\\xNN` escapes instead of failing the whole reply."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, (list, tuple)):
        return [tolerant_text(item) for item in value]
    if isinstance(value, dict):
        return {tolerant_text(key): tolerant_text(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class LogEntry:
    """One log record read back from the stream."""

    stream_id: str
    record_id: str
    timestamp_ns: int
    severity: str
    severity_number: int
    body: str
    service: str
    trace_id: str
    span_id: str
    trace_flags: int
    scope: str
    code: str
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    exception_type: str = ""
    exception_message: str = ""
    exception_stacktrace: str = ""
    schema_version: str = SCHEMA_VERSION

    @property
    def fingerprint(self) -> str:
        """The error issue this record belongs to, as the writer computed it."""
        return record_fingerprint(
            self.exception_type, self.exception_stacktrace, self.exception_message, self.body, self.attributes
        )

    @classmethod
    def from_fields(cls, stream_id: str, fields: Mapping[str, str]) -> LogEntry:
        """Never raises: a field no reader can use is left empty and named in the attribute
        `UNDECODABLE`, its text kept under `RAW_PREFIX` + its name (docs/stream-schema.md)."""
        problems: _Problems = []
        fields = _within_limit(fields, problems)
        get = fields.get
        attributes = _json(fields, "attributes", problems, dict)
        severity_number = _int(fields, "severity_number", problems, high=24)
        entry = cls(
            stream_id=stream_id,
            record_id=get("rid", ""),
            timestamp_ns=_int(fields, "ts", problems),
            severity=get("severity") or implied_severity_text(severity_number),
            severity_number=severity_number,
            body=get("body", ""),
            service=get("service", ""),
            trace_id=get("trace_id", ""),
            span_id=get("span_id", ""),
            trace_flags=_int(fields, "trace_flags", problems, high=255),
            scope=get("scope", ""),
            code=get("code", ""),
            attributes=attributes,
            resource=_resource(fields, problems),
            exception_type=get("exception_type", ""),
            exception_message=get("exception_message", ""),
            exception_stacktrace=get("exception_stacktrace", ""),
            schema_version=get("v", ""),
        )
        return entry if not problems else replace(entry, attributes=_marked(stream_id, problems, attributes))


@dataclass(frozen=True)
class SpanEntry:
    """One finished span read back from the stream."""

    stream_id: str
    record_id: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str
    service: str
    scope: str
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @classmethod
    def from_fields(cls, stream_id: str, fields: Mapping[str, str]) -> SpanEntry:
        """Never raises, and marks what it could not use, as `LogEntry.from_fields` does."""
        problems: _Problems = []
        fields = _within_limit(fields, problems)
        get = fields.get
        attributes = _json(fields, "attributes", problems, dict)
        entry = cls(
            stream_id=stream_id,
            record_id=get("rid", ""),
            trace_id=get("trace_id", ""),
            span_id=get("span_id", ""),
            parent_span_id=get("parent_span_id", ""),
            name=get("name", ""),
            kind=get("kind", ""),
            start_ns=_int(fields, "start_ts", problems),
            end_ns=_int(fields, "end_ts", problems),
            status=get("status", ""),
            status_message=get("status_message", ""),
            service=get("service", ""),
            scope=get("scope", ""),
            attributes=attributes,
            events=_events(fields, problems),
            resource=_resource(fields, problems),
            schema_version=get("v", ""),
        )
        return entry if not problems else replace(entry, attributes=_marked(stream_id, problems, attributes))


# The attributes an exception's three fields come from (OTel semantic conventions); the exporters'
# encoders (tracestream/exporters/encoding.py) and the OTLP forwarder both use them.
EXCEPTION_KEYS = ("exception.type", "exception.message", "exception.stacktrace")


# ---------------------------------------------------------------------------
# error issues: the append script groups ERROR+ records by fingerprint (docs/errors.md)

ERROR_SEVERITY = 17  # OTel severity number of ERROR: records from here up are errors
ISSUE_TTL_S = 30 * 86400  # an issue outlives its newest record by this long
# A task's records carry the route (or `beat:<schedule entry>`) that enqueued the task.
ENQUEUED_BY = "tracestream.enqueued_by"

TRACEBACK_HEADER = "Traceback (most recent call last):"
_FRAME = re.compile(r'^\s*File "([^"\n]*)", line \d+, in ([^\n]*)$', re.MULTILINE)
# Library, standard library, frozen or generated code, and tracestream's own frames are not the app's.
_NOT_OURS = re.compile(
    r"^<|[/\\](?:site|dist)-packages[/\\]|[/\\]lib[/\\]python\d[\d.]*[/\\]|[/\\]tracestream[/\\]",
    re.IGNORECASE,
)
_MESSAGE_MASKS = (
    (re.compile(r"'[^'\n]*'|\"[^\"\n]*\""), "<str>"),
    (re.compile(r"\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b", re.IGNORECASE), "<uuid>"),
    (re.compile(r"\b0x[0-9a-f]+\b|\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.IGNORECASE), "<hex>"),
    (re.compile(r"\d+"), "<n>"),
)
_MESSAGE_CHARS = 512  # of a message that fingerprints an error: the rest rarely tells two apart


def is_application_code(path: str) -> bool:
    """A frame's file is the application's: not the standard library's, an installed package's or ours."""
    return not _NOT_OURS.search(path)


def innermost_app_frame(stacktrace: str) -> str:
    """`dir/file.py:function` of the innermost frame of the application's code in the last
    traceback of `stacktrace` (a chained exception's own), or "" when it has none.

    Paths are cut to their last two parts and line numbers left out, so the same error keeps
    its fingerprint across deployments and edits elsewhere in the file."""
    start = stacktrace.rfind(TRACEBACK_HEADER)
    frames = _FRAME.findall(stacktrace, max(start, 0))
    for path, function in reversed(frames):
        if is_application_code(path):
            parts = re.split(r"[/\\]", path)
            return f"{'/'.join(parts[-2:])}:{function.strip()}"
    return ""


def exception_group_signature(stacktrace: str) -> tuple[str, bool]:
    """`Type@frame[member; ...]` of the exception group that ends `stacktrace` (a member that is
    a group nests its own), and whether any of those frames is the application's; ("", False)
    when the last exception is no group. Members are told apart by their type and innermost
    frame of the app's, in no order, each once: a group of three timeouts is a group of one."""
    if _GROUP_MEMBER_MARK not in stacktrace:
        return "", False
    signature = _signature(stacktrace.splitlines(), margin="", depth=1)
    return (signature, _LOCATED.search(signature) is not None) if "[" in signature else ("", False)


# How traceback prints a group: its own lines behind `|` at two spaces a level of nesting, each
# member after a `+-+---- 1 ----` or `  +---- 2 ----` rule at the group's indent.
_GROUP_MEMBER_MARK = "+-+----------------"
_MEMBER_RULE = re.compile(r"(?:\+-|  )\+-{16} (?:\d+|\.\.\.) -{16}$")
_CHAINED = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)
_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(?=:|$)")
_LOCATED = re.compile(r"@[^\[\];]")
_MAX_GROUP_DEPTH = 12  # past traceback's own limit of 10


def _signature(lines: list[str], margin: str, depth: int) -> str:
    """The signature of the last exception of the chain in `lines`, each of whose own lines
    starts with `margin`; a group among them prints its own lines at `depth`."""
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if line.startswith(margin) and line[len(margin) :] in _CHAINED:
            lines = lines[index + 1 :]
            break
    indent = "  " * depth
    rules = [
        i for i, line in enumerate(lines) if line.startswith(indent) and _MEMBER_RULE.match(line, len(indent))
    ]
    if not rules or depth > _MAX_GROUP_DEPTH:
        text = "\n".join(line[len(margin) :] for line in lines if line.startswith(margin))
        return f"{_exception_type(text)}@{innermost_app_frame(text)}"
    own = "\n".join(line[len(indent) + 2 :] for line in lines[: rules[0]])
    member_margin = f"{indent}  | "
    members = {
        _signature(lines[start + 1 : end], member_margin, depth + 1)
        for start, end in zip(rules, [*rules[1:], len(lines)], strict=True)
    }
    return f"{_exception_type(own)}@{innermost_app_frame(own)}[{'; '.join(sorted(members))}]"


def _exception_type(text: str) -> str:
    """The type on an exception's own line: the first line of a traceback at its left margin."""
    for line in text.splitlines():
        found = _EXCEPTION_LINE.match(line)
        if found:
            return found.group()
    return ""


def rooted_route(route: str | None) -> str | None:
    """A route as every framework but Django writes it, from `/`: Django's lack the leading
    slash (`orders/<int:order_id>/`), in its resolver and in contrib's `http.route` alike, so
    records and the trace list name it this one way. A regular expression's (`re_path`, DRF's
    routers) stays one, its `^` anchor first: `^/users/(?P<pk>[^/.]+)/$`."""
    if route is None or route.startswith(("/", "^/")):
        return route
    if route.startswith("^"):
        return f"^/{route[1:]}"
    return f"/{route}"


def normalized_message(message: str) -> str:
    """The message with what varies between occurrences masked: quoted values, uuids, hex ids, numbers."""
    text = " ".join(message[:_MESSAGE_CHARS].split())
    for pattern, mask in _MESSAGE_MASKS:
        text = pattern.sub(mask, text)
    return text


def fingerprint_of(exception_type: str, stacktrace: str, message: str) -> str:
    """What groups error records into one issue: the exception type and the innermost frame of
    the application's code, else the type and the normalized message. An exception group's
    frames sit behind `|` margins, and every `TaskGroup` failure has the same message: a group
    is told by its own frame and each member's type and frame instead. 16 hex digits."""
    group, located = exception_group_signature(stacktrace)
    if group:
        where = f"group {group}" if located else f"group {group} message {normalized_message(message)}"
    else:
        frame = innermost_app_frame(stacktrace)
        where = f"frame {frame}" if frame else f"message {normalized_message(message)}"
    return hashlib.sha1(f"{exception_type}\n{where}".encode("utf-8", "backslashreplace")).hexdigest()[:16]


def record_fingerprint(
    exception_type: str, stacktrace: str, exception_message: str, body: str, attributes: Mapping[str, Any]
) -> str:
    """An error record's issue: its exception's message, or for a record with none its body. A
    request's record with none (a 5xx the app answered without raising) names its route rather
    than its path: one issue a route, not one a username or slug in the URL."""
    return fingerprint_of(
        exception_type, stacktrace, exception_message or _request_by_route(attributes) or body
    )


# The `event.name` of a request's record: the writer sets it, the fingerprint reads it.
REQUEST_EVENT = "http.server.request"


def _request_by_route(attributes: Mapping[str, Any]) -> str:
    route = attributes.get("http.route")
    if attributes.get("event.name") != REQUEST_EVENT or not isinstance(route, str) or not route:
        return ""
    method, status = (
        attributes.get("http.request.method", ""),
        attributes.get("http.response.status_code", ""),
    )
    return f"{method} {route} {status}"
