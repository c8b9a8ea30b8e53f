"""`extra=` values as they were when the record was logged.

The stdlib bridge serialises `extra=` values on the export worker, later, so a dict or list
the application changes after logging would be written as it is by then: the body says one
thing and the attributes another. On the application thread the cheap part is taken here:
each mutable container among the values (dict, list and their subclasses, set, bytearray)
is copied one level deep, at C speed, and this never raises. Strings, numbers, None, bytes,
tuples and frozensets need nothing.

Not covered, and serialised on the worker as they are by then: containers nested inside
those values (a list inside a dict), and any other object (serialised through its `repr`,
which may be slow or hostile, so it is not called on the application thread).
"""

from __future__ import annotations

from typing import Any

_AS_IS = frozenset({str, int, float, bool, type(None), bytes, tuple, frozenset})


def snapshot_values(extras: dict[str, Any]) -> dict[str, Any]:
    """`extras`, its mutable container values replaced by shallow copies (in place, and returned)."""
    for key, value in extras.items():
        if type(value) not in _AS_IS:
            extras[key] = _copy(value)
    return extras


def _copy(value: object) -> object:
    """The worker writes dicts and lists (subclasses too) as JSON, so a plain copy reads the
    same; sets and bytearrays by their `repr`, so only the plain types are copied. A subclass
    that overrides iteration is copied through it, and if that raises, kept as it is."""
    try:
        if isinstance(value, dict):
            return dict.copy(value)
        if isinstance(value, list):
            return list.copy(value)
    except Exception:
        return value
    if isinstance(value, (set, bytearray)) and type(value) in (set, bytearray):
        return value.copy()
    return value
