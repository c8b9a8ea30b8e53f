"""Stream ids as numbers: exclusive bounds and positions that Redis of any version accepts."""

from __future__ import annotations

import re

from tracestream.query.query_error import QueryError

StreamId = tuple[int, int]
MAX_PART = 2**64 - 1  # the largest millisecond or sequence part of a stream id
_STREAM_ID = re.compile(r"([0-9]+)(?:-([0-9]+))?")


def parse_stream_id(text: str) -> StreamId:
    """`1700000000000-3` (or `1700000000000`) as a comparable tuple; each part fits 64 bits, as in Redis."""
    match = _STREAM_ID.fullmatch(text.strip())
    if match is None or max(int(part or 0) for part in match.groups()) > MAX_PART:
        raise QueryError(
            f"invalid stream id {text!r}: expected MILLISECONDS-SEQUENCE, each 0 to 2^64-1, "
            "e.g. 1700000000000-0"
        )
    return int(match[1]), int(match[2] or 0)


def before(stream_id: str) -> str:
    """The largest id smaller than `stream_id`: an exclusive upper bound on any Redis version."""
    ms, seq = parse_stream_id(stream_id)
    if seq:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{MAX_PART}" if ms else "0-0"


def after(stream_id: str) -> str | None:
    """The smallest id larger than `stream_id`; None after the largest id Redis can hold."""
    ms, seq = parse_stream_id(stream_id)
    if seq < MAX_PART:
        return f"{ms}-{seq + 1}"
    return f"{ms + 1}-0" if ms < MAX_PART else None
