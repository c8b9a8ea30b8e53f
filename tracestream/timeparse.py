"""Time expressions for queries: absolute ISO 8601 or relative to now (`15m`, `2h`, `3d`).

An ISO time without an offset is UTC, as every reader prints its times: a time copied from the
output means what it meant there."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from tracestream.settings import parse_duration


def parse_time_ms(text: str, now_ms: int | None = None) -> int:
    """Milliseconds since the epoch; a duration with its unit means that long ago. Naive times are UTC.

    A time before the epoch (`0001-01-01`, `99999999d`) is the epoch: stream ids start there."""
    value = text.strip()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if value.replace(".", "", 1).isdigit():  # `20261207` looks like a date and reads as seconds
        raise ValueError(
            f"bad time {text!r}: a duration ago needs its unit ({value}s, {value}m), a date its dashes "
            "(2024-05-01)"
        )
    try:
        ago_ms = parse_duration(value) * 1000
    except ValueError:
        pass
    else:
        return now - int(ago_ms) if ago_ms < now else 0
    moment = _iso_time(value)
    if moment is None:
        raise ValueError(
            f"bad time {text!r}: expected ISO 8601 (2024-05-01T12:00:00Z) or a duration ago (15m, 2h, 3d)"
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0, int(moment.timestamp() * 1000))


def without_offset(text: str) -> bool:
    """`text` is an ISO time that names no offset, so it was read as UTC (a duration is not)."""
    moment = _iso_time(text.strip())
    return moment is not None and moment.tzinfo is None


def _iso_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


def local_offset(milliseconds: int) -> str:
    """This machine's offset from UTC at that moment (`+05:30`, `-03:30`), or "" where it is UTC."""
    offset = datetime.fromtimestamp(milliseconds / 1000, timezone.utc).astimezone().utcoffset()
    if not offset:
        return ""
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{'-' if offset < timedelta(0) else '+'}{minutes // 60:02d}:{minutes % 60:02d}"


def iso_utc(nanoseconds: int) -> str:
    """`2024-05-01T12:00:00.123456Z`: what every reader shows."""
    seconds, rest = divmod(nanoseconds, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"
