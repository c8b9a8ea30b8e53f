"""Size limits on encoded rows, applied on the export worker before anything leaves the process.

A 10 MB message or an attribute dict with a million keys must not become a 10 MB stream
entry: text fields are cut to `max_body_length`, attribute values to `max_attribute_length`
and containers to `max_attributes` items, each cut leaving a visible marker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tracestream import schema
from tracestream.otel_setup.settings import Settings

DROPPED_ATTRIBUTES = "tracestream.dropped_attributes"
_TEXT_FIELDS = frozenset({"body", "exception_message", "exception_stacktrace", "name", "status_message"})
_JSON_FIELDS = frozenset({"attributes", "events"})
_MAX_DEPTH = 32


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated {len(text) - limit} chars]"


class RowShaper:
    """Applies the limits (and, given one, a text/attribute filter) to rows of one schema."""

    def __init__(
        self,
        field_names: tuple[str, ...],
        settings: Settings,
        text_filter: Callable[[str], str] | None = None,
        attribute_filter: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self._text_positions = [i for i, name in enumerate(field_names) if name in _TEXT_FIELDS]
        self._json_positions = [i for i, name in enumerate(field_names) if name in _JSON_FIELDS]
        self._text_limit = settings.max_body_length
        self._value_limit = settings.max_attribute_length
        self._max_items = settings.max_attributes
        self._text_filter = text_filter
        self._attribute_filter = attribute_filter

    def shape(self, row: list[str]) -> list[str]:
        for position in self._text_positions:
            row[position] = self._text(row[position])
        for position in self._json_positions:
            value = row[position]
            if len(value) > 2:  # "{}" and "[]" need nothing
                row[position] = schema.dump_json(self._json(schema.load_json(value), 0))
        return row

    def _text(self, text: str) -> str:
        if not text:
            return text
        text_filter = self._text_filter
        if text_filter is not None:
            # Filter a little past the limit, so a secret straddling the cut is still recognised.
            text = text_filter(text[: self._text_limit + 4096])
        return truncate(text, self._text_limit)

    def _json(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return truncate(value, self._value_limit)
        if depth > _MAX_DEPTH:
            return "…[nested too deeply]"
        if isinstance(value, dict):
            if self._attribute_filter is not None:
                value = self._attribute_filter(value)
            items = list(value.items())
            limited = {key: self._json(item, depth + 1) for key, item in items[: self._max_items]}
            if len(items) > self._max_items:
                limited[DROPPED_ATTRIBUTES] = len(items) - self._max_items
            return limited
        if isinstance(value, list):
            kept = [self._json(item, depth + 1) for item in value[: self._max_items]]
            if len(value) > self._max_items:
                kept.append(f"…[truncated {len(value) - self._max_items} items]")
            return kept
        return value
