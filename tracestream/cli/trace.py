"""`tracestream trace ID`: a trace's spans as a waterfall, each with its log records inline."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tracestream.cli.common import add_command, print_json, reader, settings, shown
from tracestream.cli.record_lines import severity_style
from tracestream.query import TraceTree, record_json, trace_tree
from tracestream.schema import LogEntry
from tracestream.timeparse import iso_utc

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers

BAR_WIDTH = 24


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "trace",
        run,
        "show one trace across services",
        "Show a trace's spans as a waterfall with their log records, across services.",
    )
    parser.add_argument("trace_id", metavar="TRACE_ID", help="32 hex digits")


def run(args: argparse.Namespace) -> int:
    with reader(args) as client:
        tree = trace_tree(client, settings(args).stream, args.trace_id)
    if not tree.roots and not tree.unattached_logs:
        print(f"tracestream: no records for trace {tree.trace_id} (not written, or expired)", file=sys.stderr)
        return 1
    if args.json:
        for line in tree_lines(tree):
            print_json(line)
    else:
        Console(highlight=False).print(waterfall(tree))
    return 0


def tree_lines(tree: TraceTree) -> list[dict[str, Any]]:
    """NDJSON: spans in waterfall order with their depth, each followed by its log records."""
    lines: list[dict[str, Any]] = []
    for depth, node in tree.walk():
        span = node.span
        lines.append(
            {
                "type": "span",
                "depth": depth,
                "trace_id": span.trace_id,
                "span_id": span.span_id,
                "parent_span_id": span.parent_span_id,
                "name": span.name,
                "kind": span.kind,
                "service": span.service,
                "start": iso_utc(span.start_ns),
                "duration_ms": span.duration_ms,
                "status": span.status,
                "attributes": span.attributes,
            }
        )
        lines.extend({"type": "log", "depth": depth + 1, **record_json(entry)} for entry in node.logs)
    lines.extend({"type": "log", "depth": 0, **record_json(entry)} for entry in tree.unattached_logs)
    return lines


def waterfall(tree: TraceTree) -> Table:
    start = tree.start_ns
    end = max([node.span.end_ns for _, node in tree.walk()] + [start + 1])
    scale = BAR_WIDTH / (end - start)
    table = Table(title=f"trace {tree.trace_id}", title_justify="left")
    table.add_column("span / log", overflow="fold", ratio=1)
    table.add_column("service", overflow="fold")
    table.add_column("+ms", justify="right", no_wrap=True)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("timeline", no_wrap=True, min_width=BAR_WIDTH + 1)
    for depth, node in tree.walk():
        span = node.span
        offset = min(BAR_WIDTH - 1, max(0, int((span.start_ns - start) * scale)))
        width = min(BAR_WIDTH - offset, max(1, int((span.end_ns - span.start_ns) * scale)))
        style = "red" if span.status == "ERROR" else "blue"
        table.add_row(
            Text("  " * depth).append_text(shown(span.name, "bold")),
            shown(span.service),
            _since(span.start_ns, start),
            f"{span.duration_ms:.1f}",
            Text(" " * offset + "█" * width, style=style),
        )
        for entry in node.logs:
            table.add_row(*_log_row(entry, depth + 1, start))
    for entry in tree.unattached_logs:
        table.add_row(*_log_row(entry, 0, start))
    return table


def _log_row(entry: LogEntry, depth: int, start: int) -> tuple[Text, Text, str, str, str]:
    text = Text("  " * depth + "• ")
    text.append_text(shown(f"{entry.severity} ", severity_style(entry.severity_number)))
    text.append_text(shown(entry.body))
    return text, shown(entry.service), _since(entry.timestamp_ns, start), "", ""


def _since(time_ns: int, start: int) -> str:
    """Milliseconds after the trace's start; `?` for a time that was absent or undecodable."""
    return f"{(time_ns - start) / 1e6:.1f}" if time_ns else "?"
