"""`tracestream forward`: deliver the streams to an OpenTelemetry Collector over OTLP/HTTP.

See docs/scale-out.md: at-least-once, several forwarders share one consumer group, SIGTERM
finishes the batch in flight.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING
from urllib.parse import unquote

from tracestream.cli.common import UsageError, add_command, duration_up_to, settings, whole_number
from tracestream.connection import Tls
from tracestream.forwarder import DEFAULT_ENDPOINT, DEFAULT_GROUP, Forwarder, ForwardError, ForwardSettings

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers

MAX_BATCH = 1_000_000
LONGEST_CLAIM_IDLE = 30 * 86400.0
LONGEST_TIMEOUT = 3600.0


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "forward",
        run,
        "forward records to an OTLP/HTTP endpoint (Collector), at least once",
        "Read the log and span streams through a consumer group and post them as OTLP/HTTP protobuf; "
        "acknowledge only what the endpoint accepted. Run several to share the load.",
    )
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT,
        metavar="URL",
        help=f"OTLP/HTTP base URL; /v1/logs and /v1/traces are appended "
        f"(default: $OTEL_EXPORTER_OTLP_ENDPOINT or {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="HTTP header for every request, repeatable (default: $OTEL_EXPORTER_OTLP_HEADERS)",
    )
    parser.add_argument("--group", default=DEFAULT_GROUP, help=f"consumer group (default {DEFAULT_GROUP})")
    parser.add_argument("--consumer", help="consumer name in the group (default: host-pid)")
    parser.add_argument(
        "--batch-size", type=whole_number(1, MAX_BATCH), default=2000, metavar="N", help="default 2000"
    )
    parser.add_argument(
        "--claim-idle",
        type=duration_up_to(LONGEST_CLAIM_IDLE),
        default=30.0,
        metavar="DURATION",
        help="take over entries another forwarder read but left unacknowledged this long (default 30s)",
    )
    parser.add_argument(
        "--timeout",
        type=duration_up_to(LONGEST_TIMEOUT),
        default=10.0,
        metavar="DURATION",
        help="per request",
    )
    parser.add_argument(
        "--from-now", action="store_true", help="a new group starts after the newest entry, not the oldest"
    )


def run(args: argparse.Namespace) -> int:
    config = settings(args)
    options = {"consumer": args.consumer} if args.consumer else {}
    try:
        forward_settings = ForwardSettings(
            redis_url=config.redis_url,
            stream=config.stream,
            endpoint=args.endpoint,
            group=args.group,
            batch_size=args.batch_size,
            claim_idle=args.claim_idle,
            timeout=args.timeout,
            headers=_headers(args.header or _env_headers()),
            start_at_end=args.from_now,
            tls=Tls.of(config),
            cluster=config.redis_cluster,
            **options,
        )
        forwarder = Forwarder(forward_settings, report=_report)
    except ValueError as error:
        raise UsageError(str(error)) from None

    def stop(signum: int, frame: object) -> None:
        _report(f"{signal.Signals(signum).name}: stopping after the batch in flight")
        forwarder.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        forwarder.run()
    except ForwardError as error:
        _report(f"error: {error}")
        return 2
    return 0


def _report(line: str) -> None:
    print(f"tracestream forward: {line}", file=sys.stderr, flush=True)


def _env_headers() -> list[str]:
    """$OTEL_EXPORTER_OTLP_HEADERS is `name=value,name=value` with URL-encoded values."""
    raw = os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", "")
    return [unquote(item) for item in raw.split(",") if item.strip()]


def _headers(items: list[str]) -> dict[str, str]:
    headers = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"header {item!r} is not NAME=VALUE")
        headers[name.strip()] = value.strip()
    return headers
