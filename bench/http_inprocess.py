"""One in-process HTTP overhead measurement: `http_overhead.py --in-process` runs this per contender.

The app (the same factories the servers use) is called directly, ASGI for FastAPI and WSGI
for Django: no server, no socket, no load generator sharing the cores. The clock is
`time.process_time()`, the CPU of every thread of this process, around N requests and the
flush that waits for their export, so the batch export threads are counted too. Redis
runs in its own process; its CPU over the same span is read from /proc and reported apart.

Run alone: .venv/bin/python bench/http_inprocess.py fastapi tracestream [--requests 2000]
(the tracestream contender needs TRACESTREAM_REDIS_URL; http_overhead.py starts a Redis).
Prints one JSON line: {"cpu_us": ..., "redis_us": ..., "requests": ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import callgrind
import http_overhead

__all__ = ["asgi_driver", "contender_arguments", "flush_for", "measure", "warmed_up", "wsgi_driver"]

Driver = Callable[[int], None]


def asgi_driver(app: Any) -> Driver:
    """Runs N `GET` requests through an ASGI app in one event loop, checking each answers 200."""
    path, _, query = http_overhead.PATH.partition("?")

    async def one() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"bench")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        if status != 200:
            raise RuntimeError(f"unexpected status {status}")

    async def many(count: int) -> None:
        for _ in range(count):
            await one()

    loop = asyncio.new_event_loop()
    return lambda count: loop.run_until_complete(many(count))


def wsgi_driver(app: Any) -> Driver:
    """Runs N `GET` requests through a WSGI app, reading and closing each response as a server does."""
    path, _, query = http_overhead.PATH.partition("?")

    def one() -> None:
        environ = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_USER_AGENT": "bench",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        statuses: list[str] = []
        body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
        try:
            for _ in body:
                pass
        finally:
            getattr(body, "close", lambda: None)()
        if not statuses or not statuses[0].startswith("200"):
            raise RuntimeError(f"unexpected status {statuses}")

    def many(count: int) -> None:
        for _ in range(count):
            one()

    return many


def flush_for(mode: str) -> Callable[[], None]:
    """What waits for this contender's export: tracestream's queues, or the SDK's batch processor."""
    if mode == "tracestream":
        from tracestream.otel_setup.telemetry import installed

        telemetry = installed()
        if telemetry is None:
            raise RuntimeError("configure() did not run")
        return lambda: _check(telemetry.force_flush(30.0))
    if mode in http_overhead.CONTRIB_MODES:
        from opentelemetry import trace

        provider: Any = trace.get_tracer_provider()
        return lambda: _check(provider.force_flush(30_000))
    return lambda: None


def _check(flushed: bool) -> None:
    if not flushed:
        raise RuntimeError("the flush timed out")


def _process_cpu_seconds(pid: int | None) -> float:
    """utime + stime of another process (Redis), from /proc; 0 when not known."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _callgrind(state: str) -> None:
    """Under callgrind (`http_overhead.py --callgrind`), count instructions of the measured part only."""
    if os.environ.get("BENCH_CALLGRIND"):
        callgrind.collect(state)


def warmed_up(framework: str, mode: str, warmup: int) -> tuple[Driver, Callable[[], None]]:
    """The contender's app behind its driver, after `warmup` requests and their export."""
    os.environ["BENCH_MODE"] = mode
    if framework == "fastapi":
        drive = asgi_driver(http_overhead.fastapi_app())
    else:
        drive = wsgi_driver(http_overhead.django_app())
    flush = flush_for(mode)
    drive(warmup)
    flush()
    return drive, flush


def measure(framework: str, mode: str, requests: int, warmup: int, redis_pid: int | None) -> dict[str, float]:
    """CPU per request of this process (all threads, export included) and of Redis, in µs."""
    drive, flush = warmed_up(framework, mode, warmup)
    redis_started = _process_cpu_seconds(redis_pid)
    _callgrind("on")
    started = time.process_time()
    drive(requests)
    flush()
    cpu = time.process_time() - started
    _callgrind("off")
    redis_cpu = _process_cpu_seconds(redis_pid) - redis_started
    return {"cpu_us": cpu / requests * 1e6, "redis_us": redis_cpu / requests * 1e6, "requests": requests}


def contender_arguments(description: str | None) -> argparse.ArgumentParser:
    """The command line that names one contender and how many requests it serves."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("framework", choices=http_overhead.FRAMEWORKS)
    parser.add_argument("mode", choices=http_overhead.IN_PROCESS_MODES)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    return parser


def main() -> None:
    parser = contender_arguments(__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-pid", type=int)
    args = parser.parse_args()
    print(json.dumps(measure(args.framework, args.mode, args.requests, args.warmup, args.redis_pid)))


if __name__ == "__main__":
    main()
