"""Redis Cluster: hash-tagged shards, per-service sharding, readers across shards, a killed master.

One 3-master cluster of private `redis-server` processes (no replicas, AOF on) serves
the module; each test writes under its own stream name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster

from tests.records import RecordWriter
from tests.support import RedisHandle
from tracestream.connection import connect_cluster
from tracestream.embedded_redis import EmbeddedCluster
from tracestream.schema import Keyspace
from tracestream.shards import shards

# Tags of these names hash to slots on three different masters of a 3-master cluster.
SERVICES = ("orders", "api", "billing")
SHARDED = {"redis_cluster": True, "shard_by": "service"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(3) as started:
        yield started


@pytest.fixture
def handle(cluster: EmbeddedCluster) -> RedisHandle:
    return RedisHandle(url=cluster.url, stream=f"test:{uuid.uuid4().hex[:12]}")


@pytest.fixture
def client(cluster: EmbeddedCluster) -> Iterator[RedisCluster]:
    client = connect_cluster(cluster.url, 5, decode=True)
    yield client
    client.close()


def _master_of(client: RedisCluster, key: str) -> str:
    return str(client.get_node_from_key(key).name)


def test_every_key_of_a_shard_is_in_one_slot(handle: RedisHandle, client: RedisCluster) -> None:
    writer = RecordWriter(handle, **SHARDED)
    for service in SERVICES:
        writer.log("hello", service=service, trace_id=0xABC)
    writer.close()
    found = shards(client, handle.stream)
    assert [shard.name for shard in found] == sorted(f"{handle.stream}:{{{s}}}" for s in SERVICES)
    for shard in found:
        keys = shard.keys
        trace = keys.trace_index(f"{0xABC:032x}")
        names = [keys.logs, keys.digest, keys.digest_sizes, keys.digest_lines, trace]
        assert all(shard.client.exists(name) for name in names), names
        assert len({client.keyslot(name) for name in [*names, keys.spans]}) == 1


def test_unsharded_cluster_keys_share_the_stream_tag(handle: RedisHandle, client: RedisCluster) -> None:
    writer = RecordWriter(handle, redis_cluster=True)
    for service in SERVICES:
        writer.log("hello", service=service)
    writer.close()
    (shard,) = shards(client, handle.stream)
    assert shard.name == f"{{{handle.stream}}}"
    assert shard.client.xlen(shard.name) == len(SERVICES)
    assert client.smembers(Keyspace(handle.stream).registry) == {shard.name}


def test_sharding_by_service_spreads_over_masters(handle: RedisHandle, client: RedisCluster) -> None:
    writer = RecordWriter(handle, **SHARDED)
    for service in SERVICES:
        writer.log("hello", service=service)
    writer.close()
    masters = {_master_of(client, shard.name) for shard in shards(client, handle.stream)}
    assert len(masters) == 3
