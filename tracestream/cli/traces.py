"""`tracestream traces`: recent or slow traces, from the trace list the span exporter writes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from tracestream.cli.common import (
    TABLE_SPACING,
    TIME_FORMS,
    Console,
    add_command,
    column_width,
    nothing_found,
    print_json,
    reader,
    settings,
    shown,
    since_argument,
)
from tracestream.query import TraceFilter, TraceSummary
from tracestream.timeparse import iso_utc

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers

TRACE_ID_LENGTH = 32
# Below this the names would fold into a column too thin to read: each trace takes two lines.
NAME_MIN_WIDTH = 20


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
        "--since", type=since_argument, metavar="TIME", help=f"started after: {TIME_FORMS} (1h)"
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
        console = Console(highlight=False)
        console.print(table(found, console.width))
    return 0


def table(found: list[TraceSummary], width: int) -> RenderableType:
    """Start, duration, service and name, trace id (`tracestream trace ID` opens one), under a
    title saying the times are UTC and their dates. At 80 columns the names keep room: one column
    for service and name. The id is never cut: where the other columns would leave the names less
    than NAME_MIN_WIDTH, each trace takes two lines, its id and then the rest."""
    starts = [iso_utc(int(summary.start_ms * 1e6)) for summary in found]
    days = sorted({start[:10] for start in starts})
    title = f"UTC {days[0]}" + (f" to {days[-1]}" if len(days) > 1 else "")
    times = [start[11:19] if len(days) == 1 else start[5:19].replace("T", " ") for start in starts]
    durations = [f"{summary.duration_ms:.1f}" for summary in found]
    fixed = column_width("start", times) + column_width("ms", durations)
    if width - fixed - TRACE_ID_LENGTH - 3 * TABLE_SPACING < NAME_MIN_WIDTH:
        return _stacked(title, found, times, durations)
    rows = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    rows.add_column("start", no_wrap=True)
    rows.add_column("ms", justify="right", no_wrap=True)
    rows.add_column("service  route / task", overflow="fold")
    rows.add_column("trace id", no_wrap=True)
    for summary, start, duration in zip(found, times, durations, strict=True):
        rows.add_row(start, duration, _name(summary), summary.trace_id)
    return rows


def _stacked(title: str, found: list[TraceSummary], times: list[str], durations: list[str]) -> Group:
    """A narrow terminal's layout: the whole id on a line, then start, duration, service and name."""
    lines: list[RenderableType] = [Text(title)]
    for summary, start, duration in zip(found, times, durations, strict=True):
        detail = Text(f"{start}  {duration} ms  ").append_text(_name(summary))
        whole_id = Text(summary.trace_id, no_wrap=True, overflow="ignore")
        lines += [whole_id, Padding(detail, (0, 0, 0, 2), expand=False)]
    return Group(*lines)


def _name(summary: TraceSummary) -> Text:
    """`service  route`, red with `error` after it when the trace failed."""
    name = shown(summary.service, "dim").append("  ")
    name.append_text(shown(summary.name, "red" if summary.error else ""))
    if summary.error:
        name.append(" error", style="bold red")
    return name
