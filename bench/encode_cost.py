"""Instructions per item in each step of the export thread, for a Django request's span and record.

The span has the nine attributes the contrib Django instrumentation sets on a server span, and
the record is the request record tracestream writes for it. Each step runs over 2,000 items in
a fresh process under callgrind, collection on around that step only:

  values     the OTel object laid out as a row (`span_values`, `PendingRecord.stream_values`)
  shape      scrubbing and size limits on the rows (`RowShaper.shape_rows`)
  summaries  the trace list's summaries and their script arguments (spans only)
  arguments  the append script's arguments, the rows as JSON included

Run: .venv/bin/python bench/encode_cost.py [--items 2000]
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from callgrind import collect, total, under_callgrind

STEPS = {"span": ("values", "shape", "summaries", "arguments"), "record": ("values", "shape", "arguments")}
SPAN_ATTRIBUTES = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "server.address": "127.0.0.1",
    "server.port": 8000,
    "client.address": "127.0.0.1",
    "user_agent.original": "bench",
    "network.protocol.version": "1.1",
    "http.route": "items/<int:item_id>",
    "http.response.status_code": 200,
}
RECORD_ATTRIBUTES = {
    "event.name": "http.server.request",
    "http.request.method": "GET",
    "http.route": "/items/<int:item_id>",
    "url.path": "/items/42",
    "http.response.status_code": 200,
    "http.server.duration_ms": 0.232,
    "client.address": "127.0.0.1",
    "user_agent.original": "bench",
    "http.response.body.size": 15,
}


def run_step(kind: str, step: str, items: int) -> None:
    """In the child: build the items, then count one step with callgrind collecting."""
    from opentelemetry import trace
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from tracestream import schema
    from tracestream.exporters import trace_summaries
    from tracestream.exporters.redis_stream import RedisStreamLogExporter, RedisStreamSpanExporter
    from tracestream.integrations.record_writer import PendingRecord
    from tracestream.settings import Settings

    resource = Resource.create({"service.name": "bench-django"})
    tracer = TracerProvider(resource=resource).get_tracer("opentelemetry.instrumentation.django")
    settings = Settings.load(environ={}, redis_url="redis://127.0.0.1:1/0", stream="bench")
    batch: list[Any] = []
    if kind == "span":
        for _ in range(items):
            span = tracer.start_span(
                "GET items/<int:item_id>", kind=SpanKind.SERVER, attributes=SPAN_ATTRIBUTES
            )
            span.end()
            batch.append(span)
        writer: Any = RedisStreamSpanExporter(settings).writer
    else:
        context = trace.set_span_in_context(tracer.start_span("GET"))
        provider = LoggerProvider(resource=resource)
        batch = [
            PendingRecord(
                "tracestream.http",
                "GET /items/42 200 (0.2 ms)",
                SeverityNumber.INFO,
                None,
                dict(RECORD_ATTRIBUTES),
                None,
                context,
                provider,
            )
            for _ in range(items)
        ]
        writer = RedisStreamLogExporter(settings).writer
    writer.encode(batch[:10])  # caches, imports and the scrubber's first texts

    def values() -> list[list[str]]:
        return [writer._encode(item, writer._ids.next(), writer._resources) for item in batch]

    raw = [] if step == "values" else values()
    rows = writer._shaper.shape_rows([list(row) for row in raw]) if step in ("summaries", "arguments") else []
    keys = schema.StreamKeys("bench")
    gc.collect()
    gc.freeze()
    collect("on")
    if step == "values":
        values()
    elif step == "shape":
        writer._shaper.shape_rows(raw)
    elif step == "summaries":
        trace_summaries.script_calls(keys, rows, 0, 3600, 512, 0)
    else:
        [writer._script_args(keys, rows[start : start + 512]) for start in range(0, len(rows), 512)]
    collect("off")


def count(kind: str, step: str, items: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        command = [sys.executable, __file__, "--child", kind, step, "--items", str(items)]
        subprocess.run(under_callgrind(out, command), check=True, capture_output=True)
        return total(out) / items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "STEP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_step(*args.child, args.items)
        return
    for kind, steps in STEPS.items():
        figures = {step: count(kind, step, args.items) for step in steps}
        shown = ", ".join(f"{step} {value / 1000:.1f}k" for step, value in figures.items())
        print(f"{kind:6}: {sum(figures.values()) / 1000:.1f}k instructions ({shown})")
    print(f"command: .venv/bin/python bench/encode_cost.py --items {args.items}")


if __name__ == "__main__":
    main()
