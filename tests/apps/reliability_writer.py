"""A writer for fault-injection tests: logs numbered records ("rec <i>") at a steady rate.

Usage: python -m tests.apps.reliability_writer [--count N] [--label L] [--rate R] [--then ...]
Prints `logged <i>` every 100 records, then one JSON line: the log queue's status and the
slowest `logger.info` call.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import tracestream


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000, help="records to log; -1 = until signalled")
    parser.add_argument("--label", default="rec", help="records read `<label> <i>`")
    parser.add_argument("--rate", type=float, default=2000.0, help="records per second")
    parser.add_argument(
        "--then",
        default="exit",
        help="after logging: exit; `spooled` = wait until all are in the spool, then sleep;"
        " `replayed:N` = wait until N spooled records of an earlier process are replayed",
    )
    args = parser.parse_args()

    telemetry = tracestream.configure(traces_exporter="none")
    queue = telemetry.log_processors[0].queue
    logger = logging.getLogger("reliability")
    slowest = 0.0
    started = time.perf_counter()
    i = 0
    while args.count < 0 or i < args.count:
        due = started + i / args.rate
        while (ahead := due - time.perf_counter()) > 0:
            time.sleep(min(0.002, ahead))
        before = time.perf_counter()
        logger.info("%s %d", args.label, i)
        slowest = max(slowest, time.perf_counter() - before)
        i += 1
        if i % 100 == 0:
            print(f"logged {i}", flush=True)

    if args.then == "spooled":
        while queue.counters.spooled < args.count:
            time.sleep(0.01)
        print("spooled", flush=True)
        time.sleep(3600)
    elif args.then.startswith("replayed:"):
        wanted = int(args.then.split(":", 1)[1])
        while queue.counters.replayed < wanted:
            time.sleep(0.01)
    telemetry.force_flush(timeout=10)
    print(json.dumps({**queue.status(), "slowest_info_s": slowest}), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
