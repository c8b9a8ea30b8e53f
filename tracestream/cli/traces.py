"""`tracestream traces`: recent or slow traces, from the trace list the span exporter writes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich import box
from rich.table import Table

from tracestream.cli.common import (
    Console,
    add_command,
    nothing_found,
    print_json,
    reader,
    settings,
    shown,
    time_argument,
)
from tracestream.query import TraceFilter, TraceSummary
from tracestream.timeparse import iso_utc

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "traces",
        run,
        "list recent or slow traces",
        "List traces by their local root span (a request, a task, or a span with no parent), newest "
        "or slowest first, from an index written with the spans. A line on stderr says when none matched.",
    )
    parser.add_argument("-s", "--service", metavar="NAME", help="only this service's requests and tasks")
    parser.add_argument("--route", metavar="TEXT", help="route or task name containing TEXT (e.g. /orders)")
    parser.add_argument("--min-duration", metavar="DURATION", help="at least this long: 500ms, 2s")
    parser.add_argument(
        "--errors", action="store_true", help="only failed ones (status ERROR or an exception)"
    )
    parser.add_argument(
        "--since",
        type=time_argument,
        metavar="TIME",
        help="started after: ISO 8601 time, or how long ago (1h)",
    )
    parser.add_argument(
        "--sort", choices=TraceFilter.SORTS, default="newest", help="newest (default) or slowest first"
    )
    parser.add_argument(
        "-n",
        "--limit",
        default="50",
        metavar="N",
        help=f"how many (default 50, at most {TraceFilter.MAX_LIMIT})",
    )


def run(args: argparse.Namespace) -> int:
    wanted = TraceFilter.parse(
        service=args.service,
        name=args.route,
        min_duration=args.min_duration,
        errors_only=args.errors,
        sort=args.sort,
        since=args.since,
        limit=args.limit,
    )
    with reader(args) as client:
        found = wanted.find(client, settings(args).stream)
        if not found:
            nothing_found(args, client, "no matching traces")
            return 0
    if args.json:
        for summary in found:
            print_json(summary.to_json())
    else:
        Console(highlight=False).print(table(found))
    return 0


def table(found: list[TraceSummary]) -> Table:
    """Start, duration, service and name, trace id (`tracestream trace ID` opens one). At 80
    columns the names keep room: one column for service and name, the date said once when
    every trace started that day, and the id never cut."""
    starts = [iso_utc(int(summary.start_ms * 1e6)) for summary in found]
    one_day = len({start[:10] for start in starts}) == 1
    rows = Table(
        title=f"UTC {starts[0][:10]}" if one_day else None,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    rows.add_column("start", no_wrap=True)
    rows.add_column("ms", justify="right", no_wrap=True)
    rows.add_column("service  route / task", overflow="fold")
    rows.add_column("trace id", no_wrap=True)
    for summary, start in zip(found, starts, strict=True):
        name = shown(summary.service, "dim").append("  ")
        name.append_text(shown(summary.name, "red" if summary.error else ""))
        if summary.error:
            name.append(" error", style="bold red")
        rows.add_row(
            start[11:19] if one_day else start[5:19].replace("T", " "),
            f"{summary.duration_ms:.1f}",
            name,
            summary.trace_id,
        )
    return rows
