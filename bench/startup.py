"""What setting up costs a short-lived process: a script that logs one line and exits.

Four contenders, each a fresh interpreter, alternating run by run; the median wall time from
start to exit, the export at exit included:
- bare: `logging.basicConfig()` and one line;
- upstream: the OpenTelemetry docs' manual logs setup (LoggerProvider, BatchLogRecordProcessor,
  OTLP over HTTP to a local receiver that answers 200, the SDK's LoggingHandler on root);
- configure(): tracestream to a private redis-server;
- launcher: the bare script under `opentelemetry-instrument` with tracestream's distro, and
  every instrumentation this environment has installed (`make test` installs what
  `opentelemetry-bootstrap` lists).

Run: .venv/bin/python bench/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import http.server
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tracestream.embedded_redis import EmbeddedRedis

BARE = """
import logging
logging.basicConfig()
logging.getLogger("app").warning("one line")
"""

UPSTREAM = """
import logging
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
provider = LoggerProvider()
set_logger_provider(provider)
provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
logging.basicConfig()
logging.getLogger().addHandler(LoggingHandler(logger_provider=provider))
logging.getLogger("app").warning("one line")
"""

CONFIGURED = """
import logging
import tracestream
tracestream.configure()
logging.basicConfig()
logging.getLogger("app").warning("one line")
"""

LAUNCHER = str(Path(sys.executable).parent / "opentelemetry-instrument")


class _Accepting(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - started
    if done.returncode != 0 or "one line" not in done.stderr:
        raise SystemExit(f"{command[-1][:40]!r} failed ({done.returncode}):\n{done.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Accepting)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACESTREAM_"))}
    with EmbeddedRedis() as redis, tempfile.TemporaryDirectory() as spool:
        ours = {**base, "TRACESTREAM_REDIS_URL": redis.url, "TRACESTREAM_SPOOL_DIR": spool}
        contenders = {
            "bare": ([sys.executable, "-c", BARE], base),
            "upstream (OTLP/HTTP)": (
                [sys.executable, "-c", UPSTREAM],
                {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_port}"},
            ),
            "configure()": ([sys.executable, "-c", CONFIGURED], ours),
            "launcher": (
                [LAUNCHER, sys.executable, "-c", BARE],
                {**ours, "OTEL_PYTHON_DISTRO": "tracestream", "OTEL_PYTHON_CONFIGURATOR": "tracestream"},
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(runs):
            for name, (command, env) in contenders.items():
                times[name].append(_timed(command, env))
    receiver.shutdown()
    bare = statistics.median(times["bare"])
    print(f"one logged line, then exit: median of {runs} runs, alternating (wall seconds)")
    for name, taken in times.items():
        median = statistics.median(taken)
        print(f"  {name:22} {median:.3f} s  (+{median - bare:.3f} s over bare; min {min(taken):.3f})")
    print(f"command: {sys.executable} bench/startup.py --runs {runs}")


if __name__ == "__main__":
    main()
