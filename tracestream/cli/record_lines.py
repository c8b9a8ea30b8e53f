"""How tail, search and trace print a record for people, and the filter options they share with export."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

from rich.text import Text

from tracestream.cli.common import (
    TIME_FORMS,
    ArgumentParser,
    Console,
    UsageError,
    print_json,
    printable,
    since_argument,
    time_argument,
)
from tracestream.query import Query, QueryError, record_json
from tracestream.schema import LogEntry
from tracestream.timeparse import iso_utc

FILTERS = ArgumentParser(add_help=False)
_group = FILTERS.add_argument_group("filters (combined with AND)")
_group.add_argument("--trace-id", metavar="ID", help="records of one trace (answered from the trace index)")
_group.add_argument(
    "-s", "--service", action="append", default=[], metavar="NAME", help="service; repeat or comma-separate"
)
_group.add_argument("-l", "--severity", metavar="LEVEL", help="minimum: DEBUG, INFO, WARN, ERROR, FATAL")
_group.add_argument(
    "--since", type=since_argument, metavar="TIME", help=f"{TIME_FORMS}: 15m, 2h, 3d; not in the future"
)
_group.add_argument("--until", type=time_argument, metavar="TIME", help=TIME_FORMS)
_group.add_argument("-g", "--grep", metavar="TEXT", help="substring of the message or exception")
_group.add_argument("-e", "--regex", metavar="PATTERN", help="RE2 regular expression on message or exception")
_group.add_argument(
    "-a", "--attr", action="append", default=[], metavar="KEY=VALUE", help="attribute equality; repeatable"
)

STACKS = ArgumentParser(add_help=False)
STACKS.add_argument(
    "--no-stack",
    dest="stack",
    action="store_false",
    help="leave out the stack traces printed under records that carry an exception",
)

STACK_INDENT = 4


def query_from(args: argparse.Namespace) -> Query:
    """Raises QueryError or UsageError, which `main` reports as bad input (exit status 2).

    `Query.parse` reads nothing but these options, so any ValueError it lets out is the input's fault.
    """
    try:
        return Query.parse(
            trace_id=args.trace_id,
            services=args.service,
            severity=args.severity,
            since=args.since,
            until=args.until,
            text=args.grep,
            regex=args.regex,
            attributes=args.attr,
        )
    except QueryError:
        raise
    except ValueError as error:
        raise UsageError(f"bad filter: {error}") from None


def severity_style(number: int) -> str:
    """Colour by severity number, so `WARNING` and `WARN` look alike."""
    for floor, style in ((21, "bold white on red"), (17, "bold red"), (13, "yellow"), (9, "green")):
        if number >= floor:
            return style
    return "dim"


def exception_line(entry: LogEntry) -> Text:
    """`  Type: message` in red, or nothing for a record without an exception."""
    if not entry.exception_type:
        return Text()
    return Text(f"  {printable(entry.exception_type)}: {printable(entry.exception_message)}", style="red")


def record_line(entry: LogEntry) -> Text:
    """One record, one line: text from the stream shows its control characters, never obeys them."""
    line = Text()
    line.append(iso_utc(entry.timestamp_ns), style="dim")
    line.append(" ")
    line.append(f"{printable(entry.severity) or '-':<5}", style=severity_style(entry.severity_number))
    line.append(f" {printable(entry.service)} ", style="cyan")
    line.append(printable(entry.body))
    line.append_text(exception_line(entry))
    if entry.trace_id:
        line.append(f"  trace={printable(entry.trace_id)}", style="dim")
    return line


def stack_lines(entry: LogEntry, indent: int) -> Text | None:
    """The record's stack trace, each of its lines indented under the record, or None without one.

    Only the stack's own newlines break lines, and every line is indented, so no text in it can
    pass for a record; every other control character is shown as an escape (terminal_text).
    """
    stack = entry.exception_stacktrace.rstrip("\n")
    if not stack.strip():
        return None
    margin = " " * indent
    return Text("\n".join(margin + printable(line) for line in stack.split("\n")), style="dim")


def oldest_first(entries: Iterable[LogEntry]) -> list[LogEntry]:
    """By the record's own time: arrival order differs when exporters' batches interleave."""
    return sorted(entries, key=lambda entry: entry.timestamp_ns)


def newest_first(entries: Iterable[LogEntry]) -> list[LogEntry]:
    return sorted(entries, key=lambda entry: entry.timestamp_ns, reverse=True)


class RecordPrinter:
    """NDJSON for pipes (`--json`), coloured lines for people, each exception's stack under its record."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.as_json: bool = args.json
        self.stacks: bool = args.stack
        self.console = Console(highlight=False, soft_wrap=True)

    def print(self, entry: LogEntry) -> None:
        if self.as_json:
            print_json(record_json(entry))
            return
        self.console.print(record_line(entry))
        stack = stack_lines(entry, STACK_INDENT) if self.stacks else None
        if stack is not None:
            self.console.print(stack)

    def flush(self) -> None:
        sys.stdout.flush()
