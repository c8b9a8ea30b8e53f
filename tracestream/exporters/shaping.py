"""Secret scrubbing and size limits on encoded rows, on the export worker, before anything
leaves the process (to Redis or to the spool).

Secrets are scrubbed first, so a cut can never leave half a secret unrecognised. The
resource (which `OTEL_RESOURCE_ATTRIBUTES` can fill with anything, `db.password` included)
gets the same treatment as attributes, once per resource rather than once per row. Then a
10 MB message or an attribute dict with a million keys is kept from becoming a 10 MB
entry: text fields are cut to `max_body_length`, attribute values and keys to
`max_attribute_length` and containers to `max_attributes` items, each cut leaving a visible
marker. Those limits apply per value, and nesting multiplies them (128 lists of 128 strings
of 4096 characters), so last the whole entry is held to `MAX_ENTRY_BYTES`: its largest
fields are cut first (the body or span name last), and `tracestream.entry_truncated` says
which were cut and from what size. A time no reader can hold (before 1970, past 63 bits)
becomes the export time, and `tracestream.timestamp_replaced` keeps what it was.
"""

from __future__ import annotations

from collections.abc import Callable
from time import time_ns
from typing import Any

from tracestream import schema
from tracestream.scrubbing import scrubber_for
from tracestream.settings import Settings

DROPPED_ATTRIBUTES = "tracestream.dropped_attributes"
ENTRY_TRUNCATED = "tracestream.entry_truncated"
TIMESTAMP_REPLACED = "tracestream.timestamp_replaced"
# The values of one entry, in UTF-8 bytes: room for every text field at its default limit.
MAX_ENTRY_BYTES = Settings.max_entry_bytes  # the default
# Kept free when an entry is cut: each cut field keeps at least _MIN_CUT bytes (room for its
# own marker), and `tracestream.entry_truncated` is added afterwards.
_MARK_ROOM = 1024
_MIN_CUT = 64
# What a cut's marker takes: `…[truncated 12345 items]`, or a dropped-attributes count.
_MARKER_BYTES = 48
# A lone surrogate is stored as a six-byte escape; any other character takes at most four.
_MAX_BYTES_PER_CHAR = 6
# What the record is about: cut only when every other field was not enough.
_CUT_LAST = frozenset({"body", "name"})
_TEXT_FIELDS = frozenset({"body", "exception_message", "exception_stacktrace", "name", "status_message"})
_CUT_IN_THE_MIDDLE = frozenset({"exception_stacktrace"})
_STACK_TRACE_ATTRIBUTE = "exception.stacktrace"  # a span's exception event holds one, cut alike
_JSON_FIELDS = frozenset({"attributes", "events"})
_TIME_FIELDS = frozenset({"ts", "observed_ts", "start_ts", "end_ts"})
_MAX_TIME_TEXT = str(2**63 - 1)  # what every reader and OTLP's fixed64 can hold, and far past 2200
_MAX_TIME_DIGITS = len(_MAX_TIME_TEXT)
_MAX_DEPTH = 32
_FILTER_MARGIN = 4096


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated {len(text) - limit} chars]"


def truncate_middle(text: str, limit: int) -> str:
    """A stack trace cut to about `limit` characters: it ends in the exception raised and its
    innermost frames, and begins where the work began, so the middle goes (`RecursionError`'s
    repeats, a long chain's earlier causes)."""
    if len(text) <= limit:
        return text
    return _start_and_end(text, text[: limit // 4], text[limit // 4 - limit :])


def _start_and_end(text: str, start: str, end: str) -> str:
    """`start` and `end` of `text` whole lines, where they hold a line break, and what went between."""
    start = start[: start.rfind("\n") + 1] or start
    end = end[end.find("\n") + 1 :] or end
    return f"{start}…[truncated {len(text) - len(start) - len(end)} chars]…\n{end}"


def utf8_size(text: str) -> int:
    """Bytes as Redis stores the text: a lone surrogate is escaped (`schema.dump_rows`)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "backslashreplace"))


def truncate_bytes(text: str, limit: int) -> str:
    """`text` cut so that it and its marker take at most `limit` bytes as Redis stores them."""
    encoded = text.encode("utf-8", "backslashreplace")
    if len(encoded) <= limit:
        return text
    kept = encoded[: max(0, limit - 40)].decode("utf-8", "ignore")  # the marker takes under 40
    return f"{kept}…[truncated {len(text) - len(kept)} chars]"


def _impossible_time(value: str) -> bool:
    """Not a count of nanoseconds since 1970 that fits 63 bits; "" (unset) is fine. Digit strings
    of one length compare as their numbers do, so no int is made."""
    if not value:
        return False
    size = len(value)
    return (
        not value.isdigit()
        or size > _MAX_TIME_DIGITS
        or (size == _MAX_TIME_DIGITS and value > _MAX_TIME_TEXT)
    )


class RowShaper:
    """Scrubs and limits rows of one schema (LOG_FIELDS or SPAN_FIELDS)."""

    def __init__(self, field_names: tuple[str, ...], settings: Settings) -> None:
        self._text_positions = [i for i, name in enumerate(field_names) if name in _TEXT_FIELDS]
        self._middle_positions = {i for i, name in enumerate(field_names) if name in _CUT_IN_THE_MIDDLE}
        self._json_positions = [i for i, name in enumerate(field_names) if name in _JSON_FIELDS]
        self._time_positions = [i for i, name in enumerate(field_names) if name in _TIME_FIELDS]
        self._text_limit = settings.max_body_length
        self._value_limit = settings.max_attribute_length
        self._max_items = settings.max_attributes
        self._entry_limit = settings.max_entry_bytes
        self._field_names = field_names
        self._attributes_position = field_names.index("attributes")
        self._cuttable = self._text_positions + self._json_positions
        self._resource_position = field_names.index("resource")
        # (as encoded, as shaped): every row of a process carries the same resource string.
        self._resource = ("", "")
        scrubber = scrubber_for(settings)
        self._texts_filter: Callable[[list[str]], list[str]] | None = None
        self._value_filter: Callable[[str, object], object] | None = None
        self._passes: Callable[[dict[str, Any], int], bool] = _flat_and_short
        if scrubber is not None:
            # Texts of a whole batch are screened together (`Scrubber.scrub_texts`).
            self._texts_filter = scrubber.scrub_texts
            # Attribute maps, event lists and resources are scrubbed whole: key-aware, nested too.
            self._value_filter = scrubber.scrub_value
            self._passes = scrubber.passes

    def shape_rows(self, rows: list[list[str]]) -> list[list[str]]:
        self._texts(rows)
        times = self._time_positions
        for row in rows:
            for position in times:
                if _impossible_time(row[position]):
                    self._replace_times(row)
                    break
            for position in self._json_positions:
                row[position] = self._json_text(row[position])
            resource = row[self._resource_position]
            if resource != self._resource[0]:
                self._resource = (resource, self._json_text(resource))
            row[self._resource_position] = self._resource[1]
            if len("".join(row)) * _MAX_BYTES_PER_CHAR > self._entry_limit:  # may be over
                self._fit(row)
        return rows

    def _replace_times(self, row: list[str]) -> None:
        """A time before 1970 or past what 64 bits hold (start_time=-1, a timestamp 1000x too
        large) becomes the export time, and the attributes keep what it was."""
        now = str(time_ns())
        replaced = []
        for position in self._time_positions:
            value = row[position]
            if _impossible_time(value):
                replaced.append(f"{self._field_names[position]}={value[:40]}")
                row[position] = now
        self._note(row, TIMESTAMP_REPLACED, ", ".join(replaced))

    def _note(self, row: list[str], key: str, text: str) -> None:
        position = self._attributes_position
        attributes = schema.load_json(row[position])
        if not isinstance(attributes, dict):
            attributes = {}
        attributes[key] = text
        row[position] = schema.dump_json(attributes)

    def _fit(self, row: list[str]) -> None:
        """Cut the largest text and JSON fields, the body last, until the values fit the limit."""
        sizes = [utf8_size(value) for value in row]
        total = sum(sizes)
        if total <= self._entry_limit:
            return
        target = self._entry_limit - _MARK_ROOM
        cut = []
        for position in sorted(self._cuttable, key=lambda p: (self._field_names[p] in _CUT_LAST, -sizes[p])):
            if total <= target:
                break
            room = max(_MIN_CUT, sizes[position] - (total - target))
            value = row[position]
            if position in self._json_positions:
                row[position] = self._json_within(value, room)
            else:
                row[position] = truncate_bytes(value, room)
            total += utf8_size(row[position]) - sizes[position]
            cut.append(self._field_names[position])
        note = f"{', '.join(cut)}: {sum(sizes)} bytes cut to the {self._entry_limit}-byte entry limit"
        self._note(row, ENTRY_TRUNCATED, note)

    def _json_within(self, text: str, room: int) -> str:
        """A JSON field cut to `room` bytes: containers keep their first items, and say how many went."""
        value = schema.load_json(text)
        budget = room
        for _ in range(3):  # escapes take more than the budget counts: try again with less
            cut = schema.dump_json(_within(value, _Budget(budget)))
            over = utf8_size(cut) - room
            if over <= 0:
                return cut
            budget -= over + _MARKER_BYTES
        return "[]" if isinstance(value, list) else "{}"

    def _json_text(self, value: str) -> str:
        """A JSON field scrubbed (key-aware, nested values included) and limited."""
        if len(value) <= 2:  # "{}" and "[]" need nothing
            return value
        loaded = schema.load_json(value)
        if (
            type(loaded) is dict
            and len(loaded) <= self._max_items
            and self._passes(loaded, self._value_limit)
        ):
            return value  # what scrubbing and the limits would leave as it is
        if self._value_filter is not None:
            loaded = self._value_filter("", loaded)
        return schema.dump_json(self._json(loaded, 0))

    def _texts(self, rows: list[list[str]]) -> None:
        """Every text field of the batch, scrubbed in one call, then cut to the limit."""
        places = [(row, position) for row in rows for position in self._text_positions if row[position]]
        if not places:
            return
        limit = self._text_limit
        texts = [row[position] for row, position in places]
        middles = [position in self._middle_positions for _, position in places]
        texts_filter = self._texts_filter
        if texts_filter is None:
            shaped = [
                truncate_middle(text, limit) if middle else truncate(text, limit)
                for text, middle in zip(texts, middles, strict=True)
            ]
        else:
            shaped = self._scrubbed_and_cut(texts, middles, texts_filter)
        for (row, position), text in zip(places, shaped, strict=True):
            row[position] = text

    def _scrubbed_and_cut(
        self, texts: list[str], middles: list[bool], texts_filter: Callable[[list[str]], list[str]]
    ) -> list[str]:
        """A long text is scrubbed a little past each cut, so a secret straddling one is still
        recognised: its start, and a stack trace's end as well."""
        limit = self._text_limit
        window, start, end = limit + _FILTER_MARGIN, limit // 4, limit - limit // 4
        pieces: list[str] = []
        for text, middle in zip(texts, middles, strict=True):
            if len(text) <= window:
                pieces.append(text)
            elif middle:
                pieces += [text[: start + _FILTER_MARGIN], text[-(end + _FILTER_MARGIN) :]]
            else:
                pieces.append(text[:window])
        filtered = iter(texts_filter(pieces))
        shaped = []
        for text, middle in zip(texts, middles, strict=True):
            kept = next(filtered)
            if len(text) <= window:
                shaped.append(truncate_middle(kept, limit) if middle else truncate(kept, limit))
            elif middle:
                shaped.append(_start_and_end(text, kept[:start], next(filtered)[-end:]))
            else:
                shaped.append(f"{kept[:limit]}…[truncated {len(text) - limit} chars]")
        return shaped

    def _json(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return truncate(value, self._value_limit)
        if depth > _MAX_DEPTH:
            return "…[nested too deeply]"
        if isinstance(value, dict):
            if len(value) > self._max_items:
                items = list(value.items())
                limited = {
                    truncate(key, self._value_limit): self._json(item, depth + 1)
                    for key, item in items[: self._max_items]
                }
                limited[DROPPED_ATTRIBUTES] = len(items) - self._max_items
                return limited
            return self._json_dict(value, depth + 1)
        if isinstance(value, list):
            kept = [self._json(item, depth + 1) for item in value[: self._max_items]]
            if len(value) > self._max_items:
                kept.append(f"…[truncated {len(value) - self._max_items} items]")
            return kept
        return value

    def _json_dict(self, value: dict[str, Any], depth: int) -> dict[str, Any]:
        """Short texts and numbers, the usual attribute values, pass without a call each."""
        limit = self._value_limit
        shallow = depth <= _MAX_DEPTH
        limited = {}
        for key, item in value.items():
            if len(key) > limit:
                key = truncate(key, limit)
            kind = type(item)
            short_text = kind is str and len(item) <= limit
            if shallow and (short_text or kind is int or kind is float or kind is bool):
                limited[key] = item
            elif kind is str and key == _STACK_TRACE_ATTRIBUTE:
                limited[key] = truncate_middle(item, limit)
            else:
                limited[key] = self._json(item, depth)
        return limited


def _flat_and_short(mapping: dict[str, Any], longest: int) -> bool:
    """Without scrubbing: no key or text longer than `longest`, and no nested value (the limits
    leave such a map as it is)."""
    for key, value in mapping.items():
        kind = type(value)
        if not (kind is int or kind is float or kind is bool or (kind is str and len(value) <= longest)):
            return False
        if len(key) > longest:
            return False
    return True


class _Budget:
    """UTF-8 bytes left for a JSON value being cut to size."""

    def __init__(self, size: int) -> None:
        self.left = size

    def take(self, cost: int) -> bool:
        if cost > self.left:
            self.left = 0
            return False
        self.left -= cost
        return True


def _within(value: Any, budget: _Budget) -> Any:
    """`value` with its containers' first items, while `budget` lasts; the rest is counted in a marker."""
    if isinstance(value, str):
        room = budget.left
        if budget.take(utf8_size(value) + 3):  # quotes and a separator
            return value
        return truncate_bytes(value, room - 3)
    if isinstance(value, dict):
        return _dict_within(value, budget)
    if isinstance(value, list):
        return _list_within(value, budget)
    return value if budget.take(len(schema.dump_json(value)) + 1) else None


def _dict_within(value: dict[str, Any], budget: _Budget) -> dict[str, Any]:
    budget.left -= _MARKER_BYTES  # room for the count of dropped items, should it be needed
    kept: dict[str, Any] = {}
    for index, (key, item) in enumerate(value.items()):
        if not budget.take(utf8_size(key) + 4 + _MARKER_BYTES):
            kept[DROPPED_ATTRIBUTES] = _dropped(value, index)
            return kept
        budget.left += _MARKER_BYTES  # only a cut string needs that much room
        kept[key] = _within(item, budget)
    budget.left += _MARKER_BYTES
    return kept


def _list_within(value: list[Any], budget: _Budget) -> list[Any]:
    budget.left -= _MARKER_BYTES
    kept = []
    for index, item in enumerate(value):
        if budget.left < _MARKER_BYTES:
            kept.append(f"…[truncated {len(value) - index} items]")
            return kept
        kept.append(_within(item, budget))
    budget.left += _MARKER_BYTES
    return kept


def _dropped(value: dict[str, Any], kept: int) -> int:
    """Items of `value` after the first `kept`, and those an earlier cut counted in its last item."""
    earlier = value.get(DROPPED_ATTRIBUTES)
    if type(earlier) is not int:
        return len(value) - kept
    return len(value) - kept - 1 + earlier
