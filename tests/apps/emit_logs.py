"""A tiny service for subprocess tests: logs inside and outside a span, prints the trace id.

Usage: python -m tests.apps.emit_logs [--configure N] [--instrument-logging] [--debug-root] [--count N]
"""

from __future__ import annotations

import argparse
import json
import logging

from opentelemetry import trace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--configure", type=int, default=0, help="call tracestream.configure() this many times"
    )
    parser.add_argument(
        "--instrument-logging", action="store_true", help="also run upstream LoggingInstrumentor"
    )
    parser.add_argument(
        "--debug-root", action="store_true", help="root logger at DEBUG, to provoke feedback loops"
    )
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--fork", action="store_true", help="also log from a forked child")
    args = parser.parse_args()

    if args.debug_root:
        logging.getLogger().setLevel(logging.DEBUG)
    telemetry = None
    for _ in range(args.configure):
        import tracestream

        telemetry = tracestream.configure()
    if args.instrument_logging:
        from opentelemetry.instrumentation.logging import LoggingInstrumentor

        LoggingInstrumentor().instrument()

    logger = logging.getLogger("shop.orders")
    tracer = trace.get_tracer("shop")
    with tracer.start_as_current_span("checkout") as span:
        for i in range(args.count):
            logger.info("order %d placed", i, extra={"order.id": i})
        logger.warning("payment slow")
    logger.error("after the request")
    if args.fork:
        _log_from_forked_child(logger, telemetry)
    if telemetry is not None:
        telemetry.force_flush()
    handlers = [type(h).__name__ for h in logging.getLogger().handlers]
    print(
        json.dumps({"trace_id": format(span.get_span_context().trace_id, "032x"), "root_handlers": handlers})
    )


def _log_from_forked_child(logger: logging.Logger, telemetry: object) -> None:
    """A prefork-style child: its own Redis connection and pid, flushed before os._exit."""
    import os

    pid = os.fork()
    if pid == 0:
        logger.info("from the child")
        telemetry.force_flush()  # type: ignore[attr-defined]
        os._exit(0)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
