"""Records as a runner reads them, and the rules' filters compiled against them.

A runner reads tens of thousands of records a second, so a record is decoded only as far as the
rules look at it: its service, severity, text and time always, its attributes only when a filter
or a latency rule reads them, the whole entry only for the samples a notification carries. An
entry a reader would mark undecodable (docs/stream-schema.md) goes through the one decoder in
schema.py instead, so a filter decides exactly as `Query.matches` does on the decoded entry
(the resource aside: no rule reads it, so a bad one marks nothing here).
A matching record counts for its sample weight (docs/sampling.md), read as the summaries read it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from tracestream.alerts.histogram import bin_of
from tracestream.alerts.rules import DURATION_ATTRIBUTES, Rule
from tracestream.query import AttributeMatch, Query, parse_stream_id
from tracestream.schema import MAX_DEPTH, READ_TEXT_LIMIT, LogEntry, dump_json, implied_severity_text
from tracestream.settings import SAMPLE_WEIGHT
from tracestream.summary import sample_weight
from tracestream.timeparse import iso_utc

__all__ = ["MATCHED", "SAMPLED", "SAMPLES", "TOTAL", "Batch", "Filter", "Matcher", "Seen"]

MATCHED = "m"
TOTAL = "t"  # ratio rules: every record their filter lets through
# Records counted for a weight other than 1 among those a rule's value is made of (a ratio's: its
# totals), so a value says when it is an estimate.
SAMPLED = "s"
SAMPLES = 5
_BODY_LIMIT = 500
_NS_MAX = 2**64 - 1  # the largest time the schema's decoder takes
# No ratio sampler keeps fewer than 1 trace in 2**64 (the SDK compares 64 bits of the trace id), so
# a larger weight is no sampling weight: counted as 1, it cannot push a sum out of a float's range.
_MAX_WEIGHT = 2.0**64


class Seen:
    """One record as read: the fields every filter looks at, the rest decoded on demand."""

    __slots__ = (
        "_attributes",
        "_entry",
        "_fields",
        "_sample",
        "_weight",
        "at_ms",
        "body",
        "exception_message",
        "exception_type",
        "service",
        "severity",
        "severity_number",
        "stream_id",
        "timestamp_ns",
        "trace_id",
    )

    def __init__(self, stream_id: str, fields: Mapping[str, str]) -> None:
        self.stream_id = stream_id
        self._fields = fields
        self._attributes: dict[str, Any] | None = None
        self._entry: LogEntry | None = None
        self._sample: bytes | None = None
        self._weight: float | None = None
        get = fields.get
        try:  # the numbers as the schema's decoder reads them; anything it would mark goes to it
            timestamp_ns, number = int(get("ts") or 0), int(get("severity_number") or 0)
            usable = (
                0 <= timestamp_ns <= _NS_MAX
                and 0 <= number <= 24
                and 0 <= int(get("observed_ts") or 0) <= _NS_MAX
                and 0 <= int(get("trace_flags") or 0) <= 255
                and max(map(len, fields.values()), default=0) <= READ_TEXT_LIMIT
            )
        except ValueError:
            usable = False
        if usable:
            self.timestamp_ns, self.severity_number = timestamp_ns, number
            self.severity = get("severity") or implied_severity_text(number)
            self.service, self.body, self.trace_id = get("service", ""), get("body", ""), get("trace_id", "")
            self.exception_type = get("exception_type", "")
            self.exception_message = get("exception_message", "")
        else:  # something to mark or cut: the schema's decoder says what the record holds
            entry = self.entry()
            self.timestamp_ns, self.severity_number, self.severity = (
                entry.timestamp_ns,
                entry.severity_number,
                entry.severity,
            )
            self.service, self.body, self.trace_id = entry.service, entry.body, entry.trace_id
            self.exception_type, self.exception_message = entry.exception_type, entry.exception_message
            self._attributes = entry.attributes
        self.at_ms = self.timestamp_ns // 1_000_000 if self.timestamp_ns else parse_stream_id(stream_id)[0]

    @property
    def attributes(self) -> dict[str, Any]:
        if self._attributes is None:
            self._attributes = self._decoded_attributes()
        return self._attributes

    def _decoded_attributes(self) -> dict[str, Any]:
        text = self._fields.get("attributes", "")
        if not text:
            return {}
        if len(text) <= 2 * MAX_DEPTH or text.count("{") + text.count("[") <= MAX_DEPTH:
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                value = None
            if isinstance(value, dict):
                return value
        return self.entry().attributes  # not an object, or maybe too deep: marked as readers mark it

    @property
    def weight(self) -> float:
        """How many records this one stands for under trace sampling. Most records carry no weight,
        so their attributes are decoded only when their text names it."""
        if self._weight is None:
            if self._attributes is None and SAMPLE_WEIGHT not in self._fields.get("attributes", ""):
                self._weight = 1.0
            else:
                weight = sample_weight(self.attributes)
                self._weight = weight if weight <= _MAX_WEIGHT else 1.0
        return self._weight

    def entry(self) -> LogEntry:
        """The whole record, decoded as every reader decodes it."""
        if self._entry is None:
            self._entry = LogEntry.from_fields(self.stream_id, self._fields)
        return self._entry

    def sample(self) -> dict[str, Any]:
        """The record as a notification shows it."""
        return {
            "timestamp": iso_utc(self.timestamp_ns or self.at_ms * 1_000_000),
            "service": self.service,
            "severity": self.severity,
            "body": self.body[:_BODY_LIMIT],
            "trace_id": self.trace_id,
            "id": self.stream_id,
        }

    def sample_json(self) -> bytes:
        """`sample` as JSON, made once however many rules keep the record."""
        if self._sample is None:
            self._sample = orjson.dumps(self.sample())
        return self._sample

    def duration_ms(self) -> float | None:
        """A request's or task's duration, from the attribute its record carries it in."""
        attributes = self.attributes
        for key in DURATION_ATTRIBUTES:
            value = attributes.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
        return None


class Filter:
    """A `Query` as a check on a `Seen` record, cheapest tests first, the regex last."""

    def __init__(self, query: Query) -> None:
        self.services = frozenset(query.services)
        self._trace_id = query.trace_id
        self._min_severity = query.min_severity
        self._text = query.text
        self._attributes = query.attributes
        self._regex = query.regex
        # A pattern that matches empty text matches any record with an empty text field.
        self._regex_matches_empty = query.regex is not None and query.regex.search("") is not None
        # Text any match must hold: a record without it is refused without running the regex.
        self._regex_literal = "" if query.regex is None else leading_literal(query.regex.pattern)
        # Nothing to check beyond the service a record was indexed by (an absence rule's filter).
        self.only_services = query == Query(services=query.services)

    def passes(self, record: Seen) -> bool:
        if record.severity_number < self._min_severity:
            return False
        if self.services and record.service not in self.services:
            return False
        if self._trace_id and record.trace_id != self._trace_id:
            return False
        text = self._text
        if (
            text
            and text not in record.body
            and text not in record.exception_type
            and text not in record.exception_message
        ):
            return False
        for match in self._attributes:
            if not match.matches(record.attributes):
                return False
        regex = self._regex
        if regex is None:
            return True
        texts = (record.body, record.exception_type, record.exception_message)
        if self._regex_matches_empty and not all(texts):
            return True
        literal = self._regex_literal
        return any(regex.search(text) for text in texts if text and literal in text)

    @property
    def first_attribute(self) -> AttributeMatch | None:
        return self._attributes[0] if self._attributes else None


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-:/=,")


def leading_literal(pattern: str) -> str:
    """The plain text a pattern starts with, which every match then contains: `declined [0-9]+`
    gives `declined `. '' when unsure: any alternation, a flag, or nothing plain up front."""
    if "|" in pattern or pattern.startswith("(?"):
        return ""
    start = 1 if pattern.startswith("^") else 0
    end = start
    while end < len(pattern) and pattern[end] in _PLAIN:
        end += 1
    after = pattern[end : end + 2]
    if after[:1] not in ("", "[", ".", "$") and not (after[:1] == "(" and after != "(?"):
        end -= 1  # a quantifier may follow, or a flag group or an empty quote and then one: it may be absent
    return pattern[start:end] if end > start else ""


@dataclass
class Batch:
    """What a batch of records adds to the rules' state; each record counts for its weight."""

    # (rule, series, bucket) -> the records' weights summed (SAMPLED: how many were sampled down)
    counts: defaultdict[tuple[str, str, int], float] = field(default_factory=lambda: defaultdict(float))
    # A latency rule's durations: (rule, bucket) -> histogram bin -> weights (see histogram.py)
    latency: defaultdict[tuple[str, int], defaultdict[int, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    samples: defaultdict[str, deque[Seen]] = field(
        default_factory=lambda: defaultdict(lambda: deque(maxlen=SAMPLES))
    )  # newest last
    stream_ids: list[str] = field(default_factory=list)
    matched: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # per rule, weighted
    sampled: Counter[str] = field(default_factory=Counter)  # per rule: matches with a weight other than 1


_Checks = tuple[tuple[Filter, tuple[Rule, ...]], ...]


class _ServiceChecks:
    """The filters of the rules that can match one service's records. Filters that want an
    attribute value (a route, a task) are found by the record's value, so a record is checked
    against the one route filter it can pass, not against every route's."""

    def __init__(self, checks: Mapping[Filter, list[Rule]]) -> None:
        plain: list[tuple[Filter, tuple[Rule, ...]]] = []
        by_value: defaultdict[str, defaultdict[str, list[tuple[Filter, tuple[Rule, ...]]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for check, rules in checks.items():
            first = check.first_attribute
            if first is None:
                plain.append((check, tuple(rules)))
            else:
                by_value[first.key][first.value].append((check, tuple(rules)))
        self.plain: _Checks = tuple(plain)
        self.by_value = {
            key: {value: tuple(found) for value, found in values.items()} for key, values in by_value.items()
        }

    def candidates(self, record: Seen) -> list[tuple[Filter, tuple[Rule, ...]]]:
        found = list(self.plain)
        if self.by_value:
            attributes = record.attributes
            for key, values in self.by_value.items():
                if key in attributes:
                    value = attributes[key]
                    found += values.get(value if isinstance(value, str) else dump_json(value), ())
        return found


class Matcher:
    """Adds records to a `Batch`. Rules are indexed by service, so a record is checked against the
    rules that can match it, and each distinct filter is checked once per record."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        compiled: dict[Query, Filter] = {}
        by_service: defaultdict[str, dict[Filter, list[Rule]]] = defaultdict(dict)
        for rule in rules:
            if rule.kind == "new_issue":
                continue  # issues are counted by the writer
            if rule.filter not in compiled:
                compiled[rule.filter] = Filter(rule.filter)
            check = compiled[rule.filter]
            for service in rule.filter.services or ("",):
                by_service[service].setdefault(check, []).append(rule)
        any_service = by_service.pop("", {})
        self._any_service = _ServiceChecks(any_service) if any_service else None
        self._by_service = {service: _ServiceChecks(checks) for service, checks in by_service.items()}
        self._ratio_match = {rule.name: Filter(rule.match) for rule in rules if rule.match is not None}

    def add(self, record: Seen, batch: Batch, read_ms: int | None = None) -> None:
        """`read_ms`: when the record was read. A match rule counts it then, so a record read late
        (a lagging or restarted runner) still fires its rule; the windowed kinds use its timestamp."""
        batch.stream_ids.append(record.stream_id)
        service = self._by_service.get(record.service)
        if self._any_service is None:
            candidates = service.candidates(record) if service is not None else []
        else:
            candidates = self._any_service.candidates(record)
            if service is not None:
                candidates += service.candidates(record)
        for check, rules in candidates:
            if check.only_services or check.passes(record):
                for rule in rules:
                    self._count(rule, record, batch, read_ms)

    def _count(self, rule: Rule, record: Seen, batch: Batch, read_ms: int | None) -> None:
        at_ms = read_ms if rule.kind == "match" and read_ms is not None else record.at_ms
        bucket = at_ms // rule.bucket_ms
        weight = record.weight
        sampled_down = weight != 1.0
        if rule.kind == "ratio":
            batch.counts[(rule.name, TOTAL, bucket)] += weight
            if sampled_down:
                batch.counts[(rule.name, SAMPLED, bucket)] += 1
            if not self._ratio_match[rule.name].passes(record):
                return
        elif rule.kind == "latency":
            duration = record.duration_ms()
            if duration is None:
                return
            batch.latency[(rule.name, bucket)][bin_of(duration)] += weight
        batch.counts[(rule.name, MATCHED, bucket)] += weight
        batch.matched[rule.name] += weight
        if sampled_down:
            batch.sampled[rule.name] += 1
            if rule.kind != "ratio":
                batch.counts[(rule.name, SAMPLED, bucket)] += 1
        batch.samples[rule.name].append(record)
