"""`tracestream errors`: error issues (errors grouped by fingerprint) and their status."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from tracestream.cli.common import (
    Console,
    UsageError,
    add_command,
    print_json,
    reader,
    settings,
    shown,
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
    parser.add_argument("--since", metavar="TIME", help="last seen since: ISO 8601 or ago (15m, 2h, 7d)")
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
    if args.json:
        for issue in issues:
            print_json(issue.to_json())
    else:
        _print_table(issues)
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
    print(f"{fingerprint} {status}")
    return 0


def sparkline(hourly: list[int]) -> str:
    """The last 24 hours, one bar each, scaled to the busiest hour."""
    top = max(hourly, default=0) or 1
    return "".join(_BARS[0 if not n else max(1, round(n * (len(_BARS) - 1) / top))] for n in hourly)


def _print_table(issues: list[ErrorIssue]) -> None:
    console = Console(highlight=False)
    if not issues:
        console.print("no error issues")
        return
    table = Table(title="error issues (newest first)", title_justify="left")
    for column in ("fingerprint", "status", "count", "last seen (UTC)", "24h", "service", "error", "via"):
        table.add_column(column, justify="right" if column == "count" else "left", no_wrap=column != "error")
    for issue in issues:
        status = issue.status + (" (regression)" if issue.regression else "")
        error = f"{issue.type}: {issue.message}" if issue.type else issue.message
        via = ", ".join(f"{link['route']} ({link['count']})" for link in issue.chain[:3])
        table.add_row(
            issue.fingerprint,
            Text(status, style="red" if issue.status == "open" else ""),
            str(issue.count),
            iso_utc(issue.last_seen_ms * 1_000_000)[:19],
            sparkline(issue.hourly),
            shown(", ".join(issue.services) or issue.service),
            shown(error[:200]),
            shown(via),
        )
    console.print(table)
