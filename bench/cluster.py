"""The exporter's writer and the readers on a 3-master Redis Cluster, against one Redis.

Rows go through `StreamWriter.write_rows` in batches of 4096, as the export worker sends them:
  single:   one private redis-server (AOF on, like the cluster nodes)
  cluster:  a 3-master cluster, unsharded (every key tagged `{<stream>}`: one master)
  sharded:  the same cluster with TRACESTREAM_SHARD_BY=service; every batch mixes 3 services,
            so each is split into 3 shard writes on 3 masters, one after another
Then, per layout, a newest-100 search and a trace lookup (the trace's records are on every shard).

Run: .venv/bin/python bench/cluster.py [--records 60000]
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from opentelemetry.sdk.resources import Resource

from tracestream import schema
from tracestream.connection import Client, connect, connect_cluster
from tracestream.embedded_redis import EmbeddedCluster, EmbeddedRedis
from tracestream.exporters import RedisStreamLogExporter, encoding
from tracestream.query import Query, fetch_trace, search
from tracestream.settings import Settings

BATCH = 4096
SERVICES = ("orders", "api", "billing")  # their shards sit on three different masters
TRACE_ID = 0x5EED


def rows(count: int) -> list[list[str]]:
    ids = schema.RecordIds()
    resources = [encoding.EncodedResource.of(Resource({"service.name": name})) for name in SERVICES]
    now = time.time_ns()
    return [row(ids.next(), now, index, resources[index % 3]) for index in range(count)]


def row(record_id: str, now: int, index: int, resource: encoding.EncodedResource) -> list[str]:
    return encoding.log_values(
        record_id, now, "INFO", 9, f"request {index} handled in 12 ms", resource,
        TRACE_ID if index % 1000 == 0 else 0, 0, 1, "app", "app/views.py:10 in handle",
        {"http.route": "/items", "index": index}, encoding.NO_EXCEPTION,
    )  # fmt: skip


def run(label: str, url: str, reader: Client, count: int, **settings: Any) -> None:
    stream = f"bench:{uuid.uuid4().hex[:8]}"
    config = Settings.load(environ={}, redis_url=url, stream=stream, max_entries=0, **settings)
    writer = RedisStreamLogExporter(config).writer
    batch_rows = rows(count)
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        assert writer.write_rows(batch_rows[start : start + BATCH])
    write_s = time.perf_counter() - started
    writer.close()
    started = time.perf_counter()
    page = search(reader, stream, Query(), limit=100)
    search_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    trace = fetch_trace(reader, stream, f"{TRACE_ID:032x}")
    trace_ms = (time.perf_counter() - started) * 1000
    assert len(page.records) == 100 and len(trace.logs) == len(range(0, count, 1000))
    print(
        f"{label:8} {count / write_s:>9,.0f} records/s written; newest 100: {search_ms:5.1f} ms; "
        f"trace lookup ({len(trace.logs)} records): {trace_ms:5.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=60_000)
    args = parser.parse_args()
    with (
        EmbeddedRedis(extra_args=["--appendonly", "yes"]) as single,
        connect(single.url, 10, decode=True) as reader,
    ):
        run("single", single.url, reader, args.records)
    with EmbeddedCluster(3) as cluster, connect_cluster(cluster.url, 10, decode=True) as reader:
        run("cluster", cluster.url, reader, args.records, redis_cluster=True)
        run("sharded", cluster.url, reader, args.records, redis_cluster=True, shard_by="service")


if __name__ == "__main__":
    main()
