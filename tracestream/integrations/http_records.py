"""One request record per HTTP request, and the trace-id response headers.

FastAPI (ASGI) and Django (WSGI and ASGI) both describe a finished exchange as an
`HttpExchange` and hand it here, so the record's fields, levels and headers are the
same whichever framework served the request. The record is written while the
request's server span is current, so it sits inside the request's trace (an access
log line written after the span ended would carry no trace id).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, NamedTuple, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.util.http import ExcludeList, get_excluded_urls

from tracestream._internal_log import internal_logger
from tracestream.exporters.encoding import span_id_hex, trace_id_hex
from tracestream.integrations.record_writer import RecordWriter, exception_attributes, replace_lines
from tracestream.otel_setup.shutdown import before_closing
from tracestream.schema import REQUEST_EVENT

T = TypeVar("T")
TRACEPARENT = "traceparent"
TRACE_ID_HEADER = "X-Trace-Id"
# The servers' own loggers for an exception the app raised (in a request, a streaming body or
# a WebSocket session), whose lines a record carrying that exception replaces in the stream.
SERVER_ERROR_LOGGERS = ("uvicorn.error", "hypercorn.error", "gunicorn.error", "daphne.server")
# granian's, logged from Rust: the exception's traceback is in its message, and it carries none.
SERVER_ERROR_TEXT_LOGGERS = ("_granian.utils",)
# The exception the last request record in this context carried, which a server may log next: a
# context variable, not a mark on the exception, so the app's objects stay as they were.
recorded_exception: ContextVar[BaseException | None] = ContextVar("recorded_exception", default=None)
_FLAGS_HEX = tuple(f"{flags:02x}" for flags in range(256))  # a format spec per request costs ~2k instructions

_records = RecordWriter("tracestream.http", located_by_exception=True)
# This process has an app whose requests get records, or a line said why they get none.
_requests_accounted_for = False


class HttpExchange(NamedTuple):
    """One finished exchange; a named tuple, built in a tenth of a frozen dataclass's time."""

    method: str
    path: str
    route: str | None
    status: int
    duration_ms: float
    client: str | None
    user_agent: str | None
    response_size: int | None


class Unfinished(Protocol):
    """A request being served, which can write its record before it is done."""

    def record_unfinished(self, error: BaseException) -> None: ...


class UnfinishedAtExit(Exception):
    """The process ended while the request was being served."""


def failed_status(error: BaseException) -> trace.Status:
    """The ERROR status a span of a request ended by `error` gets, as its request record says."""
    return trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}")


def end_abandoned_span(span: trace.Span | None, error: BaseException) -> None:
    """Contrib's span of a request the process abandons, ended as an error from the thread that
    closes the queues: what would end it (the request's own thread or task) never runs again,
    and the span was lost, so `traces --errors` missed the failure its record shows."""
    if span is not None and span.is_recording():
        span.set_status(failed_status(error))
        span.end()


_in_flight: dict[int, Unfinished] = {}  # each leaves as its record is written


def serving(request: Unfinished) -> None:
    """`request` is in flight until `served`: should the process end first, it is recorded then."""
    _in_flight[id(request)] = request


def served(request: Unfinished) -> None:
    _in_flight.pop(id(request), None)


def _record_unfinished_requests() -> None:
    """A server that stops without waiting for what it serves (uvicorn's graceful shutdown
    running out under SIGTERM, which dies before the cancelled bodies end; daphne at Ctrl-C)
    would leave no record of those requests, and their access lines are kept out: they get
    an ERROR record as the queues close, with what they had sent."""
    unfinished = list(_in_flight.values())
    _in_flight.clear()
    for request in unfinished:
        request.record_unfinished(UnfinishedAtExit("the process ended while the request was being served"))


before_closing(_record_unfinished_requests)
os.register_at_fork(after_in_child=_in_flight.clear)  # a child serves none of its parent's requests


class RequestNote:
    """What a request's middleware notes while the app serves it. Its route: a span left
    unsampled records no attributes, `http.route` included, and what the request does (enqueue
    a task) finds the route here, as a function of the request, since it is known only once the
    request is routed. And the last exception the app logged at ERROR: an app that answers a
    failure with a 5xx itself (django-ninja's default handler, an exception handler of the app's
    own) logs it, and the request record carries it, so that the failure is one error issue,
    with its route, not two halves of one. Where no one logs it (FastAPI's `HTTPException(503)`,
    Django REST framework's `APIException`), the exception the framework answered with its 5xx."""

    __slots__ = ("answered_error", "logged_error", "request", "route_of", "token")
    token: Token[RequestNote | None]  # set by `note_request`, which makes every note

    def __init__(self, route_of: Callable[[Any], str | None], request: Any) -> None:
        self.route_of = route_of
        self.request = request
        self.logged_error: BaseException | None = None
        self.answered_error: BaseException | None = None


_request_note: ContextVar[RequestNote | None] = ContextVar("tracestream_request_note", default=None)


def note_request(route_of: Callable[[T], str | None], request: T) -> RequestNote:
    """Within a request, until `forget_request`. Noted for every request: asking the span for
    its route first costs more."""
    note = RequestNote(route_of, request)
    note.token = _request_note.set(note)
    return note


def forget_request(note: RequestNote) -> None:
    _request_note.reset(note.token)


def current_route() -> str | None:
    """The route of the request being served: its span's `http.route`, or when the span was
    left unsampled, the route its middleware noted."""
    route = (getattr(trace.get_current_span(), "attributes", None) or {}).get("http.route")
    if isinstance(route, str) and route:
        return route
    noted = _request_note.get()
    return noted.route_of(noted.request) if noted is not None else None


def _note_logged_error(record: logging.LogRecord) -> bool:
    """A filter on our handler: it keeps every record, and notes the exception of one at ERROR."""
    if record.levelno >= logging.ERROR and record.exc_info:
        noted = _request_note.get()
        if noted is not None and record.exc_info[1] is not None:
            noted.logged_error = record.exc_info[1]
    return True


def note_answered_error(error: BaseException) -> None:
    """A framework answered the request being served with a 5xx for `error`, and told no one."""
    noted = _request_note.get()
    if noted is not None:
        noted.answered_error = error


def note_logged_errors(handler: logging.Handler) -> None:
    if _note_logged_error not in handler.filters:
        handler.addFilter(_note_logged_error)


def severity_for(status: int) -> SeverityNumber:
    if status >= 500:
        return SeverityNumber.ERROR
    if status >= 400:
        return SeverityNumber.WARN
    return SeverityNumber.INFO


def emit_request_record(
    exchange: HttpExchange,
    error: BaseException | None = None,
    context: Context | None = None,
    *,
    reason: BaseException | None = None,
    note: RequestNote | None = None,
) -> None:
    """Write the record; an unhandled exception travels with it (type, message, stacktrace)
    and makes it ERROR whatever the status: a stream can fail after its 200 went out. A
    handled one that the framework answered with a 4xx (`reason`) travels with it too, and
    the status says how severe it is, as does one the app answered with a 5xx, or logged
    before it answered one.

    The span is left to the instrumentation, which records the exception there as it
    does without us (recording it here as well would put it on a Django 500's span twice).
    """
    if not is_instrumentation_enabled():  # e.g. a request to the mounted console (console/fastapi_mount.py)
        return
    if error is not None:
        recorded_exception.set(error)
    elif reason is None and note is not None and exchange.status >= 500:
        reason = note.answered_error or note.logged_error
    _records.emit(
        f"{exchange.method} {exchange.path} {exchange.status} ({exchange.duration_ms:.1f} ms)",
        severity_for(exchange.status) if error is None else SeverityNumber.ERROR,
        {
            "event.name": REQUEST_EVENT,
            "http.request.method": exchange.method,
            "http.route": exchange.route,
            "url.path": exchange.path,
            "http.response.status_code": exchange.status,
            "http.server.duration_ms": round(exchange.duration_ms, 3),
            "client.address": exchange.client,
            "user_agent.original": exchange.user_agent,
            "http.response.body.size": exchange.response_size,
        },
        exception=error or reason,
        context=context,
    )


def requests_accounted_for() -> None:
    """An app whose requests get records was built here, or a line said why they get none (a
    framework tracestream does not integrate, an app instrumented before configure()): an
    access line no record stood for (the handshake of a WebSocket session, which gets none, as
    hypercorn and granian log it) is then no sign of an app tracestream does not record."""
    global _requests_accounted_for
    _requests_accounted_for = True


def say_an_access_line_went_unrecorded(access_line: logging.LogRecord) -> None:
    """Once a process: a server logged a request that no request record stood for, and no app
    here gets records nor did a line say why. The app it serves is then none that tracestream
    records (a plain ASGI or WSGI callable)."""
    if _requests_accounted_for:
        return
    requests_accounted_for()
    internal_logger.warning(
        "%s logged a request that got no request record: tracestream records the requests of "
        "FastAPI, Starlette and Django apps, and this app is none of them; its log lines, "
        "access lines included, reach the stream",
        access_line.name,
    )


def keep_server_lines_out(handler: logging.Handler, carries: Callable[[logging.LogRecord], bool]) -> None:
    """A server's line about an exception a request record carries stays out of the stream: one
    whose exception `carries` tells, or one that only ends with the exception's text."""
    for logger_name in SERVER_ERROR_LOGGERS:
        replace_lines(handler, logger_name, carries)
    for logger_name in SERVER_ERROR_TEXT_LOGGERS:
        replace_lines(handler, logger_name, _ends_with_recorded_exception)


def _ends_with_recorded_exception(record: logging.LogRecord) -> bool:
    """A server's line with the traceback in its message and no exception object (granian's,
    from Rust), logged in the request's context: about the recorded exception when it ends as
    that traceback does, `Type: message`. Another exception a wrapper raised from it ends the
    traceback instead, and that line stays."""
    error = recorded_exception.get()
    if error is None or record.exc_info:
        return False
    message = exception_attributes(error, error.__traceback__)["exception.message"]
    return record.getMessage().endswith(f"\n{type(error).__qualname__}: {message}")


def emit_error_after_response(exchange: HttpExchange, error: BaseException) -> None:
    """An exception raised once the response was complete, by a background task: the request
    record went out with the response, so the exception gets an ERROR record of its own, in
    the request's trace."""
    if not is_instrumentation_enabled():
        return
    _records.emit(
        f"{exchange.method} {exchange.path}: exception after the response was sent",
        SeverityNumber.ERROR,
        {
            "event.name": "http.server.error_after_response",
            "http.request.method": exchange.method,
            "http.route": exchange.route,
            "url.path": exchange.path,
            "http.response.status_code": exchange.status,
        },
        exception=error,
    )


def emit_websocket_error(path: str, route: str | None, client: str | None, error: BaseException) -> None:
    """A WebSocket session that ended in an exception, recorded while its span is current: the
    server logs the exception only after the span has ended."""
    if not is_instrumentation_enabled():
        return
    _records.emit(
        f"WebSocket {path}: the session ended in an exception",
        SeverityNumber.ERROR,
        {
            "event.name": "websocket.server.error",
            "http.route": route,
            "url.path": path,
            "client.address": client,
        },
        exception=error,
    )


def trace_headers() -> tuple[tuple[str, str], ...]:
    """`traceparent` and `X-Trace-Id` for the current span; none outside a valid span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ()
    trace_id = trace_id_hex(context.trace_id)
    flags = _FLAGS_HEX[context.trace_flags & 0xFF]
    return (
        (TRACEPARENT, f"00-{trace_id}-{span_id_hex(context.span_id)}-{flags}"),
        (TRACE_ID_HEADER, trace_id),
    )


def excluded_urls(instrumentation: str) -> ExcludeList | None:
    """What the contrib instrumentation leaves untraced, which gets no request record either.

    `OTEL_PYTHON_<INSTRUMENTATION>_EXCLUDED_URLS`, else `OTEL_PYTHON_EXCLUDED_URLS`, as contrib
    reads them; None when nothing is excluded, so a request pays nothing to find out.
    """
    variable = f"OTEL_PYTHON_{instrumentation}_EXCLUDED_URLS"
    if not os.environ.get(variable, os.environ.get("OTEL_PYTHON_EXCLUDED_URLS", "")).strip():
        return None
    return get_excluded_urls(instrumentation)
