"""Log export throughput: tracestream vs the SDK's own floor vs a naive XADD handler.

Each contender runs in a fresh process, one after another in one invocation, against
the same private redis-server, so their ratios are comparable on a noisy machine:

  a) stdlib logging -> tracestream -> Redis, timed until every record is in the stream
  b) stdlib logging -> upstream OTel LoggingHandler -> BatchLogRecordProcessor -> no-op exporter
  c) stdlib logging -> a handler doing one synchronous XADD per record

Run: .venv/bin/python bench/export_throughput.py [--records 100000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import redis

from tracestream.embedded_redis import EmbeddedRedis

STREAM = "bench:throughput"


Run = tuple[list[int], int, float]  # per-call timings (ns), records delivered, seconds


def _log_and_deliver(count: int, deliver: Callable[[], int]) -> Run:
    """Log `count` records, timing each call on the application thread, then wait for delivery.

    The clock starts at the first record, after imports and setup, so it measures throughput only.
    """
    logger = logging.getLogger("bench.app")
    timings = [0] * count
    clock = time.perf_counter_ns
    started = time.perf_counter()
    for i in range(count):
        start = clock()
        logger.info("order %s shipped to %s", i, "warehouse-7")
        timings[i] = clock() - start
    delivered = deliver()
    return timings, delivered, time.perf_counter() - started


def run_tracestream(url: str, count: int) -> Run:
    import tracestream

    telemetry = tracestream.configure(
        service_name="bench", redis_url=url, stream=STREAM, max_entries=0, traces_exporter="none"
    )
    client = redis.Redis.from_url(url)

    def deliver() -> int:
        telemetry.force_flush(timeout=120)
        return int(client.xlen(STREAM))

    return _log_and_deliver(count, deliver)


def run_upstream_noop(url: str, count: int) -> Run:
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        BatchLogRecordProcessor,
        LogRecordExporter,
        LogRecordExportResult,
    )

    class NoOpExporter(LogRecordExporter):
        exported = 0

        def export(self, batch: Sequence[object]) -> LogRecordExportResult:
            NoOpExporter.exported += len(batch)
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 0) -> bool:
            return True

    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(NoOpExporter()))
    logging.getLogger().addHandler(LoggingHandler(logger_provider=provider))

    def deliver() -> int:
        provider.force_flush()
        return NoOpExporter.exported

    return _log_and_deliver(count, deliver)


def run_naive_xadd(url: str, count: int) -> Run:
    """The hand-made handler tracestream replaces (shared/prior-art.md): one XADD per record."""
    client = redis.Redis.from_url(url)

    class HandMadeHandler(logging.Handler):
        written = 0

        def emit(self, record: logging.LogRecord) -> None:
            fields = {
                "log_id": str(uuid.uuid4()),
                "timestamp": datetime.now(timezone.utc).isoformat(),
                "level": record.levelname,
                "service": "bench",
                "component": record.name,
                "module": record.module,
                "message": record.getMessage(),
            }
            client.xadd(STREAM, fields, maxlen=10_000, approximate=True)
            HandMadeHandler.written += 1

    logging.getLogger().addHandler(HandMadeHandler())
    return _log_and_deliver(count, lambda: HandMadeHandler.written)


CONTENDERS: dict[str, tuple[str, Callable[[str, int], Run]]] = {
    "a": ("tracestream -> Redis (end to end)", run_tracestream),
    "b": ("upstream OTel handler -> no-op exporter", run_upstream_noop),
    "c": ("hand-made handler, one XADD per record", run_naive_xadd),
}


def child(name: str, url: str, count: int) -> None:
    logging.getLogger().setLevel(logging.INFO)
    redis.Redis.from_url(url).delete(STREAM)
    timings, delivered, elapsed = CONTENDERS[name][1](url, count)
    timings.sort()
    print(
        json.dumps(
            {
                "records_per_s": count / elapsed,
                "delivered": delivered,
                "median_us": timings[len(timings) // 2] / 1000,
                "p99_us": timings[int(len(timings) * 0.99)] / 1000,
            }
        )
    )


def _round_trip_us(url: str) -> float:
    """The loopback round trip of this machine: ratios against c move with it from run to run."""
    client = redis.Redis.from_url(url)
    times = []
    for _ in range(2000):
        start = time.perf_counter()
        client.ping()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--naive-records", type=int, default=20_000, help="c is slow; fewer records suffice")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per contender; the median is reported")
    parser.add_argument("--child", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.records)
        return

    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
    with EmbeddedRedis() as server:
        for _ in range(args.rounds):
            for name in CONTENDERS:  # interleaved, so drift in machine load hits all alike
                count = args.naive_records if name == "c" else args.records
                # a and b get a queue deep enough for the whole burst, so neither drops records
                env = {**os.environ, "OTEL_BLRP_MAX_QUEUE_SIZE": str(count)}
                out = subprocess.run(
                    [sys.executable, __file__, "--child", name, "--url", server.url, "--records", str(count)],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                results[name].append(json.loads(out.strip().splitlines()[-1]))

        round_trip_us = _round_trip_us(server.url)

    summary = {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()
    }
    print(f"command: {' '.join(sys.argv)}")
    print(f"records={args.records} (c: {args.naive_records}), rounds={args.rounds}, median of rounds")
    for name, (label, _) in CONTENDERS.items():
        s = summary[name]
        print(
            f"  {name}) {label:42s} {s['records_per_s']:>10,.0f} rec/s   delivered {s['delivered']:>8,.0f}"
            f"   logger.info median {s['median_us']:.1f} us  p99 {s['p99_us']:.1f} us"
        )
    print(f"  machine: Redis PING round trip {round_trip_us:.0f} us, median of 2000 (c pays one per record)")
    a, b, c = (summary[n]["records_per_s"] for n in "abc")
    print(f"  a/c = {a / c:.1f}  (target >= 10)")
    print(f"  a/b = {a / b:.2f}  (target >= 1.0)")
    print(f"  tracestream logger.info median = {summary['a']['median_us']:.1f} us  (target <= 15 us)")


if __name__ == "__main__":
    main()
