"""A small service for `make demo`: one traced request that logs, run under the launcher.

    opentelemetry-instrument python examples/hello_service.py

It prints the trace id of the request it handled.
"""

from __future__ import annotations

import logging
import time

from opentelemetry import trace

logger = logging.getLogger("hello.orders")
tracer = trace.get_tracer("hello")


def handle_order(order_id: int) -> None:
    with tracer.start_as_current_span("POST /orders") as span:
        logger.info("order %d received", order_id, extra={"order.id": order_id})
        with tracer.start_as_current_span("reserve stock"):
            time.sleep(0.01)
            logger.info("stock reserved for order %d", order_id)
        with tracer.start_as_current_span("charge card"):
            logger.warning("payment provider slow: %d ms", 850)
        try:
            raise TimeoutError("mail server did not answer")
        except TimeoutError:
            logger.exception("confirmation mail for order %d not sent", order_id)
        print(format(span.get_span_context().trace_id, "032x"), flush=True)


if __name__ == "__main__":
    handle_order(1042)
