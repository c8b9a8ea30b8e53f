"""Time expressions for queries: absolute ISO 8601 or relative to now (`15m`, `2h`, `3d`)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

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
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"bad time {text!r}: expected ISO 8601 (2024-05-01T12:00:00Z) or a duration ago (15m, 2h, 3d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0, int(moment.timestamp() * 1000))


def iso_utc(nanoseconds: int) -> str:
    """`2024-05-01T12:00:00.123456Z`: what every reader shows."""
    seconds, rest = divmod(nanoseconds, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"
