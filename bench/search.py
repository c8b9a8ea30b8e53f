"""Search, trace lookup, trace list and live-tail latency over a million records in a private Redis.

Run: .venv/bin/python bench/search.py [--records 1000000] [--traces 100000]

Records are written by the real exporter path (StreamWriter + schema encoders, trace
index and trace list included): 10 services with 3 instances each, mixed severities, 2 spans
per trace; the traces start over the last two hours, take 1 ms to a few seconds, 5% fail.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import orjson
import redis
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from tracestream import schema
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.exporters import encoding
from tracestream.exporters.redis_stream import RedisStreamLogExporter, RedisStreamSpanExporter
from tracestream.query import Query, TraceSummary, fetch_trace, recent_traces, search
from tracestream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STREAM = "bench"
SERVICES = [
    f"svc-{name}"
    for name in ("api", "web", "auth", "billing", "search", "mail", "cart", "feed", "media", "jobs")
]
SEVERITIES = [("DEBUG", 5, 15), ("INFO", 9, 70), ("WARN", 13, 10), ("ERROR", 17, 4), ("FATAL", 21, 1)]
ROUTES = ["/items/{item_id}", "/users/{user_id}", "/orders", "/health", "/search"]
BODIES = [
    "GET {route} 200 in {ms} ms",
    "cache miss for key user:{n}",
    "charged card ending {n} for order {n2}",
    "task send_email[{n}] succeeded in 0.{ms}s",
    "slow query on orders ({ms} ms)",
    "retrying upstream call after timeout (attempt {small})",
]
TRACE_SPREAD_NS = 2 * 3600 * 10**9
RARE = "needle-7f3a9c"
RARE_COUNT = 5


def resources() -> dict[str, list[Resource]]:
    """Three instances per service, with the attributes a real SDK resource carries."""
    return {
        service: [
            Resource(
                {
                    "service.name": service,
                    "service.version": "1.4.2",
                    "deployment.environment": "production",
                    "host.name": f"{service}-{i}.prod.internal",
                    "process.pid": 1000 + i,
                    "telemetry.sdk.language": "python",
                    "telemetry.sdk.name": "opentelemetry",
                    "telemetry.sdk.version": "1.45.0",
                }
            )
            for i in range(3)
        ]
        for service in SERVICES
    }


def log_rows(count: int, traces: list[tuple[int, int]], rng: random.Random) -> list[list[str]]:
    """`count` log rows spread over `traces` (trace id, root span id), oldest first."""
    encoded = {service: [encoding.EncodedResource.of(r) for r in rs] for service, rs in resources().items()}
    ids = schema.RecordIds()
    severity_weights = [weight for *_, weight in SEVERITIES]
    rare_at = set(rng.sample(range(count), RARE_COUNT))
    rows = []
    now_ns = time.time_ns()
    for n in range(count):
        trace_id, span_id = traces[n % len(traces)]
        service = SERVICES[(n // 7) % len(SERVICES)]
        severity, number, _ = rng.choices(SEVERITIES, severity_weights)[0]
        route = rng.choice(ROUTES)
        body = rng.choice(BODIES).format(
            route=route, ms=rng.randint(1, 900), n=rng.randint(1000, 9999), n2=n, small=rng.randint(1, 5)
        )
        if n in rare_at:
            body += f" {RARE}"
        error = number >= 17
        rows.append(
            encoding.log_values(
                ids.next(),
                now_ns + n * 1000,
                severity,
                number,
                body,
                rng.choice(encoded[service]),
                trace_id,
                span_id,
                1,
                f"{service}.views",
                f"/srv/{service}/app/views.py:{40 + n % 60} in handle",
                {"http.route": route, "http.method": "GET", "user.id": n % 5000},
                ("builtins.ValueError", "bad item id", "Traceback ...") if error else encoding.NO_EXCEPTION,
            )
        )
    return rows


def spans_of(traces: list[tuple[int, int]], rng: random.Random) -> list[ReadableSpan]:
    """A server span and one client child per trace, oldest first, started over the last
    `TRACE_SPREAD_NS`; durations log-normal around 20 ms, one in twenty failed."""
    spans = []
    now = time.time_ns()
    by_service = resources()
    starts = sorted(now - rng.randrange(TRACE_SPREAD_NS) for _ in traces)
    for n, ((trace_id, span_id), start) in enumerate(zip(traces, starts, strict=True)):
        resource = by_service[SERVICES[n % len(SERVICES)]][0]
        root = SpanContext(trace_id, span_id, is_remote=False)
        child = SpanContext(trace_id, span_id + 1, is_remote=False)
        end = start + min(int(rng.lognormvariate(3, 1.2) * 1e6), 30 * 10**9)
        route = rng.choice(ROUTES)
        status = Status(StatusCode.ERROR) if rng.random() < 0.05 else Status(StatusCode.UNSET)
        spans += [
            ReadableSpan(
                f"GET {route}", root, None, resource=resource, kind=SpanKind.SERVER,
                attributes={"http.route": route, "http.method": "GET"}, status=status,
                start_time=start, end_time=end,
            ),
            ReadableSpan(
                "SELECT orders", child, root, resource=resource, kind=SpanKind.CLIENT,
                start_time=start + (end - start) // 4, end_time=start + (end - start) // 2,
            ),
        ]  # fmt: skip
    return spans


def load(url: str, records: int, trace_count: int) -> list[int]:
    """Write records and spans; returns the trace ids."""
    rng = random.Random(7)
    traces = [(rng.getrandbits(128) | 1, (rng.getrandbits(63) | 1) << 1) for _ in range(trace_count)]
    settings = Settings.load(environ={}, redis_url=url, stream=STREAM, max_entries=0, redis_timeout="60s")
    logs = RedisStreamLogExporter(settings).writer
    spans = RedisStreamSpanExporter(settings).writer
    rows = log_rows(records, traces, rng)
    for start in range(0, len(rows), 8192):
        assert logs.write_rows(rows[start : start + 8192])
    span_list = spans.encode(spans_of(traces, rng))
    for start in range(0, len(span_list), 8192):
        assert spans.write_rows(span_list[start : start + 8192])
    return [trace_id for trace_id, _ in traces]


def check_slowest(found: list[TraceSummary], client: redis.Redis, since_ms: int, service: str | None) -> None:
    """The list's answer is the slowest 50 root spans of the last hour in the stream (of `service`)."""
    roots = []
    for _, fields in client.xrange(schema.StreamKeys(STREAM).spans):
        span = schema.SpanEntry.from_fields("0-0", fields)
        if service in (None, span.service) and not span.parent_span_id and span.start_ns // 10**6 >= since_ms:
            roots.append((span.duration_ms, span.trace_id))
    expected = [trace_id for _, trace_id in sorted(roots, reverse=True)[:50]]
    assert [summary.trace_id for summary in found] == expected


def timed(action: Callable[[], object], repeat: int) -> list[float]:
    """Milliseconds per call."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# The writer side of the live-tail measurement: `logger.info` through configure(), default settings.
LIVE_WRITER = """
import logging, sys, time
import tracestream
tracestream.configure(service_name="live-bench")
log = logging.getLogger("live")
log.setLevel(logging.INFO)
for _ in range(int(sys.argv[1])):
    log.info("sent %d", time.time_ns())
    time.sleep(0.05)
"""


def live_tail_latency(url: str, count: int) -> list[float]:
    """Milliseconds from `logger.info` in one process to the line `tracestream tail --json` prints."""
    env = {**os.environ, "TRACESTREAM_REDIS_URL": url, "TRACESTREAM_STREAM": STREAM}
    tail_cmd = [
        str(Path(sys.executable).with_name("tracestream")),
        "tail",
        "--json",
        "-n",
        "0",
        "-s",
        "live-bench",
    ]
    tail = subprocess.Popen(tail_cmd, env=env, stdout=subprocess.PIPE, text=True)
    assert tail.stdout is not None
    client = redis.Redis.from_url(url, decode_responses=True)
    deadline = time.monotonic() + 60
    while not any(c["cmd"] == "xread" for c in client.client_list()):  # tail is up and blocking
        assert time.monotonic() < deadline, "tail did not start"
        time.sleep(0.05)
    writer = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(count)], env=env)
    latencies = []
    try:
        for line in tail.stdout:
            received = time.time_ns()
            body = orjson.loads(line)["body"]
            latencies.append((received - int(body.split()[1])) / 1e6)
            if len(latencies) == count:
                break
    finally:
        writer.wait(60)
        tail.terminate()
        tail.wait(10)
    return latencies


def index_bytes(client: redis.Redis) -> tuple[int, int]:
    """What the trace index lists and the search digest take (MEMORY USAGE, every node counted)."""
    keys = schema.StreamKeys(STREAM)
    digest = sum(
        int(client.memory_usage(key, samples=0) or 0)
        for key in (keys.digest, keys.digest_sizes, keys.digest_lines)
    )
    return _trace_index_bytes(client), digest


def _trace_index_bytes(client: redis.Redis) -> int:
    return _bytes_of(client, list(client.scan_iter(match=f"{STREAM}:trace:*", count=5000)))


def _bytes_of(client: redis.Redis, keys: list[str]) -> int:
    total = 0
    for start in range(0, len(keys), 5000):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 5000]:
            pipe.memory_usage(key, samples=0)
        total += sum(int(size or 0) for size in pipe.execute())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--live", type=int, default=200, help="records for the live-tail measurement")
    options = parser.parse_args()
    command = " ".join(["python", "bench/search.py", *sys.argv[1:]])
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=120)
        before_bytes = int(client.info("memory")["used_memory"])
        started = time.perf_counter()
        trace_ids = load(server.url, options.records, options.traces)
        load_s = time.perf_counter() - started
        used_bytes = int(client.info("memory")["used_memory"]) - before_bytes
        print(f"$ {command}")
        print(f"loaded {options.records:,} log records and {2 * options.traces:,} spans in {load_s:.1f}s "
              f"({options.records / load_s:,.0f} records/s through the exporter's script)")  # fmt: skip
        rng = random.Random(1)
        sample = [format(rng.choice(trace_ids), "032x") for _ in range(2000)]
        lookups = iter(sample)
        trace_ms = timed(lambda: fetch_trace(client, STREAM, next(lookups)), len(sample))
        assert all(fetch_trace(client, STREAM, t).logs for t in sample[:10])
        warn_query = Query.parse(services=["svc-api"], severity="WARN")
        warn_ms = timed(lambda: search(client, STREAM, warn_query, limit=100), 50)
        assert len(search(client, STREAM, warn_query, limit=100).records) == 100
        rare_query = Query.parse(text=RARE)
        rare_ms = timed(lambda: search(client, STREAM, rare_query, limit=100), 2)
        assert len(search(client, STREAM, rare_query, limit=100).records) == RARE_COUNT
        fatal_query = Query.parse(services=["svc-api"], severity="FATAL")
        fatal_ms = timed(lambda: search(client, STREAM, fatal_query, limit=100), 2)
        hour_ago_ms = int(time.time() * 1000) - 3_600_000
        slowest = partial(
            recent_traces, client, STREAM, service="svc-api", sort="slowest", since_ms=hour_ago_ms, limit=50
        )
        slowest_ms = timed(slowest, 200)
        check_slowest(slowest(), client, hour_ago_ms, "svc-api")
        every_slowest = partial(recent_traces, client, STREAM, sort="slowest", since_ms=hour_ago_ms, limit=50)
        every_slowest_ms = timed(every_slowest, 200)
        check_slowest(every_slowest(), client, hour_ago_ms, None)
        newest = partial(recent_traces, client, STREAM, limit=50)
        newest_ms = timed(newest, 200)
        assert len({summary.trace_id for summary in newest()}) == 50
        failed = partial(recent_traces, client, STREAM, errors_only=True, limit=50)
        failed_ms = timed(failed, 200)
        assert len(failed()) == 50 and all(summary.error for summary in failed())
        live_ms = live_tail_latency(server.url, options.live)
        trace_index, digest = index_bytes(client)
        trace_list = _bytes_of(client, list(client.scan_iter(match=f"{STREAM}:traces*", count=5000)))

    rows = [
        ("trace lookup (index, logs + spans)", trace_ms, "p50 <= 2 ms, p99 <= 10 ms"),
        ("newest 100, one service, severity >= WARN", warn_ms, "<= 100 ms"),
        ("newest 100, one service, severity >= FATAL (sparse)", fatal_ms, "-"),
        (f"full scan for a rare substring ({RARE_COUNT} hits)", rare_ms, "<= 1000 ms"),
        ("slowest 50 traces, one service, last hour (trace list)", slowest_ms, "-"),
        ("slowest 50 traces, every service, last hour (trace list)", every_slowest_ms, "-"),
        ("newest 50 traces, every service (trace list)", newest_ms, "-"),
        ("newest 50 failed traces, every service (trace list)", failed_ms, "-"),
        ("live tail: logger.info -> tracestream tail --json line", live_ms, "p99 <= 500 ms"),
    ]
    print(f"\n{'measurement':58} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}  target")
    for name, values, target in rows:
        p50, p99 = statistics.median(values), percentile(values, 99)
        print(f"{name:58} {p50:9.2f} {p99:9.2f} {max(values):9.2f}  {target}")
    per_record = options.records
    print(f"\nRedis memory per log record (used_memory after loading, spans included, / {per_record:,}):")
    print(f"  with the indexes:    {used_bytes / per_record:.0f} B")
    without = (used_bytes - trace_index - digest - trace_list) / per_record
    print(f"  without the indexes: {without:.0f} B (trace index {trace_index / per_record:.0f} B,"
          f" search digest {digest / per_record:.0f} B, trace list {trace_list / per_record:.0f} B:"
          f" {trace_list / options.traces:.0f} B per trace)")  # fmt: skip


if __name__ == "__main__":
    main()
