"""Read-only JSON endpoints over the query API. Queries are synchronous Redis calls, so
they run in the thread pool and never block the event loop the live feed shares."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.exceptions import ResponseError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tracestream.alerts.status import alerts_status
from tracestream.connection import CLUSTER_ERRORS, Client
from tracestream.console.health import RedisHealth
from tracestream.error_issues import (
    STATUSES,
    ErrorIssue,
    get_issue,
    list_issues,
    newest_record,
)
from tracestream.query import (
    SEVERITY_FLOORS,
    Cursor,
    Query,
    QueryError,
    SpanNode,
    TraceFilter,
    TraceTree,
    record_at,
    record_json,
    search,
    trace_tree,
)
from tracestream.schema import ERROR_SEVERITY, LogEntry, normalized_message
from tracestream.summary import MINUTE_MS, ErrorGroup, Summary, service_status, summarize
from tracestream.timeparse import iso_utc, parse_time_ms

MAX_PAGE = 1000
MAX_ISSUES = 1000  # issues on one Errors page
FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
CHART_SEVERITIES = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")  # one per OTel range of four
# The columns of `tracestream services`.
SERVICE_COLUMNS = ["service", "last seen (UTC)", "records/min", "errors (1h)", "instances"]


def bad_request(message: str) -> Response:
    return PlainTextResponse(f"{message}\n", status_code=400)


def query_from_params(params: Mapping[str, str]) -> Query:
    """The filters every page shares, named as in the URL; raises QueryError naming a bad one."""

    def value(name: str) -> str | None:
        return params.get(name, "").strip() or None

    return Query.parse(
        trace_id=value("trace_id"),
        services=[service] if (service := value("service")) else [],
        severity=value("severity"),
        since=value("since"),
        until=value("until"),
        text=value("text"),
        regex=value("regex"),
        attributes=[attr] if (attr := value("attr")) else [],
    )


def record_view(entry: LogEntry) -> dict[str, Any]:
    """`record_json`, and for an error the fingerprint of its issue, as the writer computed it."""
    view = record_json(entry)
    if entry.severity_number >= ERROR_SEVERITY:
        view["fingerprint"] = entry.fingerprint
    return view


def tree_json(tree: TraceTree) -> dict[str, Any]:
    """The waterfall's rows in time order, as `tracestream trace` draws them: each span with its
    depth, its log records and child spans interleaved by time under it, and the records that
    match no span among the roots (depth 0)."""
    rows: list[dict[str, Any]] = []
    for depth, item in tree.in_time_order():
        if isinstance(item, SpanNode):
            rows.append({"span": _span_view(item, depth)})
        else:
            rows.append({"record": record_view(item), "depth": depth})
    return {"trace_id": tree.trace_id, "rows": rows}


def _span_view(node: SpanNode, depth: int) -> dict[str, Any]:
    span = node.span
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
        "cycle": node.cycle,
    }


def _iso_ms(ms: int) -> str:
    return iso_utc(ms * 1_000_000)


def _chart_severity(text: str) -> str:
    """WARNING and WARN, CRITICAL and FATAL, share a bar colour; unknown names count as INFO."""
    number = SEVERITY_FLOORS.get(text.strip().upper(), SEVERITY_FLOORS["INFO"])
    return CHART_SEVERITIES[min(len(CHART_SEVERITIES) - 1, (number - 1) // 4)]


def services_json(client: Client, stream: str) -> dict[str, Any]:
    """The rows `tracestream services` prints (an estimate as `~12.3`), and per row the figures
    behind them, so the page can say which are estimates and link each service."""
    now_ms = time.time() * 1000
    statuses = service_status(client, stream)
    rows = [
        [
            status.service,
            f"{_iso_ms(status.last_seen_ms)[:19]}Z ({(now_ms - status.last_seen_ms) / 1000:.0f}s ago)",
            ("~" if status.estimated else "") + f"{status.records_per_minute:.1f}",
            status.errors,
            len(status.instances),
        ]
        for status in statuses
    ]
    counts = [
        {
            "service": status.service,
            "estimated": status.estimated,
            "records_last_hour": round(status.records),
            "stored_last_hour": status.stored,
            "errors_last_hour": status.errors,
        }
        for status in statuses
    ]
    return {"columns": SERVICE_COLUMNS, "rows": rows, "counts": counts}


_FILLED_WINDOW_MS = 24 * 60 * MINUTE_MS  # the longest window the Stats page offers
_CHART_REACH_MS = 7 * 24 * 60 * MINUTE_MS


def _first_chart_minute(summary: Summary, service: str) -> int:
    """The window's first minute, for the windows the page offers. A longer one (`since` in
    1970 means the stream's start) starts at its first minute with records, at most a week
    back: each minute is a row of the answer, and 1970 has 29 million of them."""
    since = summary.since_ms - summary.since_ms % MINUTE_MS
    if summary.until_ms - since <= _FILLED_WINDOW_MS + MINUTE_MS:  # `since` was floored to its minute
        return since
    with_records = (minute for minute, name, _ in summary.per_minute if not service or name == service)
    reach = summary.until_ms - summary.until_ms % MINUTE_MS - _CHART_REACH_MS
    return max(since, reach, min(with_records, default=reach))


def stats_json(summary: Summary, service: str, issues: list[ErrorIssue] | None = None) -> dict[str, Any]:
    """Every minute of the window (zeros included, so gaps show) and the ten biggest error groups;
    a minute's severities that sampled-down records went into are `estimated`, and a group names
    its error issue's fingerprint when exactly one of `issues` matches it."""
    first = _first_chart_minute(summary, service)
    minutes = range(first, summary.until_ms + 1, MINUTE_MS)
    counts: dict[int, Counter[str]] = {minute: Counter() for minute in minutes}
    estimated: dict[int, set[str]] = {}
    for (minute, name, severity), count in summary.per_minute.items():
        if minute >= first and (not service or name == service):
            counts.setdefault(minute, Counter())[_chart_severity(severity)] += count
            if summary.estimated(minute, name, severity):
                estimated.setdefault(minute, set()).add(_chart_severity(severity))
    groups = summary.top_errors(10, service or None)
    return {
        "minutes": [
            {"minute": _iso_ms(m)[11:16], "counts": counts[m], "estimated": sorted(estimated.get(m, ()))}
            for m in sorted(counts)
        ],
        "top_errors": [
            {
                "count": group.count,
                "services": group.service_counts(),
                "error": " ".join(part for part in (group.exception_type, group.message) if part),
                "code": group.code,
                "last_seen": _iso_ms(group.last_seen_ms),
                "fingerprint": _issue_of(issues or [], group),
            }
            for group in groups
        ],
    }


def _issue_of(issues: list[ErrorIssue], group: ErrorGroup) -> str | None:
    """The fingerprint of the one issue an error group (same type and code location) belongs to:
    groups and issues are cut differently (issues by the innermost frame of the stack), so only
    a single issue of that type that hit any of the group's services, or of that normalized
    message, is sure."""
    found = [
        issue
        for issue in issues
        if issue.type == group.exception_type and not group.services.keys().isdisjoint(issue.services)
    ]
    if len(found) > 1:
        wanted = normalized_message(group.message)
        found = [issue for issue in found if normalized_message(issue.message) == wanted]
    return found[0].fingerprint if len(found) == 1 else None


def _listed_issues(client: Client, stream: str, since_ms: int, service: str) -> list[ErrorIssue]:
    """The issues Stats' error groups link to; none when Redis refuses to list them (a reader user
    set up before issues existed lacks HMGET and HGETALL): the groups then link to their service's."""
    try:
        return list_issues(client, stream, since_ms=since_ms, service=service or None)
    except ResponseError:
        return []


def errors_json(client: Client, stream: str, params: Mapping[str, str]) -> dict[str, Any]:
    """The Errors page: issues as `tracestream errors --json` gives them, filtered by `since`,
    `service` and `status`; raises QueryError naming a bad filter."""
    since, status = params.get("since", "").strip(), params.get("status", "").strip() or None
    limit_text = params.get("limit") or "200"
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_ISSUES:
        raise QueryError(f"limit={limit_text!r} is invalid: expected 1 to {MAX_ISSUES}")
    if status is not None and status not in STATUSES:
        raise QueryError(f"status={status!r} is invalid: expected one of {', '.join(STATUSES)}")
    try:
        since_ms = parse_time_ms(since) if since else None
    except ValueError as error:
        raise QueryError(f"since={since!r} is invalid: {error}") from None
    service = params.get("service", "").strip() or None
    issues = list_issues(
        client, stream, since_ms=since_ms, service=service, status=status, limit=int(limit_text)
    )
    return {"issues": [issue.to_json() for issue in issues]}


def issue_json(client: Client, stream: str, fingerprint: str) -> dict[str, Any] | None:
    """One issue's page: the issue and its newest record (with its stack trace) while Redis keeps it."""
    issue = get_issue(client, stream, fingerprint)
    if issue is None:
        return None
    record = newest_record(client, stream, issue)
    return {"issue": issue.to_json(), "newest_record": record_view(record) if record else None}


Endpoint = Callable[[Request], Awaitable[Response]]


def reporting(health: RedisHealth, endpoint: Endpoint) -> Endpoint:
    """`endpoint`, answering a JSON 503/502 instead of a 500 and a traceback when Redis fails."""

    async def run(request: Request) -> Response:
        try:
            response = await endpoint(request)
        except CLUSTER_ERRORS as error:
            return health.response(error)
        health.recovered()
        return response

    return run


def routes(client: Client, stream: str, health: RedisHealth) -> list[Route]:
    async def trace(request: Request) -> Response:
        try:
            tree = await run_in_threadpool(trace_tree, client, stream, request.path_params["trace_id"])
        except QueryError as error:
            return bad_request(str(error))
        return JSONResponse(tree_json(tree))

    async def search_page(request: Request) -> Response:
        params = request.query_params
        limit_text = params.get("limit") or "100"
        cursor = params.get("cursor") or None
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            return bad_request(f"limit={limit_text!r} is invalid: expected 1 to {MAX_PAGE}")
        try:
            query = query_from_params(params)
            if cursor is not None:
                Cursor.parse(cursor)
        except QueryError as error:
            return bad_request(str(error))
        limit = int(limit_text)
        page = await run_in_threadpool(search, client, stream, query, cursor, limit)
        return JSONResponse(
            {"records": [record_view(entry) for entry in page.records], "next_cursor": page.next_cursor}
        )

    async def record(request: Request) -> Response:
        stream_id = request.path_params["stream_id"]
        try:
            entry = await run_in_threadpool(record_at, client, stream, stream_id)
        except QueryError as error:
            return bad_request(str(error))
        if entry is None:
            return PlainTextResponse(f"no record {stream_id}: trimmed, or never written\n", 404)
        return JSONResponse(record_view(entry))

    async def trace_list(request: Request) -> Response:
        params = request.query_params
        try:
            wanted = TraceFilter.parse(
                service=params.get("service"),
                name=params.get("name"),
                min_duration=params.get("min_duration"),
                errors_only=params.get("errors", "") not in ("", "0"),
                sort=params.get("sort"),
                since=params.get("since"),
                limit=params.get("limit"),
            )
        except QueryError as error:
            return bad_request(str(error))
        found = await run_in_threadpool(wanted.find, client, stream)
        return JSONResponse({"traces": [summary.to_json() for summary in found]})

    async def services(_request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(services_json, client, stream))

    async def alerts(_request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(alerts_status, client, stream))

    async def stats(request: Request) -> Response:
        params = request.query_params
        try:
            window = Query.parse(since=params.get("since", "").strip() or "1h", until=params.get("until"))
        except QueryError as error:
            return bad_request(str(error))
        service, since_ms = params.get("service", "").strip(), window.since_ms or 0
        summary = await run_in_threadpool(summarize, client, stream, since_ms, window.until_ms)
        issues = await run_in_threadpool(_listed_issues, client, stream, since_ms, service)
        return JSONResponse(await run_in_threadpool(stats_json, summary, service, issues))

    async def errors(request: Request) -> Response:
        try:
            found = await run_in_threadpool(errors_json, client, stream, request.query_params)
        except QueryError as error:
            return bad_request(str(error))
        return JSONResponse(found)

    async def issue(request: Request) -> Response:
        fingerprint = request.path_params["fingerprint"].strip().lower()
        if not FINGERPRINT.match(fingerprint):
            return bad_request(f"invalid fingerprint {fingerprint!r}: expected 16 hex digits")
        found = await run_in_threadpool(issue_json, client, stream, fingerprint)
        if found is None:
            return PlainTextResponse(f"no error issue {fingerprint}: none seen in 30 days, or never\n", 404)
        return JSONResponse(found)

    endpoints = {
        "trace/{trace_id}": trace,
        "search": search_page,
        "record/{stream_id}": record,
        "traces": trace_list,
        "services": services,
        "stats": stats,
        "alerts": alerts,
        "errors": errors,
        "errors/{fingerprint}": issue,
    }
    return [Route(f"/api/{path}", reporting(health, endpoint)) for path, endpoint in endpoints.items()]
