"""`tracestream console`: the read-only web console, on 127.0.0.1:8686 by default (docs/console.md)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from tracestream.cli.common import OPTIONS, PORT, UsageError, error_line, settings
from tracestream.console.address import DEFAULT_HOST, DEFAULT_PORT, WILDCARD_ADDRESSES
from tracestream.settings import installing

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "console",
        parents=[OPTIONS],  # type: ignore[list-item]  # argparse accepts any parser as a parent
        help="serve the web console: live tail, search, traces, services, stats",
        description="Serve the read-only web console; off loopback it needs TRACESTREAM_CONSOLE_TOKEN.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=PORT, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        dest="allowed_hosts",
        metavar="NAME",
        help="a host name the console may be reached by besides loopback "
        "(repeatable; also TRACESTREAM_CONSOLE_ALLOWED_HOSTS)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = settings(args)
    try:
        from tracestream.console.auth import ConsoleAuthError, require_token_off_loopback
        from tracestream.console.server import ConsoleBindError, allowed_hosts, listen, serve
        from tracestream.settings import CONSOLE_TOKEN_ENV
    except ImportError as missing:  # the other commands need none of it
        raise UsageError(
            f"the console needs the console extra ({missing.name} is not installed): {installing('console')}"
        ) from None
    try:  # serve() checks too; here it keeps a URL that will not serve from being printed
        require_token_off_loopback(args.host, os.environ.get(CONSOLE_TOKEN_ENV, "").strip() or None)
    except ConsoleAuthError as error:
        raise UsageError(str(error)) from None
    try:  # bound before the URL is printed: a port in use is said instead of a URL that is not ours
        listening = listen(args.host, args.port)
    except ConsoleBindError as error:
        error_line(str(error))
        return 1
    print(f"tracestream console on {console_url(args.host, args.port)} (Ctrl-C stops it)", flush=True)
    if args.host in WILDCARD_ADDRESSES and not allowed_hosts(args.host, args.allowed_hosts):
        error_line(
            f"the console binds {args.host} and answers other machines only by the names "
            "--allowed-host gives (none given): add the name or address they open it by"
        )
    return serve(config, listening, args.host, args.allowed_hosts)


def console_url(host: str, port: int) -> str:
    """Where a browser on this machine finds the console; a wildcard address is reached on loopback,
    the one name it answers to without --allowed-host."""
    if host in WILDCARD_ADDRESSES:
        host = "::1" if ":" in host else "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
