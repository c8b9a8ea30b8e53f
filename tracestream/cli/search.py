"""`tracestream search`: one page of matching records, newest first."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tracestream.cli.common import add_command, nothing_found, reader, settings, whole_number
from tracestream.cli.record_lines import FILTERS, STACKS, RecordPrinter, newest_first, query_from
from tracestream.query import Cursor, search

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "search",
        run,
        "find records, newest first",
        "Find records, newest first by their own time within a page. The next page's cursor is "
        "printed on stderr; so is a line saying nothing matched.",
        FILTERS,
        STACKS,
    )
    parser.add_argument(
        "-n", "--limit", type=whole_number(1), default=50, metavar="N", help="page size (default 50)"
    )
    parser.add_argument("--cursor", metavar="ID", help="continue where the previous page ended")


def run(args: argparse.Namespace) -> int:
    query = query_from(args)
    if args.cursor:
        Cursor.parse(args.cursor)
    printer = RecordPrinter(args)
    stream = settings(args).stream
    with reader(args) as client:
        page = search(client, stream, query, args.cursor, args.limit)
        if not page.records:
            nothing_found(args, client, f"no {'more ' if args.cursor else ''}matching records")
    for entry in newest_first(page.records):
        printer.print(entry)
    printer.flush()
    if page.next_cursor:
        print(f"more: add --cursor {page.next_cursor}", file=sys.stderr)
    return 0
