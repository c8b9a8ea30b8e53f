"""Whole traces: answered from the trace index, never by scanning, and built into a span tree."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from tracestream.connection import Client
from tracestream.lua import script_source
from tracestream.query.filters import parse_trace_id
from tracestream.query.replies import run_script
from tracestream.query.resources import resolve_flat_resources
from tracestream.schema import (
    INDEX_LOG,
    INDEX_SPAN,
    LogEntry,
    SpanEntry,
)
from tracestream.shards import Shard, shards


@dataclass(frozen=True)
class TraceRecords:
    """A trace's spans and log records, each in time order."""

    trace_id: str
    spans: list[SpanEntry]
    logs: list[LogEntry]


def fetch_trace(client: Client, stream: str, trace_id: str) -> TraceRecords:
    """One script call per shard reads its trace index and entries: no stream scan.

    `client` must decode responses. Members whose entries were trimmed are skipped.
    """
    return records_of_trace(
        trace_id, [item for shard in shards(client, stream) for item in read_trace(shard, trace_id)]
    )


def read_trace(shard: Shard, trace_id: str) -> list[tuple[str, str, list[str]]]:
    """(kind, stream id, flat fields) of every entry one shard's index names."""
    keys = shard.keys
    script = shard.client.register_script(script_source("trace_records"))
    reply = cast(
        list[Any],
        run_script(
            script, [keys.trace_index(trace_id)], [keys.logs, keys.spans, INDEX_LOG, INDEX_SPAN, keys.errors]
        ),
    )
    found = [(reply[index], reply[index + 1], reply[index + 2]) for index in range(0, len(reply), 3)]
    resolve_flat_resources(shard.client, keys, (flat for _, _, flat in found))
    return found


def records_of_trace(trace_id: str, found: Iterable[tuple[str, str, list[str]]]) -> TraceRecords:
    spans: list[SpanEntry] = []
    logs: list[LogEntry] = []
    seen: set[str] = set()
    for kind, entry_id, flat in found:
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        if fields.get("rid") in seen:  # a retried export may have written it twice
            continue
        seen.add(fields.get("rid", ""))
        if kind == INDEX_SPAN:
            spans.append(SpanEntry.from_fields(entry_id, fields))
        else:
            logs.append(LogEntry.from_fields(entry_id, fields))
    spans.sort(key=lambda span: span.start_ns)
    logs.sort(key=lambda log: log.timestamp_ns)
    return TraceRecords(trace_id, spans, logs)


@dataclass
class SpanNode:
    """A span with its child spans and its own log records, both in time order.

    `cycle` marks a span whose ancestors lead back to itself (bad parent ids): it is shown
    as a root, which breaks the cycle, instead of vanishing with every span under it.
    """

    span: SpanEntry
    children: list[SpanNode] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)
    cycle: bool = False


@dataclass(frozen=True)
class TraceTree:
    """Root spans (no parent, or a parent that never arrived) and logs that match no span."""

    trace_id: str
    roots: list[SpanNode]
    unattached_logs: list[LogEntry]

    def walk(self) -> Iterator[tuple[int, SpanNode]]:
        """Depth-first, with each span's depth: the order a waterfall draws them."""
        stack = [(0, node) for node in reversed(self.roots)]
        while stack:
            depth, node = stack.pop()
            yield depth, node
            stack.extend((depth + 1, child) for child in reversed(node.children))

    def in_time_order(self) -> Iterator[tuple[int, SpanNode | LogEntry]]:
        """Depth-first with each row's depth; a span's log records and child spans interleaved by
        time, and logs that match no span among the roots, so the rows read top to bottom in time."""
        pending = [(0, item) for item in reversed(_by_time([*self.roots, *self.unattached_logs]))]
        while pending:  # no recursion: a chain of parents can be as deep as another writer makes it
            depth, item = pending.pop()
            yield depth, item
            if isinstance(item, SpanNode):
                pending += [(depth + 1, child) for child in reversed(_by_time([*item.children, *item.logs]))]

    @property
    def start_ns(self) -> int:
        """The earliest time known: 0 is a time that was absent or undecodable, not the epoch."""
        starts = [node.span.start_ns for _, node in self.walk()] + [
            e.timestamp_ns for e in self.unattached_logs
        ]
        return min((start for start in starts if start), default=0)


def _by_time(items: Iterable[SpanNode | LogEntry]) -> list[SpanNode | LogEntry]:
    return sorted(
        items, key=lambda item: item.span.start_ns if isinstance(item, SpanNode) else item.timestamp_ns
    )


def build_tree(records: TraceRecords) -> TraceTree:
    """A span id held by several spans (another writer's) is the earliest one's; the others are
    shown as roots of their own rather than dropped."""
    nodes: dict[str, SpanNode] = {}
    namesakes: list[SpanNode] = []
    for span in records.spans:
        if span.span_id in nodes:
            namesakes.append(SpanNode(span))
        else:
            nodes[span.span_id] = SpanNode(span)
    parents = {
        node.span.span_id: nodes[node.span.parent_span_id]
        for node in nodes.values()
        if node.span.parent_span_id in nodes
    }
    for node in _cycle_breakers(nodes, parents):
        node.cycle = True
        del parents[node.span.span_id]
    roots: list[SpanNode] = []
    for node in nodes.values():  # spans arrive sorted by start, so children stay in time order
        parent = parents.get(node.span.span_id)
        (parent.children if parent is not None else roots).append(node)
    if namesakes:
        roots = sorted(roots + namesakes, key=lambda node: node.span.start_ns)
    unattached: list[LogEntry] = []
    for entry in records.logs:
        owner = nodes.get(entry.span_id)
        (owner.logs if owner is not None else unattached).append(entry)
    return TraceTree(records.trace_id, roots, unattached)


def _cycle_breakers(nodes: dict[str, SpanNode], parents: dict[str, SpanNode]) -> list[SpanNode]:
    """The earliest span of each parent cycle: made a root, it leaves every span reachable."""
    order = {span_id: index for index, span_id in enumerate(nodes)}
    settled: set[str] = set()  # spans whose ancestors end at a root or at a cycle already found
    breakers: list[SpanNode] = []
    for span_id in nodes:
        path: list[str] = []
        on_path: set[str] = set()
        current: str | None = span_id
        while current is not None and current not in settled and current not in on_path:
            path.append(current)
            on_path.add(current)
            parent = parents.get(current)
            current = parent.span.span_id if parent is not None else None
        if current in on_path:  # walked back into this path: a new cycle
            cycle = path[path.index(current) :]
            breakers.append(nodes[min(cycle, key=order.__getitem__)])
        settled.update(path)
    return breakers


def trace_tree(client: Client, stream: str, trace_id: str) -> TraceTree:
    """Spans and log records of one trace, across services, as a tree ordered by time."""
    return build_tree(fetch_trace(client, stream, parse_trace_id(trace_id)))
