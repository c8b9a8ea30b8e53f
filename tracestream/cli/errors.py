"""`tracestream errors`: error issues (errors grouped by fingerprint) and their status."""

from __future__ import annotations

import argparse
import re
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
    UsageError,
    abridged,
    add_command,
    column_width,
    nothing_found,
    our_symbol,
    print_json,
    reader,
    settings,
    shown,
    since_argument,
    some_of,
    whole_number,
)
from tracestream.error_issues import STATUSES, ErrorIssue, list_issues, set_status
from tracestream.timeparse import iso_utc, parse_time_ms

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers

# What `errors ACTION FINGERPRINT` does: the status it sets.
ACTIONS = {"resolve": "resolved", "ignore": "ignored", "reopen": "open"}
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_BARS = "·▁▂▃▄▅▆▇█"  # an hour without errors, then eight heights
_PLAIN_BARS = ".12345678"  # the same where the terminal cannot show them
# Below this terminal width the sparkline's 24 columns go to the error text (`--json` has `hourly`).
SPARKLINE_MIN_WIDTH = 120
# Where the other columns would leave the error less than this, each issue is a few lines instead.
ERROR_MIN_WIDTH = 16


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "errors",
        run,
        "error issues, and resolve|ignore|reopen FINGERPRINT",
        "Errors grouped by exception type and the innermost frame of the application's code: "
        "count, last seen, the last 24 hours, and the route that enqueued a failing task or served "
        "a failing request. `errors resolve FINGERPRINT` (or ignore, reopen) sets an issue's status; "
        "a resolved issue seen again reopens as a regression.",
    )
    parser.add_argument("action", nargs="?", choices=sorted(ACTIONS), help="change an issue's status")
    parser.add_argument("fingerprint", nargs="?", help="the issue (16 hex digits, as listed)")
    parser.add_argument(
        "--since", type=since_argument, metavar="TIME", help=f"last seen since: {TIME_FORMS} (15m, 2h, 7d)"
    )
    parser.add_argument("-s", "--service", metavar="NAME", help="only issues that hit this service")
    parser.add_argument("--status", choices=STATUSES, help="only issues in this status")
    parser.add_argument(
        "--limit", type=whole_number(1, 10_000), default=200, metavar="N", help="issues to show (default 200)"
    )


def run(args: argparse.Namespace) -> int:
    if args.action:
        return _change(args)
    if args.fingerprint:
        raise UsageError(f"unexpected {args.fingerprint!r}: to change a status, name an action first")
    try:
        since_ms = parse_time_ms(args.since) if args.since else None
    except ValueError as error:
        raise UsageError(f"--since: {error}") from None
    with reader(args) as client:
        issues = list_issues(
            client,
            settings(args).stream,
            since_ms=since_ms,
            service=args.service,
            status=args.status,
            limit=args.limit,
        )
        if not issues:
            nothing_found(args, client, "no error issues")
            return 0
    if args.json:
        for issue in issues:
            print_json(issue.to_json())
    else:
        console = Console(highlight=False)
        console.print(issue_table(issues, console.width))
    return 0


def _change(args: argparse.Namespace) -> int:
    fingerprint = (args.fingerprint or "").strip().lower()
    if not _FINGERPRINT.match(fingerprint):
        raise UsageError(
            f"errors {args.action}: expected a fingerprint of 16 hex digits, not {args.fingerprint!r}"
        )
    status = ACTIONS[args.action]
    with reader(args) as client:
        found = set_status(client, settings(args).stream, fingerprint, status)
    if not found:
        raise UsageError(f"no error issue has the fingerprint {fingerprint}")
    if args.json:
        print_json({"fingerprint": fingerprint, "status": status})
    else:
        print(f"{fingerprint} {status}")
    return 0


def sparkline(hourly: list[int], bars: str = _BARS) -> str:
    """The last 24 hours, one bar each, scaled to the busiest hour."""
    top = max(hourly, default=0) or 1
    return "".join(bars[0 if not n else max(1, round(n * (len(bars) - 1) / top))] for n in hourly)


def issue_table(issues: list[ErrorIssue], width: int) -> RenderableType:
    """Fingerprint, status, count, last seen, the last 24 hours (from SPARKLINE_MIN_WIDTH columns),
    then one folding column: the services (the first two and how many more), `Type: message` and
    the routes behind it. At 80 columns the fingerprint, status and count stay whole and the
    error keeps room, however many services an issue hit; narrower, each issue is a few lines
    (`_stacked`), so the fingerprint `errors resolve` takes is never cut and no column dropped."""
    sparklines = width >= SPARKLINE_MIN_WIDTH
    columns = ("fingerprint", "status", "count", "last seen (UTC)", "24h")[: 5 if sparklines else 4]
    rows = [_cells(issue, sparklines) for issue in issues]
    taken = sum(column_width(header, (row[i].plain for row in rows)) for i, header in enumerate(columns))
    if width - taken - len(columns) * TABLE_SPACING < ERROR_MIN_WIDTH:
        return _stacked(issues)
    table = Table(
        title="error issues (newest first)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        show_lines=True,
    )
    for column in columns:
        table.add_column(column, justify="right" if column == "count" else "left", no_wrap=True)
    table.add_column("services / error / via", overflow="fold")
    for issue, cells in zip(issues, rows, strict=True):
        table.add_row(*cells, _what(issue))
    return table


def _cells(issue: ErrorIssue, sparklines: bool) -> list[Text]:
    """The row's whole cells: fingerprint, status, count, last seen and, with `sparklines`, the 24 hours."""
    hours = [Text(sparkline(issue.hourly, our_symbol(_BARS, _PLAIN_BARS)))] if sparklines else []
    return [Text(issue.fingerprint), _status(issue), Text(str(issue.count)), Text(_last_seen(issue)), *hours]


def _last_seen(issue: ErrorIssue) -> str:
    return iso_utc(issue.last_seen_ms * 1_000_000)[:19]


def _status(issue: ErrorIssue, between: str = "\n") -> Text:
    """`open`, red, and `regression` under it (or after it, `between` the two) when it came back."""
    status = Text(issue.status, style="red" if issue.status == "open" else "")
    if issue.regression:
        status.append(f"{between}regression", style="bold red")
    return status


def _stacked(issues: list[ErrorIssue]) -> Group:
    """A narrow terminal's layout: a line of fingerprint, status and count, then last seen, the
    services, the error and the routes, indented; a blank line between issues."""
    parts: list[RenderableType] = [Text("error issues (newest first)")]
    for issue in issues:
        head = Text.assemble(issue.fingerprint, "  ", _status(issue, " "), f"  {issue.count} times")
        last_seen = Text(f"last seen {_last_seen(issue).replace('T', ' ')} UTC\n")
        parts += [Text(), head, Padding(last_seen + _what(issue), (0, 0, 0, 2), expand=False)]
    return Group(*parts)


def _what(issue: ErrorIssue) -> Text:
    """Services, error and the routes behind it, a line each."""
    error = f"{issue.type}: {issue.message}" if issue.type else issue.message
    lines = [shown(some_of(issue.services or [issue.service]), "dim"), shown(abridged(error))]
    if issue.chain:
        via = ", ".join(f"{link['route']} ({link['count']})" for link in issue.chain[:3])
        lines.append(shown(f"via {via}", "dim"))
    return Text("\n").join(lines)
