"""Read-only JSON endpoints over the query API. Queries are synchronous Redis calls, so
they run in the thread pool and never block the event loop the live feed shares."""

from __future__ import annotations

import re
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tracestream.console.live import record_json
from tracestream.query import fetch_trace
from tracestream.schema import SpanEntry

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def bad_request(message: str) -> Response:
    return PlainTextResponse(f"{message}\n", status_code=400)


def span_json(span: SpanEntry, depth: int) -> dict[str, Any]:
    return {
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind,
        "service": span.service,
        "start_ms": span.start_ns / 1e6,
        "duration_ms": span.duration_ms,
        "status": span.status,
        "status_message": span.status_message,
        "attributes": span.attributes,
        "depth": depth,
    }


def waterfall(spans: list[SpanEntry]) -> list[dict[str, Any]]:
    """Spans depth-first, children by start time; spans whose parent is missing count as roots."""
    known = {span.span_id for span in spans}
    children: dict[str, list[SpanEntry]] = {}
    for span in spans:  # already in start order
        parent = span.parent_span_id if span.parent_span_id in known else ""
        children.setdefault(parent, []).append(span)
    ordered: list[dict[str, Any]] = []
    stack = [(span, 0) for span in reversed(children.get("", []))]
    while stack:
        span, depth = stack.pop()
        ordered.append(span_json(span, depth))
        stack.extend((child, depth + 1) for child in reversed(children.get(span.span_id, [])))
    return ordered


def routes(client: redis.Redis, stream: str) -> list[Route]:
    async def trace(request: Request) -> Response:
        trace_id = request.path_params["trace_id"].strip().lower()
        if not TRACE_ID.match(trace_id):
            return bad_request(f"trace id {trace_id!r} is invalid: expected 32 hex digits")
        found = await run_in_threadpool(fetch_trace, client, stream, trace_id)
        return JSONResponse(
            {
                "trace_id": trace_id,
                "spans": waterfall(found.spans),
                "logs": [record_json(entry) for entry in found.logs],
            }
        )

    return [Route("/api/trace/{trace_id}", trace)]
