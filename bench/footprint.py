"""Redis memory per log record, by part, on the workload of issue 19.

Run: .venv/bin/python bench/footprint.py [--records 100000] [--per-trace 10]

One process calls configure() against a private redis-server and logs `--records` stdlib records,
10 per trace (`--per-trace 1` is shaped like HTTP traffic: a record and a span per request),
each with two `extra=` fields, inside a span per trace. The growth of `used_memory`
is then split by key with MEMORY USAGE: the log stream (and, within it, the resource value and the
fields left empty), the resources stored by reference, the search digest, the trace index lists,
the span stream, the trace list, and anything else. The log and span entries are then re-written
as schema 1 stored them (resource JSON in every entry, observed time, severity text), and the trace
list's sets of every service, which it kept until 2026-12-04, are rebuilt; both are measured again:
the figures before and after, side by side from one run.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from collections import defaultdict

import redis

from tracestream.embedded_redis import EmbeddedRedis
from tracestream.query import resolve_resources
from tracestream.schema import StreamKeys, implied_severity_text

STREAM = "footprint"


def write_workload(url: str, records: int, per_trace: int) -> None:
    from opentelemetry import trace

    from tracestream import configure

    # Queues that hold the whole burst: a memory figure is per record stored, none dropped.
    os.environ["OTEL_BLRP_MAX_QUEUE_SIZE"] = os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(records + 1)
    telemetry = configure(redis_url=url, stream=STREAM, service_name="checkout", max_entries=0)
    tracer = trace.get_tracer("bench.footprint")
    log = logging.getLogger("shop.orders")
    log.setLevel(logging.INFO)
    for number in range(records // per_trace):
        with tracer.start_as_current_span("POST /orders"):
            for line in range(per_trace):
                extra = {"user_id": number % 977, "sku": f"SKU-{line}"}
                log.info("order %s line %d reserved", number, line, extra=extra)
    if not telemetry.force_flush(timeout=120):
        sys.exit("the exporters did not flush within 120 s")
    telemetry.shutdown()


def part_of(key: str, keys: StreamKeys) -> str:
    if key == keys.logs:
        return "log stream"
    if key == keys.spans:
        return "span stream"
    if key.startswith(keys.digest):
        return "search digest"
    if key.startswith(keys.trace_index("")):
        return "trace index"
    if key.startswith(keys.traces()):
        return "trace list"
    if key.startswith(keys.resource("")):
        return "resources"
    return "other keys"


PARTS = ("log stream", "resources", "search digest", "trace index", "span stream", "trace list", "other keys")


def memory_by_part(client: redis.Redis, keys: StreamKeys) -> dict[str, int]:
    parts: dict[str, int] = defaultdict(int)
    for key in client.scan_iter(match=f"{STREAM}*", count=1000):
        parts[part_of(key, keys)] += int(client.memory_usage(key, samples=0) or 0)
    return dict(parts)


def inside_log_entries(client: redis.Redis, stream: str) -> dict[str, float]:
    """Average bytes per entry of the resource value and of fields that are empty."""
    total_resource = empty_fields = entries = 0
    for _, fields in client.xrange(stream, count=2000):
        entries += 1
        total_resource += len(fields.get("resource", ""))
        empty_fields += sum(1 for value in fields.values() if value == "")
    return {"resource value": total_resource / entries, "empty fields": empty_fields / entries}


# Schema 1, the layout before: every entry carried its resource JSON, the observed time and the
# severity text. The same entries are re-written that way, with their ids, to measure it.
SCHEMA_1_LOG_FIELDS = (
    "v", "rid", "ts", "observed_ts", "severity", "severity_number", "body", "service", "trace_id",
    "span_id", "trace_flags", "scope", "code", "attributes", "resource", "exception_type",
    "exception_message", "exception_stacktrace",
)  # fmt: skip


def schema_1_copy(client: redis.Redis, keys: StreamKeys, source: str, target: str) -> None:
    """Re-write `source`'s entries into `target` as schema 1 stored them, with their ids."""
    last = "-"
    while True:
        batch = [entry for entry in client.xrange(source, min=last, count=5000) if entry[0] != last]
        if not batch:
            return
        resolve_resources(client, keys, (fields for _, fields in batch))
        pipe = client.pipeline(transaction=False)
        for stream_id, fields in batch:
            old = dict(fields, v="1")
            if "severity" in old:  # a log entry
                old["observed_ts"] = old["ts"]
                old["severity"] = old["severity"] or implied_severity_text(int(old["severity_number"]))
                old = {name: old[name] for name in SCHEMA_1_LOG_FIELDS}
            pipe.xadd(target, old, id=stream_id)
        pipe.execute()
        last = batch[-1][0]


def every_service_sets_bytes(client: redis.Redis, keys: StreamKeys) -> int:
    """What the trace list's sets of every service cost, which it kept beside each service's
    own before 2026-12-04: rebuilt from those (by start, and by duration per hour) to measure."""
    services = client.zrange(keys.trace_services, 0, -1)
    hours = [int(hour) for hour in client.zrange(keys.trace_hours, 0, -1)]
    unions = [(keys.traces(), [keys.traces(service) for service in services])]
    unions += [
        (keys.slowest_traces(hour), [keys.slowest_traces(hour, name) for name in services]) for hour in hours
    ]
    total = 0
    for every, sources in unions:
        client.zunionstore(f"schema1:{every}", sources)
        total += int(client.memory_usage(f"schema1:{every}", samples=0) or 0)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--per-trace", type=int, default=10, help="records per trace (10)")
    args = parser.parse_args()
    with EmbeddedRedis() as server:
        client = server.client()
        before = int(client.info("memory")["used_memory"])
        started = time.monotonic()
        write_workload(server.url, args.records, args.per_trace)
        after = int(client.info("memory")["used_memory"])
        keys = StreamKeys(STREAM)
        parts = memory_by_part(client, keys)
        inside = inside_log_entries(client, keys.logs)
        logs = int(client.xlen(keys.logs))
        spans = int(client.xlen(keys.spans))
        before_layout = {}
        for name, stream in (("log stream", keys.logs), ("span stream", keys.spans)):
            schema_1_copy(client, keys, stream, f"schema1:{stream}")
            before_layout[name] = int(client.memory_usage(f"schema1:{stream}", samples=0) or 0)
        before_layout["trace list"] = parts.get("trace list", 0) + every_service_sets_bytes(client, keys)
    took = time.monotonic() - started
    print(f"# {args.records} records ({logs} log entries, {spans} spans) written in {took:.1f}s")
    print(f"# {platform.node()} · Python {platform.python_version()} · {os.cpu_count()} CPUs")
    print(f"used_memory grew by {after - before:,} B: {(after - before) / logs:.0f} B per log record")
    print(f"{'part':16} {'bytes':>12} {'B/record':>9}   before (schema 1)")
    for name in PARTS:
        size = parts.get(name, 0)
        before_size = before_layout.get(name)
        was = f"   {before_size / logs:9.0f}" if before_size is not None else ""
        print(f"{name:16} {size:12,} {size / logs:9.0f}{was}")
    total = sum(parts.values())
    total_before = (
        total
        - sum(parts.get(name, 0) for name in (*before_layout, "resources"))
        + sum(before_layout.values())
    )
    print(f"{'all keys':16} {total:12,} {total / logs:9.0f}   {total_before / logs:9.0f}")
    for name, per_entry in inside.items():
        print(f"  within each log entry, {name}: {per_entry:.0f} B")
    print(
        f"command: .venv/bin/python bench/footprint.py --records {args.records} --per-trace {args.per_trace}"
    )


if __name__ == "__main__":
    main()
