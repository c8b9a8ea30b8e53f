"""Redis memory per log record, by part, on the workload of issue 19.

Run: .venv/bin/python bench/footprint.py [--records 100000]

One process calls configure() against a private redis-server and logs `--records` stdlib records,
10 per trace, each with two `extra=` fields, inside a span per trace. The growth of `used_memory`
is then split by key with MEMORY USAGE: the log stream (and, within it, the resource JSON every
entry carries and the fields left empty), the search digest, the trace index lists, the span
stream, and anything else.
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
from tracestream.schema import StreamKeys

STREAM = "footprint"
PER_TRACE = 10


def write_workload(url: str, records: int) -> None:
    from opentelemetry import trace

    from tracestream import configure

    telemetry = configure(redis_url=url, stream=STREAM, service_name="checkout", max_entries=0)
    tracer = trace.get_tracer("bench.footprint")
    log = logging.getLogger("shop.orders")
    log.setLevel(logging.INFO)
    for number in range(records // PER_TRACE):
        with tracer.start_as_current_span("POST /orders"):
            for line in range(PER_TRACE):
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
    if key == keys.digest:
        return "search digest"
    if key.startswith(keys.trace_index("")):
        return "trace index"
    return "other keys"


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
    return {"resource JSON": total_resource / entries, "empty fields": empty_fields / entries}


# The candidate layout of issue 19, measured on the same entries: the resource stored once per process
# under a short reference, and the fields that repeat what the entry says elsewhere left out.
SEVERITY_TEXT = {1: "TRACE", 5: "DEBUG", 9: "INFO", 13: "WARN", 17: "ERROR", 21: "FATAL"}


def compact_copy(client: redis.Redis, source: str, target: str) -> None:
    """Re-write `source`'s entries into `target` in the candidate layout, with their ids."""
    resources = f"{target}:resources"
    last = "-"
    while True:
        batch = client.xrange(source, min=last, count=5000)
        batch = [entry for entry in batch if entry[0] != last]
        if not batch:
            return
        pipe = client.pipeline(transaction=False)
        for stream_id, fields in batch:
            compact = dict(fields)
            resource = compact.pop("resource", "")
            ref = format(abs(hash(resource)) % 16**8, "08x")
            pipe.hsetnx(resources, ref, resource)
            compact["resource"] = ref
            compact["v"] = "2"
            if SEVERITY_TEXT.get(int(compact.get("severity_number", "0") or 0)) == compact.get("severity"):
                compact.pop("severity", None)
            compact.pop("observed_ts", None)
            pipe.xadd(target, compact, id=stream_id)
        pipe.execute()
        last = batch[-1][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    with EmbeddedRedis() as server:
        client = server.client()
        before = int(client.info("memory")["used_memory"])
        started = time.monotonic()
        write_workload(server.url, args.records)
        after = int(client.info("memory")["used_memory"])
        keys = StreamKeys(STREAM)
        parts = memory_by_part(client, keys)
        inside = inside_log_entries(client, keys.logs)
        logs = int(client.xlen(keys.logs))
        spans = int(client.xlen(keys.spans))
        candidate = {}
        for name, stream in (("log stream", keys.logs), ("span stream", keys.spans)):
            compact_copy(client, stream, f"candidate:{stream}")
            candidate[name] = int(client.memory_usage(f"candidate:{stream}", samples=0) or 0)
        stores = client.scan_iter(match="candidate:*:resources")
        candidate["resources"] = sum(int(client.memory_usage(key, samples=0) or 0) for key in stores)
    took = time.monotonic() - started
    print(f"# {args.records} records ({logs} log entries, {spans} spans) written in {took:.1f}s")
    print(f"# {platform.node()} · Python {platform.python_version()} · {os.cpu_count()} CPUs")
    print(f"used_memory grew by {after - before:,} B: {(after - before) / logs:.0f} B per log record")
    print(f"{'part':16} {'bytes':>12} {'B/record':>9}")
    for name in ("log stream", "search digest", "trace index", "span stream", "other keys"):
        size = parts.get(name, 0)
        print(f"{name:16} {size:12,} {size / logs:9.0f}")
    print(f"{'all keys':16} {sum(parts.values()):12,} {sum(parts.values()) / logs:9.0f}")
    for name, per_entry in inside.items():
        print(f"  within each log entry, {name}: {per_entry:.0f} B")
    print("candidate layout (resource by reference, no observed_ts, severity text only when not standard):")
    for name, size in candidate.items():
        print(f"  {name:14} {size:12,} {size / logs:9.0f} B/record")
    print(f"command: .venv/bin/python bench/footprint.py --records {args.records}")


if __name__ == "__main__":
    main()
