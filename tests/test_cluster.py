"""Redis Cluster: hash-tagged shards, per-service sharding, readers across shards, a killed master.

One 3-master cluster of private `redis-server` processes (no replicas, AOF on) serves
the module; each test writes under its own stream name.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError

from tests.otlp_receiver import OtlpReceiver
from tests.seeded_records import RecordWriter, tracer_provider
from tests.support import VENV_BIN, RedisHandle, wait_for
from tests.test_console_live import ConsoleProcess, Viewer
from tests.test_forward import forwarding
from tests.test_reliability import Writer
from tests.test_tls_acl import PRODUCER_ACL
from tracestream.connection import connect_cluster
from tracestream.embedded_redis import EmbeddedCluster
from tracestream.exporters import redis_stream
from tracestream.forwarder import forwarder_lag
from tracestream.query import (
    Cursor,
    Follow,
    Query,
    follow,
    iter_records,
    parse_stream_id,
    search,
    trace_tree,
)
from tracestream.schema import LOG_FIELDS, Keyspace, LogEntry
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
        assert len({client.cluster_keyslot(name) for name in [*names, keys.spans]}) == 1  # CLUSTER KEYSLOT


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


def test_search_merges_shards_newest_first_and_pages_exactly(
    handle: RedisHandle, client: RedisCluster
) -> None:
    writer = RecordWriter(handle, **SHARDED)
    for index in range(30):
        writer.log(f"r{index}", service=SERVICES[index % 3], severity="ERROR" if index % 5 == 0 else "INFO")
    writer.close()
    got: list[LogEntry] = []
    cursor = None
    while True:
        page = search(client, handle.stream, Query(), cursor, limit=7)
        got += page.records
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        assert Cursor.parse(cursor).shard  # names the shard the page ended in
    assert sorted(entry.body for entry in got) == sorted(f"r{index}" for index in range(30))
    # Across shards, newest first by write time (stream id milliseconds); within one, exactly.
    stamps = [parse_stream_id(entry.stream_id)[0] for entry in got]
    assert stamps == sorted(stamps, reverse=True)
    for service in SERVICES:
        own = [int(entry.body[1:]) for entry in got if entry.service == service]
        assert own == sorted(own, reverse=True) and len(own) == 10
    errors = search(client, handle.stream, Query.parse(severity="ERROR", services=["api"]), limit=100)
    assert [entry.body for entry in errors.records] == ["r25", "r10"]


def test_pages_are_exact_when_shards_share_stream_ids(handle: RedisHandle, client: RedisCluster) -> None:
    """The same id on two shards: (id, shard) orders them, so no page drops or repeats one."""
    writer = RecordWriter(handle, **SHARDED)
    writer.log("older", service="orders")
    writer.log("older", service="api")
    same_id = "9999999999999-0"
    for service in ("orders", "api"):  # as the append script writes them, with a chosen id
        keys = Keyspace(handle.stream, True, True).shard(service)
        row = writer.row(f"same id in {service}", service=service)
        client.xadd(keys.logs, dict(zip(LOG_FIELDS, row, strict=True)), id=same_id)
        line = f"\n{service}\t9\t{same_id}\tsame id in {service}\t\t"
        client.xadd(keys.digest, {"first": same_id, "n": 1, "d": line}, id=same_id)
    writer.close()
    seen = []
    cursor = None
    while True:
        page = search(client, handle.stream, Query(), cursor, limit=1)
        seen += [entry.body for entry in page.records]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    # ties: the larger shard name first ("test:…:{orders}" > "test:…:{api}")
    assert seen == ["same id in orders", "same id in api", "older", "older"]


def test_trace_lookup_spans_services_on_different_masters(handle: RedisHandle, client: RedisCluster) -> None:
    writer = RecordWriter(handle, **SHARDED)
    front = tracer_provider(handle, "orders", **SHARDED)
    back = tracer_provider(handle, "billing", **SHARDED)
    with front.get_tracer("t").start_as_current_span("POST /orders") as root:
        context = root.get_span_context()
        writer.log("order placed", service="orders", trace_id=context.trace_id, span_id=context.span_id)
        with back.get_tracer("t").start_as_current_span(
            "charge", context=trace.set_span_in_context(root)
        ) as child:
            inner = child.get_span_context()
            writer.log("charged", service="billing", trace_id=inner.trace_id, span_id=inner.span_id)
    writer.close()
    trace_id = f"{context.trace_id:032x}"
    tree = trace_tree(client, handle.stream, trace_id)
    ((depth, root_node), (child_depth, child_node)) = list(tree.walk())
    assert (root_node.span.service, child_node.span.service, depth, child_depth) == (
        "orders",
        "billing",
        0,
        1,
    )
    assert [entry.body for entry in root_node.logs] == ["order placed"]
    assert [entry.body for entry in child_node.logs] == ["charged"]
    found = search(client, handle.stream, Query.parse(trace_id=trace_id))
    # Both land on their masters in one batch, often in the same millisecond: the order of
    # equal stream ids across shards is not defined, only that both are found.
    assert sorted(entry.body for entry in found.records) == ["charged", "order placed"]


def test_follow_reads_every_shard(handle: RedisHandle, client: RedisCluster) -> None:
    writer = RecordWriter(handle, **SHARDED)
    writer.log("before", service="orders")
    state = Follow.at_end(client, handle.stream)
    received: list[str] = []
    live = follow(client, handle.stream, Query.parse(severity="INFO"), state, block_ms=200)
    for index, service in enumerate(SERVICES):  # "api" and "billing" are new shards
        writer.log(f"live {index}", service=service)
    writer.log("quiet", service="api", severity="DEBUG")
    writer.close()
    for entry in live:
        if entry is not None:
            received.append(entry.body)
        if len(received) == 3:
            break
    assert sorted(received) == ["live 0", "live 1", "live 2"]
    assert set(state.positions) == {shard.name for shard in shards(client, handle.stream)}


def test_cli_reads_the_cluster(handle: RedisHandle, client: RedisCluster) -> None:
    writer = RecordWriter(handle, **SHARDED)
    writer.log("hello from orders", service="orders", trace_id=0xFEED)
    writer.log("hello from billing", service="billing", trace_id=0xFEED)
    writer.close()
    env = handle.env(TRACESTREAM_REDIS_CLUSTER="true")
    found = shards(client, handle.stream)
    records = _cli(env, "search", "--json")
    assert sorted(line["body"] for line in records) == ["hello from billing", "hello from orders"]
    traced = _cli(env, "trace", f"{0xFEED:032x}", "--json")
    assert [line["service"] for line in traced] == ["orders", "billing"]
    services = _cli(env, "services", "--json")
    assert sorted(line["service"] for line in services) == ["billing", "orders"]
    checks = _cli(env, "doctor", "--json")
    assert sum(line["check"] == "server" for line in checks) == 3  # one per master
    logs = [line["detail"] for line in checks if line["check"] == "log stream"]
    assert sorted(detail.split("'")[1] for detail in logs) == sorted(shard.name for shard in found)


def _cli(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(VENV_BIN / "tracestream"), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_killed_master_loses_nothing_and_never_blocks_the_app(
    cluster: EmbeddedCluster, handle: RedisHandle, client: RedisCluster, tmp_path: Path
) -> None:
    """kill -9 the master of one service's shard mid-load, restart it (same port, AOF)."""
    victim_port = client.get_node_from_key(Keyspace(handle.stream, True, True).shard("orders").logs).port
    victim = next(server for server in cluster.servers if server.port == victim_port)
    survivor_url = next(server.url for server in cluster.servers if server is not victim)

    def env(service: str) -> dict[str, str]:
        return handle.env(
            TRACESTREAM_REDIS_URL=survivor_url,  # a seed node that stays up
            TRACESTREAM_REDIS_CLUSTER="true",
            TRACESTREAM_SHARD_BY="service",
            TRACESTREAM_SPOOL_DIR=str(tmp_path / service),
            TRACESTREAM_REDIS_TIMEOUT="300ms",
            OTEL_SERVICE_NAME=service,
        )

    # The orders writer exits only once its spool has begun to replay, then flushes the rest.
    orders = Writer(
        env("orders"), "--count", "3000", "--rate", "2000", "--label", "order", "--then", "replayed:1"
    )
    billing = Writer(env("billing"), "--count", "3000", "--rate", "2000", "--label", "bill")
    try:
        orders.wait_logged(500)
        # Billing's first batch registers its shard, which readers find it by: where the registry's
        # slot is on the victim, a first batch after the kill waits in the spool for the next process.
        billing_shard = Keyspace(handle.stream, cluster=True, shard_by_service=True).shard("billing").logs
        wait_for(lambda: billing_shard in _registered(client, handle), what="billing's shard in the registry")
        assert victim.process is not None
        victim.process.kill()
        victim.process.wait()
        orders.wait_logged(1800)  # most of a second logged while its shard has no master
        victim.start()
        cluster.wait_ok()
        orders_status, billing_status = orders.result(), billing.result()
    finally:
        for writer in (orders, billing):
            if writer.process.poll() is None:  # the test failed: leave no writer behind
                writer.process.kill()
                writer.process.wait()
    assert orders_status["spooled"] > 0 and orders_status["replayed"] == orders_status["spooled"]
    for status in (orders_status, billing_status):
        assert status["dropped"] == 0
        assert status["slowest_info_s"] < 0.1  # Redis timeouts never reached the app thread
    for service, label in (("orders", "order"), ("billing", "bill")):
        records = list(iter_records(client, handle.stream, Query.parse(services=[service])))
        keys = Keyspace(handle.stream, cluster=True, shard_by_service=True).shard(service)
        found = {
            "in its shard": client.xlen(keys.logs),
            "registered": _registered(client, handle),
        }
        statuses = {"orders": orders_status, "billing": billing_status}
        assert sorted(int(entry.body.split()[1]) for entry in records) == list(range(3000)), (
            service,
            found,
            statuses[service],
        )
        assert {entry.body.split()[0] for entry in records} == {label}


def _registered(client: RedisCluster, handle: RedisHandle) -> list[str]:
    return [shard.name for shard in shards(client, handle.stream)]


def test_forwarder_delivers_every_shard_including_new_ones(handle: RedisHandle, client: RedisCluster) -> None:
    writer = RecordWriter(handle, **SHARDED)
    rows = [writer.row(f"f{index}", service=SERVICES[index % 2]) for index in range(40)]
    writer.write(*rows)
    with OtlpReceiver() as receiver, forwarding(handle, receiver, cluster=True):
        wanted = [row[LOG_FIELDS.index("rid")] for row in rows]
        wait_for(lambda: set(wanted) <= set(receiver.record_ids()), what="records of two shards")
        late = writer.row("from a shard registered after the start", service="billing")
        writer.write(late)
        wait_for(lambda: late[LOG_FIELDS.index("rid")] in receiver.record_ids(), what="the new shard")
        spans = tracer_provider(handle, "api", **SHARDED)
        with spans.get_tracer("t").start_as_current_span("GET /"):
            pass
        wait_for(lambda: receiver.record_ids("spans"), what="a span")
    writer.close()
    assert sorted(receiver.record_ids()) == sorted([*wanted, late[LOG_FIELDS.index("rid")]])
    lag = forwarder_lag(client, handle.stream)
    assert {item.stream for item in lag} == {
        name for shard in shards(client, handle.stream) for name in (shard.keys.logs, shard.keys.spans)
    }
    assert all(item.pending == 0 for item in lag)


# What a producer needs on a cluster besides the documented single-Redis rights (docs/security.md).
CLUSTER_PRODUCER_ACL = PRODUCER_ACL + " ~{{{stream}}}* +sadd +cluster|slots +command"


def test_producer_acl_user_exports_to_the_cluster_but_cannot_read(
    cluster: EmbeddedCluster, handle: RedisHandle, client: RedisCluster
) -> None:
    user = f"producer-{uuid.uuid4().hex[:6]}"
    command = CLUSTER_PRODUCER_ACL.format(password="pw", stream=handle.stream).split()
    command[2] = user
    for server in cluster.servers:  # ACL users are per node
        with server.client() as admin:
            admin.execute_command(*command)
    url = f"redis://{user}:pw@127.0.0.1:{cluster.servers[0].port}/0"
    producer = RedisHandle(url=url, stream=handle.stream)
    for settings in (SHARDED, {"redis_cluster": True}):
        writer = RecordWriter(producer, **settings)
        for service in SERVICES:
            writer.log("through the producer user", service=service)
        writer.close()
    assert len(search(client, handle.stream, Query()).records) == 2 * len(SERVICES)
    with connect_cluster(url, 5, decode=True) as restricted:
        for shard in shards(client, handle.stream):
            with pytest.raises(NoPermissionError):
                restricted.xrange(shard.name)


class ClusterConsole(ConsoleProcess):
    def env(self) -> dict[str, str]:
        return {**super().env(), "TRACESTREAM_REDIS_CLUSTER": "true"}


def test_console_live_tail_follows_every_shard_and_resumes_without_gap(handle: RedisHandle) -> None:
    writer = RecordWriter(handle, **SHARDED)
    for service in SERVICES:
        writer.log(f"before {service}", service=service)
    console = ClusterConsole(handle)
    viewers: list[Viewer] = []
    try:
        console.start()  # inside the try: a console slow to answer is still stopped
        viewers.append(first := Viewer(console))
        wait_for(lambda: len(first.bodies()) == 3, what="the backlog of every shard")
        for index, service in enumerate(SERVICES * 2):
            writer.log(f"live {index}", service=service)
        wait_for(lambda: len(first.bodies()) == 9, what="live records of every shard")
        assert sorted(first.bodies()[3:]) == [f"live {index}" for index in range(6)]
        resume_from = first.events[-1][0]
        for index, service in enumerate(SERVICES):
            writer.log(f"missed {index}", service=service)
        viewers.append(second := Viewer(console, headers={"last-event-id": resume_from}))
        wait_for(lambda: len(second.bodies()) >= 3, what="the gap replayed")
        writer.log("after the resume", service="api")
        wait_for(lambda: "after the resume" in second.bodies(), what="live after the replay")
        assert sorted(second.bodies()) == ["after the resume", "missed 0", "missed 1", "missed 2"]
    finally:
        for viewer in viewers:
            viewer.close()
        console.stop()
        writer.close()


def test_writers_add_their_shard_to_the_registry_again(
    handle: RedisHandle, client: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failover to a replica the SADD had not reached loses it: the next refresh puts it back."""
    writer = RecordWriter(handle, **SHARDED)
    writer.log("first", service="orders")
    registry = Keyspace(handle.stream).registry
    client.delete(registry)
    writer.log("while registered", service="orders")
    assert not client.exists(registry)  # refreshed every REGISTER_EVERY_S, not per batch
    monkeypatch.setattr(redis_stream, "REGISTER_EVERY_S", 0.0)
    writer.log("after the refresh is due", service="orders")
    writer.close()
    assert [shard.name for shard in shards(client, handle.stream)] == [f"{handle.stream}:{{orders}}"]


def _read_after_failover(url: str, stream: str) -> list[LogEntry] | None:
    """Every record, or None while the node asked still maps the slot to the killed master: nodes
    learn of a failover by gossip, and a reader that starts just then meets the dead one."""
    try:
        with connect_cluster(url, 5, decode=True) as client:
            return list(iter_records(client, stream, Query()))
    except (ConnectionError, RedisConnectionError):
        return None


def test_a_promoted_replica_takes_the_writes_after_its_master_is_killed() -> None:
    """A failover: the writer finds the new master, which has no script cached yet."""
    with EmbeddedCluster(3) as cluster:
        stream = f"test:{uuid.uuid4().hex[:12]}"
        shard = Keyspace(stream, True, True).shard("orders").logs
        with connect_cluster(cluster.url, 5) as before:
            victim = next(s for s in cluster.servers if s.port == before.get_node_from_key(shard).port)
        replica = cluster.add_replica(victim)
        survivor = next(s for s in cluster.servers if s is not victim and s is not replica)
        writer = RecordWriter(RedisHandle(url=survivor.url, stream=stream), **SHARDED)
        first = [writer.row(f"before {index}", service="orders") for index in range(100)]
        writer.write(*first)
        with victim.client() as master, replica.client() as copy:
            offset = master.info("replication")["master_repl_offset"]
            # Replication is asynchronous: only what the replica has can survive the failover.
            wait_for(lambda: copy.info("replication")["slave_repl_offset"] >= offset, what="the replica")
        assert victim.process is not None
        victim.process.kill()
        victim.process.wait()
        second = [writer.row(f"after {index}", service="orders") for index in range(100)]
        wait_for(lambda: writer.writer.write_rows(second), timeout=20, what="a write to the promoted replica")
        writer.close()
        with replica.client() as promoted:
            assert promoted.info("replication")["role"] == "master"
        records = wait_for(
            lambda: _read_after_failover(survivor.url, stream), what="a read after the failover"
        )
    assert sorted(entry.body for entry in records) == sorted(
        row[LOG_FIELDS.index("body")] for row in first + second
    )
