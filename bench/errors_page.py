"""Error issues at scale: `list_issues` (what the console's Errors page and `tracestream errors`
read) with 10,000 distinct fingerprints in a private Redis.

Run: .venv/bin/python bench/errors_page.py [--fingerprints 10000] [--rounds 50]

Error records are written by the real exporter path (StreamWriter, the append script keeping
the issues), three per fingerprint over ten services, with a stack trace whose innermost app
frame differs per fingerprint; a tenth of the issues are then resolved. Timed, each `--rounds`
times: the default page (newest 200), the page filtered by service, by status (resolved: the
script reads each issue's status until it has 200), and one issue by fingerprint; then the same
through the console's JSON endpoint (`GET api/errors`, `api/errors/<fingerprint>`) served by a real
`tracestream console` process, wall clock over HTTP (the JSON and the thread-pool hop included).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from itertools import product
from pathlib import Path

import httpx
from opentelemetry.sdk.resources import Resource

from tracestream import schema
from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.error_issues import get_issue, list_issues, set_status
from tracestream.exporters import encoding
from tracestream.exporters.redis_stream import RedisStreamLogExporter
from tracestream.settings import Settings

STREAM = "bench:errors"
SERVICES = [f"svc-{n}" for n in range(10)]
PER_FINGERPRINT = 3
TARGET_MS = 200.0


def names(count: int) -> list[str]:
    """`count` distinct lowercase words (no digits: numbers would be masked out of a message)."""
    words = (
        "".join(letters) for size in range(1, 5) for letters in product(string.ascii_lowercase, repeat=size)
    )
    return [next(words) for _ in range(count)]


def stack(function: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "/srv/shop/app/views.py", line 12, in handle\n    run()\n'
        f'  File "/srv/shop/app/jobs.py", line 40, in {function}\n    raise\n'
        '  File "/venv/lib/python3.12/site-packages/lib/core.py", line 9, in call\n    raise\n'
        "ValueError: broken\n"
    )


def write_errors(url: str, fingerprints: int) -> float:
    """Seconds to write every error record through the exporter's writer."""
    settings = Settings.load(environ={}, redis_url=url, stream=STREAM, max_entries=0)
    writer = RedisStreamLogExporter(settings).writer
    resources = [
        encoding.EncodedResource.of(Resource({"service.name": s, "process.pid": 1})) for s in SERVICES
    ]
    ids = schema.RecordIds()
    rows = []
    for n, word in enumerate(names(fingerprints)):
        for k in range(PER_FINGERPRINT):
            now = time.time_ns()
            rows.append(
                encoding.log_values(
                    ids.next(), now, "ERROR", 17, f"job {word} failed", resources[n % len(SERVICES)],
                    (n << 16) + k + 1, k + 1, 1, "app", "", {"http.route": f"/jobs/{n % 50}"},
                    ("ValueError", "broken", stack(f"job_{word}")),
                )
            )  # fmt: skip
    started = time.perf_counter()
    for start in range(0, len(rows), 2048):
        assert writer.write_rows(rows[start : start + 2048])
    writer.close()
    return time.perf_counter() - started


@contextlib.contextmanager
def console(redis_url: str) -> Iterator[httpx.Client]:
    """`tracestream console` over the bench stream, and an HTTP client at its address."""
    port = free_port()
    env = {**os.environ, "TRACESTREAM_REDIS_URL": redis_url, "TRACESTREAM_STREAM": STREAM}
    env.pop("TRACESTREAM_CONSOLE_TOKEN", None)
    command = [str(Path(sys.executable).parent / "tracestream"), "console", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}/", timeout=10)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get("api/errors/0123456789abcdef")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(10)


def fetched(client: httpx.Client, path: str) -> list[object]:
    """One answer of the console's endpoint: its issues, or the one issue."""
    answer = client.get(path)
    answer.raise_for_status()
    found = answer.json()
    return list(found["issues"]) if "issues" in found else [found["issue"]]


def timed(
    rounds: int, call: Callable[[], object], server_cpu: Callable[[], float]
) -> tuple[list[float], float, object]:
    """Wall-clock ms of each of `rounds` calls, CPU ms per call (this process and Redis), the last result.

    CPU time holds on a loaded machine, where the wall clock mostly measures waiting for a core."""
    timings, result = [], None
    cpu_before, server_before = time.process_time(), server_cpu()
    for _ in range(rounds):
        start = time.perf_counter()
        result = call()
        timings.append((time.perf_counter() - start) * 1000)
    cpu = (time.process_time() - cpu_before + server_cpu() - server_before) * 1000 / rounds
    return sorted(timings), cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fingerprints", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    with EmbeddedRedis() as server:
        seconds = write_errors(server.url, args.fingerprints)
        client = server.client()
        issues = client.zcard(schema.StreamKeys(STREAM).issues)
        assert issues == args.fingerprints, f"{issues} issues for {args.fingerprints} fingerprints"
        every = list_issues(client, STREAM, limit=args.fingerprints)
        for issue in every[::10]:
            set_status(client, STREAM, issue.fingerprint, "resolved")
        probe = every[len(every) // 2].fingerprint
        cases: list[tuple[str, Callable[[], object]]] = [
            ("newest 200", lambda: list_issues(client, STREAM)),
            ("newest 200 of one service", lambda: list_issues(client, STREAM, service="svc-3")),
            ("newest 200 resolved", lambda: list_issues(client, STREAM, status="resolved")),
            ("one issue by fingerprint", lambda: get_issue(client, STREAM, probe)),
        ]
        records = args.fingerprints * PER_FINGERPRINT
        print(f"command: {' '.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}")
        print(f"{args.fingerprints:,} fingerprints, {records:,} error records written in {seconds:.1f} s")
        print(
            f"{args.rounds} rounds; machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )

        def server_cpu() -> float:
            cpu = client.info("cpu")
            return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

        for label, call in cases:
            report(label, *timed(args.rounds, call, server_cpu))
        with console(server.url) as http:
            print("the console's endpoint (CPU: this process and Redis, not the console's)")
            for label, path in (
                ("GET api/errors", "api/errors"),
                ("GET api/errors?service=svc-3", "api/errors?service=svc-3"),
                ("GET api/errors?status=resolved", "api/errors?status=resolved"),
                ("GET api/errors/<fingerprint>", f"api/errors/{probe}"),
            ):
                fetched(http, path)  # warm: the script loaded, the connection open
                report(label, *timed(args.rounds, partial(fetched, http, path), server_cpu))
        client.close()


def report(label: str, timings: list[float], cpu: float, result: object) -> None:
    p50, p99 = statistics.median(timings), timings[min(len(timings) - 1, int(len(timings) * 0.99))]
    shown = len(result) if isinstance(result, list) else 1
    print(
        f"  {label:30s} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  CPU {cpu:5.1f} ms/call"
        f"  ({shown} issues; target <= {TARGET_MS:.0f} ms)"
    )


if __name__ == "__main__":
    main()
