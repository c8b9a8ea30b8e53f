"""`tracestream tail`: the newest records, then new ones as they arrive, until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from tracestream.cli.common import (
    add_command,
    describe_redis_error,
    error_line,
    reader,
    settings,
    whole_number,
)
from tracestream.cli.record_lines import FILTERS, STACKS, RecordPrinter, oldest_first, query_from
from tracestream.query import Follow, Query, follow, search

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers

BLOCK_MS = 1000


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "tail",
        run,
        "follow records live",
        "Print the newest records, oldest first by their own time, then follow new ones as they "
        "arrive; survives Redis reconnects.",
        FILTERS,
        STACKS,
    )
    parser.add_argument(
        "-n",
        "--lines",
        type=whole_number(0),
        default=10,
        metavar="N",
        help="records to show first (default 10)",
    )


def run(args: argparse.Namespace) -> int:
    query = query_from(args)
    config = settings(args)
    printer = RecordPrinter(args)
    # The socket timeout must outlast one blocking read.
    with reader(args, timeout=config.redis_timeout + BLOCK_MS / 1000) as client:
        state = Follow.at_end(client, config.stream)
        backlog = search(client, config.stream, query, None, args.lines)
        state.skip(backlog.records)  # written since at_end: shown now, not again
        for record in oldest_first(backlog.records):
            printer.print(record)
        printer.flush()
        if _ended(query):  # nothing arriving now can be within --until
            return 0
        disconnected = False

        def on_disconnect(error: Exception) -> None:
            nonlocal disconnected
            if not disconnected:
                error_line(f"{describe_redis_error(error)}; reconnecting")
            disconnected = True

        live = follow(client, config.stream, query, state, block_ms=BLOCK_MS, on_disconnect=on_disconnect)
        for entry in live:
            if disconnected:
                print("tracestream: reconnected", file=sys.stderr)
                disconnected = False
            if entry is not None:
                printer.print(entry)
            printer.flush()
            if _ended(query):
                return 0
    return 0


def _ended(query: Query) -> bool:
    """`--until` has passed: a record written from now on is newer than any it admits."""
    return query.until_ms is not None and time.time() * 1000 > query.until_ms
