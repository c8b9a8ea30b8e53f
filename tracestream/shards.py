"""Every shard of a stream as readers see it: one on a single Redis, the registry's on a cluster.

Writers add each shard's log stream key to `<stream>:shards` (see `schema.Keyspace`);
readers run their single-Redis code once per shard, against the server holding it.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.cluster import RedisCluster

from tracestream.connection import Client, node_for, reply_text
from tracestream.schema import Keyspace, StreamKeys

# How often long-running readers (follow, the console's live tail) look for new shards.
SHARD_REFRESH_S = 5.0
# With several shards, each is read without blocking, this often, until one has news.
POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class Shard:
    """One shard's keys and the plain client of the server that holds them."""

    keys: StreamKeys
    client: redis.Redis
    tagged: bool = False  # a cluster shard, whose keys carry a hash tag

    @property
    def name(self) -> str:
        return self.keys.logs


def shards(client: Client, stream: str) -> list[Shard]:
    """The shards of `stream`, by name; on a cluster, those some writer has registered."""
    if not isinstance(client, RedisCluster):
        return [Shard(StreamKeys(stream), client)]
    registry = Keyspace(stream, cluster=True).registry
    names = sorted(reply_text(name) for name in node_for(client, registry).smembers(registry))
    return [Shard(StreamKeys(name), node_for(client, name), tagged=True) for name in names]
