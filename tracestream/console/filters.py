"""Server-side filters for the live tail, parsed from query parameters.

Viewers never receive records they filtered out, so a noisy service costs the
browser nothing. Matching is per record and per viewer, so it must stay cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tracestream.schema import LogEntry

# OTel severity numbers: each name is the lowest number of its range.
SEVERITY_FLOORS = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "WARNING": 13, "ERROR": 17, "FATAL": 21}


class FilterError(ValueError):
    """A filter parameter has a value the console cannot use."""


@dataclass(frozen=True)
class LiveFilter:
    """Every set field must match; an empty filter matches everything."""

    service: str = ""
    min_severity: int = 0
    text: str = ""
    trace_id: str = ""
    attribute_key: str = ""
    attribute_value: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> LiveFilter:
        severity = params.get("severity", "").strip().upper()
        if severity and severity not in SEVERITY_FLOORS:
            raise FilterError(
                f"severity={severity!r} is invalid: expected one of {', '.join(SEVERITY_FLOORS)}"
            )
        key, value = _attribute(params.get("attr", "").strip())
        return cls(
            service=params.get("service", "").strip(),
            min_severity=SEVERITY_FLOORS.get(severity, 0),
            text=params.get("text", "").strip().lower(),
            trace_id=params.get("trace_id", "").strip().lower(),
            attribute_key=key,
            attribute_value=value,
        )

    def matches(self, entry: LogEntry) -> bool:
        if self.service and entry.service != self.service:
            return False
        if entry.severity_number < self.min_severity:
            return False
        if self.trace_id and entry.trace_id != self.trace_id:
            return False
        if self.attribute_key:
            if self.attribute_key not in entry.attributes:
                return False
            if self.attribute_value is not None and str(entry.attributes[self.attribute_key]) != (
                self.attribute_value
            ):
                return False
        return not self.text or self.text in entry.body.lower()


def _attribute(text: str) -> tuple[str, str | None]:
    """`key=value` matches that value; a bare `key` matches any record carrying it."""
    if not text:
        return "", None
    key, sep, value = text.partition("=")
    if not key.strip():
        raise FilterError(f"attr={text!r} is invalid: expected key or key=value")
    return key.strip(), value.strip() if sep else None
