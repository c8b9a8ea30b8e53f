"""Live-tail fan-out: 200 SSE viewers on one console process, per-record delivery latency.

Two contenders in one invocation, against the same private redis-server and the same producer:

  a) console: 200 viewers on one `tracestream console` process (one shared XREAD, fanned out over SSE)
  b) per-viewer reader: 200 asyncio Redis clients each running its own XREAD BLOCK loop
     (the old design's read pattern, minus its blocking client)

The producer writes records through the real exporter, one export per record, each body
carrying its send time; latency is receipt time minus send time, over every viewer and record.
Redis reads are counted with INFO commandstats.

Run: .venv/bin/python bench/console_fanout.py [--viewers 200] [--records 300] [--rate 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
import redis.asyncio as aioredis
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource

from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.exporters import RedisStreamLogExporter
from tracestream.settings import Settings

BIN = Path(sys.executable).parent
STREAM = "bench:console"


@dataclass
class Deliveries:
    """Latencies in ms and per-viewer counts of each record, to catch duplicates and losses."""

    latencies: list[float] = field(default_factory=list)
    per_viewer: list[dict[int, int]] = field(default_factory=list)

    def viewer(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        self.per_viewer.append(counts)
        return counts

    def receive(self, counts: dict[int, int], body: bytes) -> None:
        """`body` is `<marker> <seq> <sent ns>`."""
        now = time.time_ns()
        _, seq, sent = body.split(b" ")
        counts[int(seq)] = counts.get(int(seq), 0) + 1
        self.latencies.append((now - int(sent)) / 1e6)

    def complete(self, records: int) -> bool:
        return all(len(counts) == records for counts in self.per_viewer)


def produce(url: str, marker: str, records: int, rate: float) -> None:
    settings = Settings.load(environ={}, redis_url=url, stream=STREAM, max_entries=0)
    exporter = RedisStreamLogExporter(settings)
    resource = Resource({"service.name": "bench"})
    interval = 1 / rate
    start = time.monotonic()
    for seq in range(records):
        time.sleep(max(0.0, start + seq * interval - time.monotonic()))
        now = time.time_ns()
        record = LogRecord(
            timestamp=now,
            observed_timestamp=now,
            severity_text="INFO",
            severity_number=SeverityNumber.INFO,
            body=f"{marker} {seq} {now}",
        )
        exporter.export([ReadableLogRecord(log_record=record, resource=resource)])
    exporter.shutdown()


async def sse_viewer(port: int, marker: str, deliveries: Deliveries, connected: asyncio.Event) -> None:
    """A raw HTTP/1.1 SSE client: cheap enough that 200 of them do not starve the console."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/live?text={marker} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    status = await reader.readline()
    assert b" 200 " in status, status
    while await reader.readline() not in (b"\r\n", b""):
        pass
    counts = deliveries.viewer()
    connected.set()
    needle = b'"body":"' + marker.encode() + b" "
    try:
        while line := await reader.readline():
            start = line.find(needle)
            if line.startswith(b"data: ") and start >= 0:
                body_start = start + len(b'"body":"')
                deliveries.receive(counts, line[body_start : line.index(b'"', body_start)])
    finally:
        writer.close()


async def redis_viewer(url: str, marker: str, deliveries: Deliveries, connected: asyncio.Event) -> None:
    """The per-viewer design: every viewer holds its own connection and reads every record itself."""
    client = aioredis.Redis.from_url(url, decode_responses=False)
    counts = deliveries.viewer()
    cursor = "$"
    connected.set()
    prefix = marker.encode() + b" "
    try:
        while True:
            for _stream, entries in await client.xread({STREAM: cursor}, count=1000, block=5000) or ():
                for entry_id, fields in entries:
                    cursor = entry_id
                    if fields[b"body"].startswith(prefix):
                        deliveries.receive(counts, fields[b"body"])
    finally:
        await client.aclose()


async def run_contender(
    url: str,
    viewers: int,
    records: int,
    rate: float,
    make_viewer: Callable[..., Awaitable[None]],
    *args: object,
) -> tuple[Deliveries, dict[str, int]]:
    marker = f"bench{uuid.uuid4().hex[:8]}"
    deliveries = Deliveries()
    events = [asyncio.Event() for _ in range(viewers)]
    tasks = [asyncio.create_task(make_viewer(*args, marker, deliveries, event)) for event in events]
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), 60)
    await asyncio.sleep(0.5)  # let the last viewers' catch-up finish before records flow
    stats = redis.Redis.from_url(url, decode_responses=True)
    before = _command_calls(stats)
    producer = threading.Thread(target=produce, args=(url, marker, records, rate))
    started = time.monotonic()
    producer.start()
    deadline = started + records / rate + 30
    while not (deliveries.complete(records) and not producer.is_alive()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    producer.join()
    after = _command_calls(stats)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    calls = {
        name: after.get(name, 0) - before.get(name, 0) for name in ("xread", "xrange", "xrevrange", "xadd")
    }
    return deliveries, calls


def _command_calls(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in info.items()}


def report(name: str, deliveries: Deliveries, calls: dict[str, int], viewers: int, records: int) -> None:
    latencies = sorted(deliveries.latencies)
    expected = viewers * records
    duplicates = sum(count - 1 for counts in deliveries.per_viewer for count in counts.values() if count > 1)
    missing = sum(records - len(counts) for counts in deliveries.per_viewer)

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    mean = statistics.fmean(latencies) if latencies else float("nan")
    print(
        f"{name:<22} deliveries {len(latencies):>6}/{expected:<6} missing {missing:<4} "
        f"duplicates {duplicates:<4} p50 {percentile(0.50):7.1f} ms  p99 {percentile(0.99):7.1f} ms  "
        f"max {percentile(1.0):7.1f} ms  mean {mean:6.1f} ms  "
        f"XREAD calls {calls['xread']:>6} for {records} records"
    )


async def main_async(args: argparse.Namespace) -> None:
    with EmbeddedRedis() as server:
        port = free_port()
        env = {"TRACESTREAM_REDIS_URL": server.url, "TRACESTREAM_STREAM": STREAM, "PATH": str(BIN)}
        console = subprocess.Popen([str(BIN / "tracestream"), "console", "--port", str(port)], env=env)
        try:
            _wait_until_serving(port)
            results = [
                ("a) console SSE", *await run_contender(
                    server.url, args.viewers, args.records, args.rate, sse_viewer, port)),
                ("b) per-viewer XREAD", *await run_contender(
                    server.url, args.viewers, args.records, args.rate, redis_viewer, server.url)),
            ]  # fmt: skip
        finally:
            console.terminate()
            console.wait(10)
    print(f"{args.viewers} viewers, {args.records} records at {args.rate:g}/s, one console process")
    for name, deliveries, calls in results:
        report(name, deliveries, calls, args.viewers, args.records)
    print("command: .venv/bin/python bench/console_fanout.py " + " ".join(sys.argv[1:]))


def _wait_until_serving(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the console did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--rate", type=float, default=30.0, help="records per second")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
