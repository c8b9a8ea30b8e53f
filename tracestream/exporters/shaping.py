"""Secret scrubbing and size limits on encoded rows, on the export worker, before anything
leaves the process (to Redis or to the spool).

Secrets are scrubbed first, so a cut can never leave half a secret unrecognised. The
resource (which `OTEL_RESOURCE_ATTRIBUTES` can fill with anything, `db.password` included)
gets the same treatment as attributes, once per resource rather than once per row. Then a
10 MB message or an attribute dict with a million keys is kept from becoming a 10 MB
entry: text fields are cut to `max_body_length`, attribute values to `max_attribute_length`
and containers to `max_attributes` items, each cut leaving a visible marker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tracestream import schema
from tracestream.otel_setup.settings import Settings
from tracestream.scrubbing import Scrubber, ScrubRules

DROPPED_ATTRIBUTES = "tracestream.dropped_attributes"
_TEXT_FIELDS = frozenset({"body", "exception_message", "exception_stacktrace", "name", "status_message"})
_JSON_FIELDS = frozenset({"attributes", "events"})
_MAX_DEPTH = 32
_FILTER_MARGIN = 4096


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated {len(text) - limit} chars]"


def scrubber_for(settings: Settings) -> Scrubber | None:
    """The configured scrubber, or None when `TRACESTREAM_SCRUB=false`."""
    if not settings.scrub:
        return None
    rules = ScrubRules(
        extra_keys=settings.scrub_keys,
        extra_patterns=settings.scrub_patterns,
        allow_keys=settings.scrub_allow_keys,
        allow_values=settings.scrub_allow_values,
    )
    return Scrubber(rules)


class RowShaper:
    """Scrubs and limits rows of one schema (LOG_FIELDS or SPAN_FIELDS)."""

    def __init__(self, field_names: tuple[str, ...], settings: Settings) -> None:
        self._text_positions = [i for i, name in enumerate(field_names) if name in _TEXT_FIELDS]
        self._json_positions = [i for i, name in enumerate(field_names) if name in _JSON_FIELDS]
        self._text_limit = settings.max_body_length
        self._value_limit = settings.max_attribute_length
        self._max_items = settings.max_attributes
        self._resource_position = field_names.index("resource")
        # (as encoded, as shaped): every row of a process carries the same resource string.
        self._resource = ("", "")
        scrubber = scrubber_for(settings)
        self._texts_filter: Callable[[list[str]], list[str]] | None = None
        self._value_filter: Callable[[str, object], object] | None = None
        if scrubber is not None:
            # Texts of a whole batch are screened together (`Scrubber.scrub_texts`).
            self._texts_filter = scrubber.scrub_texts
            # Attribute maps, event lists and resources are scrubbed whole: key-aware, nested too.
            self._value_filter = scrubber.scrub_value

    def shape_rows(self, rows: list[list[str]]) -> list[list[str]]:
        self._texts(rows)
        for row in rows:
            for position in self._json_positions:
                row[position] = self._json_text(row[position])
            resource = row[self._resource_position]
            if resource != self._resource[0]:
                self._resource = (resource, self._json_text(resource))
            row[self._resource_position] = self._resource[1]
        return rows

    def _json_text(self, value: str) -> str:
        """A JSON field scrubbed (key-aware, nested values included) and limited."""
        if len(value) <= 2:  # "{}" and "[]" need nothing
            return value
        loaded = schema.load_json(value)
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
        texts_filter = self._texts_filter
        if texts_filter is None:
            shaped = [truncate(text, limit) for text in texts]
        else:
            # Filter a little past the limit, so a secret straddling the cut is still recognised.
            window = limit + _FILTER_MARGIN
            filtered = texts_filter([text[:window] if len(text) > window else text for text in texts])
            shaped = [
                truncate(kept, limit)
                if len(text) <= window
                else f"{kept[:limit]}…[truncated {len(text) - limit} chars]"
                for text, kept in zip(texts, filtered, strict=True)
            ]
        for (row, position), text in zip(places, shaped, strict=True):
            row[position] = text

    def _json(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return truncate(value, self._value_limit)
        if depth > _MAX_DEPTH:
            return "…[nested too deeply]"
        if isinstance(value, dict):
            if len(value) > self._max_items:
                items = list(value.items())
                limited = {key: self._json(item, depth + 1) for key, item in items[: self._max_items]}
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
            kind = type(item)
            short_text = kind is str and len(item) <= limit
            if shallow and (short_text or kind is int or kind is float or kind is bool):
                limited[key] = item
            else:
                limited[key] = self._json(item, depth)
        return limited
