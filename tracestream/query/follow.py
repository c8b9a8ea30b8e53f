"""Live follow: new records as they are written, resuming exactly where a reconnect left off."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from tracestream.connection import CLUSTER_CHANGES, Client, refresh_topology
from tracestream.query.filters import Query
from tracestream.query.replies import tolerant_call
from tracestream.query.resources import resolve_resources
from tracestream.query.stream_ids import StreamId, parse_stream_id
from tracestream.schema import (
    LogEntry,
)
from tracestream.shards import POLL_INTERVAL, SHARD_REFRESH_S, Shard, shards


def last_id(client: redis.Redis, stream: str) -> str:
    """The newest entry's id, or `0-0` for an empty stream: a concrete place to follow from."""
    newest = cast(list[Any], tolerant_call(client, "XREVRANGE", stream, "+", "-", "COUNT", 1))
    return str(newest[0][0]) if newest else "0-0"


class RecentIds:
    """Record ids seen lately, bounded: retries land close to their original."""

    def __init__(self, size: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, record_id: str) -> bool:
        """False when already seen."""
        if not record_id:
            return True
        if record_id in self._ids:
            return False
        self._ids[record_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


@dataclass
class Follow:
    """Where a follow stands: the newest entry read per shard, so a restart resumes exactly there."""

    positions: dict[str, str]
    reconnects: int = 0
    _recent: RecentIds = field(default_factory=RecentIds)

    @classmethod
    def at_end(cls, client: Client, stream: str) -> Follow:
        """From the newest entry of every shard now."""
        return cls({shard.name: last_id(shard.client, shard.name) for shard in shards(client, stream)})

    def skip(self, entries: Iterable[LogEntry]) -> None:
        """Records already shown (a backlog read after `at_end`): not yielded again."""
        for entry in entries:
            self._recent.add(entry.record_id)


def follow(
    client: Client,
    stream: str,
    query: Query,
    state: Follow,
    *,
    block_ms: int = 1000,
    on_disconnect: Callable[[Exception], None] | None = None,
    retry_delay: float = 0.5,
) -> Iterator[LogEntry | None]:
    """New matching records as they arrive; None after each idle `block_ms`, so callers can stop.

    On a lost connection `on_disconnect` hears why and reading resumes from `state.positions`
    once Redis is back: no gap and no duplicate. Without `on_disconnect` the error is raised.
    The client's socket timeout must be longer than `block_ms`. One shard is read with a
    blocking XREAD; several (a cluster) are polled, and their news merged by stream id. The
    shard list is read again every `SHARD_REFRESH_S` seconds.
    """
    idle_since = time.monotonic()
    found: list[Shard] = []
    found_at = float("-inf")
    while True:
        try:
            if time.monotonic() - found_at >= SHARD_REFRESH_S:
                found, found_at = shards(client, stream), time.monotonic()
            block = block_ms if len(found) == 1 else None
            news: list[tuple[StreamId, str, str, dict[str, str]]] = []
            for shard in found:
                position = state.positions.setdefault(shard.name, "0-0")  # a new shard: all of it is new
                wait = ("BLOCK", block) if block is not None else ()
                reply = cast(
                    list[Any],
                    tolerant_call(
                        shard.client, "XREAD", "COUNT", 1000, *wait, "STREAMS", shard.name, position
                    ),
                )
                for _key, entries in reply or ():
                    resolve_resources(shard.client, shard.keys, (fields for _, fields in entries))
                    news += [(parse_stream_id(i), shard.name, i, fields) for i, fields in entries]
        except (redis.ConnectionError, redis.TimeoutError, *CLUSTER_CHANGES) as error:
            if on_disconnect is None:
                raise
            refresh_topology(client)
            found_at = float("-inf")  # the shards' servers may have changed
            on_disconnect(error)
            state.reconnects += 1
            time.sleep(retry_delay)
            continue
        if not news:
            if block is not None or time.monotonic() - idle_since >= block_ms / 1000:
                idle_since = time.monotonic()
                yield None
            else:
                time.sleep(POLL_INTERVAL)
            continue
        idle_since = time.monotonic()
        for _, name, stream_id, fields in sorted(news):
            state.positions[name] = stream_id
            entry = LogEntry.from_fields(stream_id, fields)
            if state._recent.add(entry.record_id) and query.matches(entry):
                yield entry
