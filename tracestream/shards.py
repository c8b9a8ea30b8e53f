"""Every shard of a stream as readers see it: one on a single Redis, the registry's on a cluster.

Writers add each shard's log stream key to `<stream>:shards` (see `schema.Keyspace`);
readers run their single-Redis code once per shard, against the server holding it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import redis
from redis.cluster import RedisCluster

from tracestream.connection import Client, node_for
from tracestream.schema import Keyspace, StreamKeys

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """One shard's keys and the plain client of the server that holds them."""

    keys: StreamKeys
    client: redis.Redis

    @property
    def name(self) -> str:
        return self.keys.logs


def shards(client: Client, stream: str) -> list[Shard]:
    """The shards of `stream`, by name; on a cluster, those some writer has registered."""
    if not isinstance(client, RedisCluster):
        return [Shard(StreamKeys(stream), client)]
    registry = Keyspace(stream, cluster=True).registry
    names = sorted(_text(name) for name in node_for(client, registry).smembers(registry))
    return [Shard(StreamKeys(name), node_for(client, name)) for name in names]


def merge_newest_first(sources: Iterable[Iterator[T]], key: Callable[[T], tuple[object, ...]]) -> Iterator[T]:
    """Several newest-first sources as one, newest first by `key`; reads each only as far as needed."""
    return heapq.merge(*sources, key=key, reverse=True)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
