"""What reading structlog's and loguru's bound key/values costs a stdlib record.

Where structlog or loguru is imported, the logging call copies its context and the export
thread reads what `bind_contextvars` or `contextualize` bound from that copy. Three contenders,
each in a fresh process (an import cannot be undone), alternating round by round: neither
library imported; structlog imported, nothing bound; structlog imported with two keys bound.
Each process holds fifteen context variables of its own, as an app's request does.

Per record, the median of the rounds: the capture on the logging call's thread (the record's
values taken) and the attributes read on the export thread.

Run: .venv/bin/python bench/bound_context.py [--records 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextvars
import json
import logging
import statistics
import subprocess
import sys
import time

from tracestream.otel_setup.logging_bridge import PendingStdlibRecord

CONTENDERS = ("neither imported", "structlog imported", "structlog, two keys bound")


def _measure(contender: str, records: int) -> dict[str, float]:
    for number in range(15):
        contextvars.ContextVar(f"app_{number}").set(number)
    if contender != CONTENDERS[0]:
        import structlog

        if contender == CONTENDERS[2]:
            structlog.contextvars.bind_contextvars(request_id="rq-7", user="ada")
    record = logging.LogRecord("shop", logging.INFO, __file__, 1, "order %d", (7,), None)
    handler: object = None
    started = time.perf_counter()
    for _ in range(records):  # each let go at once, as the export thread lets them go
        pending = PendingStdlibRecord(record, "order 7", None, 0, handler)  # type: ignore[arg-type]
    captured = time.perf_counter()
    for _ in range(records):
        pending._attributes()
    read = time.perf_counter()
    return {
        "capture": (captured - started) / records * 1e6,
        "attributes": (read - captured) / records * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        print(json.dumps(_measure(args.contender, args.records)))
        return
    print(f"$ python bench/bound_context.py --records {args.records} --rounds {args.rounds}")
    runs: dict[str, list[dict[str, float]]] = {contender: [] for contender in CONTENDERS}
    for _ in range(args.rounds):
        for contender in CONTENDERS:
            command = [sys.executable, __file__, "--records", str(args.records), "--contender", contender]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[contender].append(json.loads(done.stdout))
    print(f"  {'contender':<28}{'capture':>12}{'attributes':>14}   (µs a record, median of {args.rounds})")
    for contender, results in runs.items():
        capture = statistics.median(r["capture"] for r in results)
        attributes = statistics.median(r["attributes"] for r in results)
        print(f"  {contender:<28}{capture:>12.2f}{attributes:>14.2f}")


if __name__ == "__main__":
    main()
