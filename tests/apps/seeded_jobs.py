"""A script whose jobs seed `random` for output they can repeat (a simulation, a sampled report):
each job seeds it, then draws three numbers inside a span of its own and prints them, with the
span's ids, as a JSON line. `--fork` then forks, and child, then parent, each run one job more.

Usage: python -m tests.apps.seeded_jobs [--configure] [--jobs N] [--fork]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random

from opentelemetry import trace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configure", action="store_true", help="call tracestream.configure() first")
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--fork", action="store_true", help="then fork: parent and child run a job each")
    args = parser.parse_args()
    telemetry = None
    if args.configure:
        import tracestream

        telemetry = tracestream.configure()
    for number in range(args.jobs):
        _job(f"job {number}", "parent")
    if args.fork:
        child = os.fork()
        if child == 0:
            _job("after fork", "child")
            os._exit(0)
        os.waitpid(child, 0)  # then the parent's job: their lines never interleave
        _job("after fork", "parent")
    if telemetry is not None:
        telemetry.force_flush()


def _job(name: str, role: str) -> None:
    random.seed(42)
    with trace.get_tracer("seeded").start_as_current_span(name) as span:
        numbers = [random.randint(0, 999) for _ in range(3)]
        logging.getLogger("seeded").warning("%s drew %s", name, numbers)
    context = span.get_span_context()
    line = {"job": name, "role": role, "numbers": numbers}
    line.update(trace_id=format(context.trace_id, "032x"), span_id=format(context.span_id, "016x"))
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
