"""Forwarder throughput (Redis -> OTLP/HTTP) against the exporter's write rate, in one run.

Three timed phases on one private redis-server and one local OTLP/HTTP receiver (a separate
process that decodes every request with the opentelemetry-proto classes and counts records):

  a) export:  a service process logs N records through tracestream.configure() into Redis
  b) drain:   `tracestream forward` (the Forwarder, in this process) sends that backlog to the receiver
  c) live:    a service logs N more records while the forwarder runs; the forwarder keeps up if it
              finishes shortly after the exporter does

Run: .venv/bin/python bench/forward.py [--records 100000] [--batch-size 2000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import redis

from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.forwarder import Forwarder, ForwardSettings, forwarder_lag

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
count = 0
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/logs":
            request = ExportLogsServiceRequest.FromString(body)
            count += sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
        else:
            request = ExportTraceServiceRequest.FromString(body)
            count += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def do_GET(self):
        body = str(count).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

SERVICE = """
import logging, sys, time, tracestream
url, stream, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
telemetry = tracestream.configure(service_name="bench", redis_url=url, stream=stream, max_entries=0,
                                  traces_exporter="none")
log = logging.getLogger("bench.app")
start = time.perf_counter()
for i in range(count):
    log.info("order %s shipped to %s", i, "warehouse-7", extra={"order.id": i, "customer": "c-42"})
telemetry.force_flush(timeout=300)
print(time.perf_counter() - start)
"""


def export(url: str, stream: str, count: int) -> float:
    """Seconds a service took to log `count` records and have them all in Redis."""
    # The queue holds the whole burst, so every record is written and the phases compare like for like.
    env = {**os.environ, "OTEL_BLRP_MAX_QUEUE_SIZE": str(count + 1)}
    done = subprocess.run(
        [sys.executable, "-c", SERVICE, url, stream, str(count)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return float(done.stdout.strip().splitlines()[-1])


def received(endpoint: str) -> int:
    with urllib.request.urlopen(endpoint, timeout=5) as answer:
        return int(answer.read())


def wait_received(endpoint: str, target: int, timeout: float = 300) -> float:
    """Monotonic time at which the receiver had `target` records."""
    deadline = time.monotonic() + timeout
    while received(endpoint) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"receiver has {received(endpoint)} of {target} records")
        time.sleep(0.01)
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    args = parser.parse_args()
    n = args.records
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        with EmbeddedRedis() as server:
            wait_for_receiver(endpoint)
            stream = f"bench:fwd:{uuid.uuid4().hex[:8]}"
            export_seconds = export(server.url, stream, n)

            settings = ForwardSettings(
                redis_url=server.url, stream=stream, endpoint=endpoint, batch_size=args.batch_size, block=0.1
            )
            forwarder = Forwarder(settings, report=lambda line: None)
            thread = threading.Thread(target=forwarder.run, daemon=True)
            started, cpu_started = time.monotonic(), time.process_time()
            thread.start()
            drain_seconds = wait_received(endpoint, n) - started
            # CPU of this process (the forwarder's threads; exporter and receiver are other processes):
            # the figure a busy 2-core machine cannot distort.
            drain_cpu = time.process_time() - cpu_started

            live_started = time.monotonic()
            live_export_seconds = export(server.url, stream, n)
            exporter_done = time.monotonic()
            forwarder_done = wait_received(endpoint, 2 * n)
            forwarder.stop()
            thread.join(30)
            lag = forwarder_lag(redis.Redis.from_url(server.url), stream)
    finally:
        receiver.terminate()
        receiver.wait()

    export_rate, drain_rate = n / export_seconds, n / drain_seconds
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"records per phase: {n}, forwarder batch size: {args.batch_size}")
    print(f"a) exporter, one process, logging -> Redis:      {export_rate:>9,.0f} records/s")
    print(
        f"b) forwarder, backlog Redis -> OTLP receiver:    {drain_rate:>9,.0f} records/s "
        f"({n / drain_cpu:,.0f} records per CPU-second)"
    )
    print(
        f"c) live: exporter {n / live_export_seconds:,.0f} records/s; forwarder delivered the last record "
        f"{forwarder_done - exporter_done:.2f}s after the exporter finished "
        f"({n / (forwarder_done - live_started):,.0f} records/s end to end)"
    )
    print(f"forwarder / exporter ratio: {drain_rate / export_rate:.2f}; target >= 30,000 records/s")
    print(f"left pending: {sum(s.pending for s in lag)}")


def wait_for_receiver(endpoint: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            received(endpoint)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    main()
