"""`tracestream services`: which services are sending, how much, and how many errors."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from tracestream.cli.common import Console, add_command, nothing_found, print_json, reader, settings, shown
from tracestream.summary import service_status
from tracestream.timeparse import iso_utc

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    add_command(
        subparsers,
        "services",
        run,
        "service integration status",
        "Per service over the last hour: last seen, records per minute, errors, instances. "
        "Counts of sampled services are estimates, shown as ~N.",
    )


def run(args: argparse.Namespace) -> int:
    with reader(args) as client:
        statuses = service_status(client, settings(args).stream)
        if not statuses:
            nothing_found(args, client, "no records in the last hour")
            return 0
    if args.json:
        for status in statuses:
            line = {
                "service": status.service,
                "last_seen": iso_utc(status.last_seen_ms * 1_000_000),
                "records_per_minute": round(status.records_per_minute, 2),
                "records_last_hour": round(status.records),
                "errors_last_hour": status.errors,
                "instances": len(status.instances),
                "estimated": status.estimated,
                "stored_last_hour": status.stored,
            }
            print_json(line)
        return 0
    now_ms = time.time() * 1000
    table = Table(title="service integration status (last hour)", title_justify="left")
    for column in ("service", "last seen", "records/min", "errors (1h)", "instances"):
        table.add_column(column, justify="left" if column in ("service", "last seen") else "right")
    for status in statuses:
        ago = (now_ms - status.last_seen_ms) / 1000
        table.add_row(
            shown(status.service),
            f"{iso_utc(status.last_seen_ms * 1_000_000)[:19]}Z ({ago:.0f}s ago)",
            ("~" if status.estimated else "") + f"{status.records_per_minute:.1f}",
            Text(str(status.errors), style="red" if status.errors else ""),
            str(len(status.instances)),
        )
    Console(highlight=False).print(table)
    return 0
