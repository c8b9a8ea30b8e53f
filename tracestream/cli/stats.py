"""`tracestream stats`: records per minute by service and severity, and the top error groups."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.table import Table

from tracestream.cli.common import (
    TIME_FORMS,
    Console,
    abridged,
    add_command,
    nothing_found,
    print_json,
    reader,
    settings,
    shown,
    since_argument,
    some_of,
    time_argument,
    whole_number,
)
from tracestream.query import Query
from tracestream.summary import Summary, shown_count, summarize
from tracestream.timeparse import iso_utc

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers

SEVERITY_ORDER = ("TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL")


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "stats",
        run,
        "counts per minute and top errors",
        "Counts by severity and service per minute, and the top error groups. Counts of sampled "
        "services are estimates, shown as ~N.",
    )
    parser.add_argument(
        "--since", type=since_argument, default="15m", metavar="TIME", help=f"{TIME_FORMS} (default 15m)"
    )
    parser.add_argument("--until", type=time_argument, metavar="TIME", help=f"{TIME_FORMS} (default now)")
    parser.add_argument(
        "--top", type=whole_number(0), default=10, metavar="N", help="error groups to show (default 10)"
    )


def run(args: argparse.Namespace) -> int:
    window = Query.parse(since=args.since, until=args.until)
    since_ms = window.since_ms or 0
    with reader(args) as client:
        summary = summarize(client, settings(args).stream, since_ms, window.until_ms)
        if not summary.services:
            until = "now" if window.until_ms is None else _utc_second(window.until_ms)
            read = f" (from {_utc_second(since_ms)} to {until})"
            nothing_found(args, client, "no records in this window", read)
            return 0
    if args.json:
        for line in stats_lines(summary, args.top):
            print_json(line)
    else:
        _print_tables(summary, args.top)
    return 0


def stats_lines(summary: Summary, top: int) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = [
        {"type": "count", "minute": iso_utc(minute * 1_000_000), "service": service, "severity": severity,
         "count": round(count), "estimated": summary.estimated(minute, service, severity)}
        for (minute, service, severity), count in sorted(summary.per_minute.items())
    ]  # fmt: skip
    lines += [
        {"type": "error_group", "exception_type": group.exception_type, "code": group.code,
         "count": group.count, "services": group.service_counts(), "message": group.message,
         "last_seen": iso_utc(group.last_seen_ms * 1_000_000)}
        for group in summary.top_errors(top)
    ]  # fmt: skip
    return lines


def _utc_second(milliseconds: int) -> str:
    """`2024-05-01T12:00:00Z`: a window's bound, as a person can type it back."""
    return iso_utc(milliseconds * 1_000_000)[:19] + "Z"


def _severity_key(name: str) -> tuple[int, str]:
    return (SEVERITY_ORDER.index(name) if name in SEVERITY_ORDER else len(SEVERITY_ORDER), name)


def _print_tables(summary: Summary, top: int) -> None:
    console = Console(highlight=False)
    severities = sorted({severity for _, _, severity in summary.per_minute}, key=_severity_key)
    rows: dict[tuple[int, str], dict[str, str]] = {}
    for (minute, service, severity), count in summary.per_minute.items():
        rows.setdefault((minute, service), {})[severity] = shown_count(
            count, summary.estimated(minute, service, severity)
        )
    table = Table(title="records per minute", title_justify="left")
    table.add_column("minute (UTC)")
    table.add_column("service")
    for severity in severities:
        table.add_column(shown(severity), justify="right")
    for (minute, service), counts in sorted(rows.items(), reverse=True):
        minute_text = iso_utc(minute * 1_000_000)[:16] + "Z"
        table.add_row(minute_text, shown(service), *(counts.get(severity, "0") for severity in severities))
    totals, estimated = summary.by_severity(), summary.estimated_severities()
    table.add_row(
        "total",
        "",
        *(shown_count(totals[severity], severity in estimated) for severity in severities),
        style="bold",
    )
    console.print(table)
    errors = Table(title="top error groups", title_justify="left")
    for column in ("count", "exception", "location", "services", "last seen", "message"):
        errors.add_column(column, overflow="fold", justify="right" if column == "count" else "left")
    for group in summary.top_errors(top):
        errors.add_row(
            str(group.count),
            shown(group.exception_type or "-"),
            shown(group.code or "-"),
            shown(some_of(group.ranked_services())),
            _utc_second(group.last_seen_ms),
            shown(abridged(group.message)),
        )
    console.print(errors if summary.error_groups else "no errors in this window")
