"""What taking records below the handler tree costs `logger.info`, against a handler on root.

Both contenders hand each record to the same do-nothing sink, alternating in one process, so
the figure is the capture's own cost: the wrapped `isEnabledFor` and `filter`
against the stdlib walking up to one handler on root.

Run: .venv/bin/python bench/capture_cost.py [--records 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from tracestream.otel_setup import log_capture


class _Sink(logging.Handler):
    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        return True


def _per_call_us(logger: logging.Logger, records: int) -> float:
    started = time.perf_counter()
    for number in range(records):
        logger.info("order %d placed", number)
    return (time.perf_counter() - started) / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root, sink, logger = logging.getLogger(), _Sink(), logging.getLogger("shop.orders")
    timings: dict[str, list[float]] = {"handler on root": [], "capture below the tree": []}
    for _ in range(args.rounds):
        root.addHandler(sink)
        root.setLevel(logging.INFO)
        timings["handler on root"].append(_per_call_us(logger, args.records))
        root.removeHandler(sink)
        root.setLevel(logging.WARNING)
        log_capture.install(log_capture.LogCapture(sink, logging.INFO))
        timings["capture below the tree"].append(_per_call_us(logger, args.records))
        log_capture.uninstall()
    print(f"command: bench/capture_cost.py --records {args.records} --rounds {args.rounds}")
    for name, values in timings.items():
        rounds = ", ".join(f"{value:.2f}" for value in values)
        print(f"  {name:24s} logger.info median {statistics.median(values):.2f} us  (rounds: {rounds})")


if __name__ == "__main__":
    main()
