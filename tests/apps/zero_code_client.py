"""A script that calls another service over httpx: no tracestream code at all.

Usage: opentelemetry-instrument python -m tests.apps.zero_code_client URL
Prints the response's trace header and status as JSON.
"""

from __future__ import annotations

import json
import logging
import sys

import httpx

logger = logging.getLogger("client")


def main() -> None:
    response = httpx.get(sys.argv[1])
    logger.warning("called the api: %d", response.status_code)
    print(json.dumps({"status": response.status_code, "trace_id": response.headers.get("x-trace-id")}))


if __name__ == "__main__":
    main()
