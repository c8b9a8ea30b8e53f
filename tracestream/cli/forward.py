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
SIGNALS = ("LOGS", "TRACES")  # as the OTEL_EXPORTER_OTLP_<SIGNAL>_* variables name them
SUPPORTED_PROTOCOL = "http/protobuf"
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
        metavar="URL",
        help=f"OTLP/HTTP base URL; /v1/logs and /v1/traces are appended (default: "
        f"$OTEL_EXPORTER_OTLP_LOGS_ENDPOINT / _TRACES_ENDPOINT as given, else "
        f"$OTEL_EXPORTER_OTLP_ENDPOINT or {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="HTTP header for every request, repeatable (default: $OTEL_EXPORTER_OTLP_LOGS_HEADERS / "
        "_TRACES_HEADERS, else $OTEL_EXPORTER_OTLP_HEADERS)",
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
    for signal_name in SIGNALS:
        _check_protocol(signal_name)
    options = {"consumer": args.consumer} if args.consumer else {}
    try:
        forward_settings = ForwardSettings(
            redis_url=config.redis_url,
            stream=config.stream,
            endpoint=args.endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT,
            group=args.group,
            batch_size=args.batch_size,
            claim_idle=args.claim_idle,
            timeout=args.timeout,
            headers=_headers(args.header or _env_headers("OTEL_EXPORTER_OTLP_HEADERS")),
            start_at_end=args.from_now,
            tls=Tls.of(config),
            cluster=config.redis_cluster,
            logs_endpoint=_signal_endpoint(args, "LOGS"),
            traces_endpoint=_signal_endpoint(args, "TRACES"),
            logs_headers=_signal_headers(args, "LOGS"),
            traces_headers=_signal_headers(args, "TRACES"),
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


def _check_protocol(signal_name: str) -> None:
    """Only http/protobuf is spoken: protobuf posted to a gRPC port would be retried forever."""
    for name in (f"OTEL_EXPORTER_OTLP_{signal_name}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = os.environ.get(name, "").strip()
        if value == SUPPORTED_PROTOCOL:
            return
        if value:
            raise UsageError(
                f"{name}={value}: tracestream forward speaks only {SUPPORTED_PROTOCOL} "
                f"(OTLP/HTTP, port 4318 on a Collector); set it to {SUPPORTED_PROTOCOL} or unset it"
            )


def _signal_endpoint(args: argparse.Namespace, signal_name: str) -> str | None:
    """$OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT is a full URL, used as given (the OTel spec); --endpoint wins."""
    if args.endpoint:
        return None
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal_name}_ENDPOINT", "").strip() or None


def _signal_headers(args: argparse.Namespace, signal_name: str) -> dict[str, str] | None:
    """$OTEL_EXPORTER_OTLP_<SIGNAL>_HEADERS replaces the general ones for its signal; --header wins."""
    variable = f"OTEL_EXPORTER_OTLP_{signal_name}_HEADERS"
    if args.header or not os.environ.get(variable, "").strip():
        return None
    return _headers(_env_headers(variable))


def _env_headers(variable: str) -> list[str]:
    """The headers variables are `name=value,name=value` with URL-encoded values."""
    raw = os.environ.get(variable, "")
    return [unquote(item) for item in raw.split(",") if item.strip()]


def _headers(items: list[str]) -> dict[str, str]:
    headers = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"header {item!r} is not NAME=VALUE")
        headers[name.strip()] = value.strip()
    return headers
