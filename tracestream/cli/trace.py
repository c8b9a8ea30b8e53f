"""`tracestream trace ID`: a trace's spans as a waterfall, each with its log records inline."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from tracestream.cli.common import (
    TABLE_SPACING,
    Console,
    abridged,
    add_command,
    nothing_found,
    our_symbol,
    print_json,
    reader,
    settings,
    shown,
)
from tracestream.cli.record_lines import STACKS, exception_line, severity_style, stack_lines
from tracestream.query import SpanNode, TraceTree, record_json, trace_tree
from tracestream.schema import LogEntry, SpanEntry
from tracestream.timeparse import iso_utc

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers

# The timeline takes a fifth of the terminal, within these bounds; the span names take what is left.
BAR_WIDTH = (10, 40)
NAME_MIN_WIDTH = 24
SERVICE_MAX_WIDTH = 20


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "trace",
        run,
        "show one trace across services",
        "Show a trace's spans as a waterfall with their log records, across services, in time order.",
        STACKS,
    )
    parser.add_argument("trace_id", metavar="TRACE_ID", help="32 hex digits")


def run(args: argparse.Namespace) -> int:
    with reader(args) as client:
        tree = trace_tree(client, settings(args).stream, args.trace_id)
        if not tree.roots and not tree.unattached_logs:
            why = (
                " (not written, trimmed by max_entries or max_age, expired, or evicted: "
                "`tracestream doctor` names the limits and the eviction policy)"
            )
            nothing_found(args, client, f"no records for trace {tree.trace_id}", why)
            return 0
    if args.json:
        for line in tree_lines(tree):
            print_json(line)
    else:
        console = Console(highlight=False)
        console.print(waterfall(tree, console.width, stacks=args.stack))
    return 0


def tree_lines(tree: TraceTree) -> list[dict[str, Any]]:
    """NDJSON: the waterfall's rows in its order, spans with their depth, logs one deeper than their span."""
    lines: list[dict[str, Any]] = []
    for depth, item in tree.in_time_order():
        if isinstance(item, LogEntry):
            lines.append({"type": "log", "depth": depth, **record_json(item)})
            continue
        span = item.span
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
                "status_message": span.status_message,
                "scope": span.scope,
                "attributes": span.attributes,
                "events": span.events,
            }
        )
    return lines


@dataclass(frozen=True)
class _Row:
    depth: int
    label: Text
    service: Text
    offset_ms: str
    duration_ms: str = ""
    bar: Text | None = None
    stack: Text | None = None


def waterfall(tree: TraceTree, width: int, *, stacks: bool = True) -> RenderableType:
    """The trace as a table `width` columns wide; a record's stack trace spans the whole width under it.

    Rich tables have no cell spanning columns, so the table is cut at each stack trace and
    continued below it with the same fixed column widths.
    """
    rows = _rows(tree, _bar_width(width), stacks)
    columns = _column_widths(rows, width)
    parts: list[RenderableType] = [Text(f"trace {tree.trace_id}")]
    table = _table(columns, header=True)
    for row in rows:
        indent = min(2 * row.depth, columns[0] // 2)  # a deep tree still leaves its names room
        table.add_row(
            Padding(row.label, (0, 0, 0, indent)), row.service, row.offset_ms, row.duration_ms, row.bar
        )
        if row.stack is not None:
            parts += [table, Padding(row.stack, (0, 0, 0, indent + 4))]
            table = _table(columns, header=False)
    if table.row_count:
        parts.append(table)
    return Group(*parts)


def _bar_width(width: int) -> int:
    low, high = BAR_WIDTH
    return max(low, min(high, width // 5))


def _rows(tree: TraceTree, bar_width: int, stacks: bool) -> list[_Row]:
    start = tree.start_ns
    spans = [item.span for _, item in tree.in_time_order() if isinstance(item, SpanNode)]
    end = max([span.end_ns for span in spans] + [start + 1])
    scale = bar_width / (end - start)
    bullet, block, cross = our_symbol("•", "*"), our_symbol("█", "#"), our_symbol("✗", "x")
    rows: list[_Row] = []
    for depth, item in tree.in_time_order():
        if isinstance(item, LogEntry):
            label = Text(f"{bullet} ").append_text(
                shown(f"{item.severity} ", severity_style(item.severity_number))
            )
            # A cell of the waterfall: a whole long message folded in it would fill the screen
            # (`--json` and `search` have it whole).
            label.append_text(shown(abridged(item.body))).append_text(exception_line(item))
            stack = stack_lines(item, 0) if stacks else None
            rows.append(
                _Row(depth, label, shown(item.service), _since(item.timestamp_ns, start), stack=stack)
            )
            continue
        span = item.span
        offset = min(bar_width - 1, max(0, int((span.start_ns - start) * scale)))
        length = min(bar_width - offset, max(1, int((span.end_ns - span.start_ns) * scale)))
        bar = Text(" " * offset + block * length, style="red" if span.status == "ERROR" else "blue")
        label = shown(span.name, "bold")
        if span.status == "ERROR":  # the bar's colour does not reach a pipe
            label.append_text(Text(f"  {cross} ", "red"))
            label.append_text(shown(abridged(_why_it_failed(span)), "red"))
        rows.append(
            _Row(
                depth,
                label,
                shown(span.service),
                _since(span.start_ns, start),
                f"{span.duration_ms:.1f}",
                bar,
            )
        )
    return rows


def _why_it_failed(span: SpanEntry) -> str:
    """The exception the span recorded (`record_exception`, an instrumentation's), else its status text."""
    for event in span.events:
        attributes = event.get("attributes")
        if event.get("name") == "exception" and isinstance(attributes, dict):
            kind, message = attributes.get("exception.type", ""), attributes.get("exception.message", "")
            return f"{kind}: {message}" if kind and message else str(kind or message or "exception")
    return span.status_message or "error"


def _column_widths(rows: list[_Row], width: int) -> tuple[int, int, int, int, int]:
    """Name, service, +ms, ms, timeline: the figures and the timeline whole, services up to
    SERVICE_MAX_WIDTH, and the names what they need of the rest (at least NAME_MIN_WIDTH)."""
    service = min(SERVICE_MAX_WIDTH, max([len("service")] + [row.service.cell_len for row in rows]))
    offset = max([len("+ms")] + [len(row.offset_ms) for row in rows])
    duration = max([len("ms")] + [len(row.duration_ms) for row in rows])
    bar = max([len("timeline")] + [row.bar.cell_len for row in rows if row.bar is not None])
    longest = max(row.label.cell_len + 2 * row.depth for row in rows)
    room = width - (service + offset + duration + bar + 4 * TABLE_SPACING)
    return max(NAME_MIN_WIDTH, min(room, longest)), service, offset, duration, bar


def _table(widths: tuple[int, int, int, int, int], *, header: bool) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, show_header=header, pad_edge=False, padding=(0, 1))
    name, service, offset, duration, bar = widths
    table.add_column("span / log", width=name, overflow="fold")
    table.add_column("service", width=service, overflow="fold")
    table.add_column("+ms", width=offset, justify="right", no_wrap=True)
    table.add_column("ms", width=duration, justify="right", no_wrap=True)
    table.add_column("timeline", width=bar, no_wrap=True)
    return table


def _since(time_ns: int, start: int) -> str:
    """Milliseconds after the trace's start; `?` for a time that was absent or undecodable."""
    return f"{(time_ns - start) / 1e6:.1f}" if time_ns else "?"
