"""One record by its stream id, for the record view and an error issue's newest record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from redis.exceptions import ResponseError

from tracestream.connection import Client
from tracestream.query.replies import tolerant_call
from tracestream.query.resources import resolve_resources
from tracestream.query.stream_ids import parse_stream_id
from tracestream.redis_errors import is_wrong_type
from tracestream.schema import LogEntry
from tracestream.shards import shards

__all__ = ["record_at"]


def record_at(
    client: Client, stream: str, stream_id: str, accept: Callable[[LogEntry], bool] = lambda _: True
) -> LogEntry | None:
    """The record stored under `stream_id`: from the log stream, else from its copy in
    `<stream>:errors` (kept apart from the stream's trimming); None once both have let it go.

    On a cluster each shard numbers its own stream, so two shards may hold the same id: the first
    record `accept` takes is returned. `QueryError` for a malformed id."""
    ms, seq = parse_stream_id(stream_id)
    exact = f"{ms}-{seq}"
    for shard in shards(client, stream):
        for key in (shard.keys.logs, shard.keys.errors):
            try:
                found = cast(list[Any], tolerant_call(shard.client, "XRANGE", key, exact, exact) or [])
            except ResponseError as error:
                if not is_wrong_type(error):  # a refused read is not a record let go
                    raise
                continue  # another writer's key of another type
            resolve_resources(shard.client, shard.keys, (fields for _, fields in found))
            for entry_id, fields in found:
                entry = LogEntry.from_fields(entry_id, fields)
                if accept(entry):
                    return entry
    return None
