"""What a `multiprocessing.Pool` task that logs costs with tracestream, against without it.

A Pool worker writes its records before each result goes back (docs/reliability.md), so a
task that logs waits for one write to Redis. Each contender is a fresh script mapping tasks
that log one line each over two fork workers, one task a chunk (`imap`, the worst case) and
`map`'s own chunks; the rounds alternate, against one embedded Redis.

Run: .venv/bin/python bench/pool_tasks.py [--tasks 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from tracestream.embedded_redis import EmbeddedRedis

SCRIPT = """
import logging, multiprocessing, sys, time
import tracestream

tasks, chunked, configured = int(sys.argv[1]), sys.argv[2] == "map", sys.argv[3] == "tracestream"
if configured:
    tracestream.configure(service_name="pool-bench")
log = logging.getLogger("pool.bench")


def task(number):
    log.warning("task %d done", number)
    return number


with multiprocessing.get_context("fork").Pool(2) as pool:
    pool.map(task, range(4))  # the workers are up and have written once
    started = time.perf_counter()
    if chunked:
        pool.map(task, range(tasks))
    else:
        list(pool.imap(task, range(tasks), chunksize=1))
    print((time.perf_counter() - started) / tasks * 1e6)
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    contenders = [(shape, setup) for shape in ("imap", "map") for setup in ("bare", "tracestream")]
    timings: dict[tuple[str, str], list[float]] = {contender: [] for contender in contenders}
    with EmbeddedRedis() as redis, tempfile.TemporaryDirectory() as spool:
        env = dict(os.environ, TRACESTREAM_REDIS_URL=redis.url, TRACESTREAM_SPOOL_DIR=spool)
        for _ in range(args.rounds):
            for shape, setup in contenders:
                command = [sys.executable, "-c", SCRIPT, str(args.tasks), shape, setup]
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                timings[shape, setup].append(float(done.stdout))
    print(f"command: bench/pool_tasks.py --tasks {args.tasks} --rounds {args.rounds}")
    for (shape, setup), values in timings.items():
        rounds = ", ".join(f"{value:.0f}" for value in values)
        chunks = "one task a chunk" if shape == "imap" else "map's chunks"
        median = statistics.median(values)
        print(f"  {chunks:17s} {setup:12s} median {median:6.0f} us a task  (rounds: {rounds})")


if __name__ == "__main__":
    main()
