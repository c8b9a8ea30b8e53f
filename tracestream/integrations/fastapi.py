"""FastAPI: the contrib instrumentation for spans, plus request records and trace headers.

`FastAPIInstrumentor.instrument()` only replaces the `FastAPI` class, so an app built
before `configure()` would be missed. Every FastAPI app builds its middleware stack on
its first request, so we hook that instead: the app gets the contrib instrumentation
if it lacks it, and our `RequestRecordMiddleware` sits inside the server span and
outside Starlette's `ServerErrorMiddleware`, where it sees every status, every
exception, and can add the trace headers to 500 responses too. The request record is
written as the last body message goes to the server, so it is queued before the client
has the response, and it times what the client waited for, as the server span does;
background tasks run after that.

An unhandled exception goes on as it does without us: the span gets its exception
event and ERROR status, the server prints its traceback. The server's line for it is
kept out of the stream only, since a record carries the exception (the request record,
or for a background task's exception an ERROR record of its own): the request's context
remembers which exception that was, and the server logs it from that same context (the
request's task).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextvars import ContextVar
from time import perf_counter
from typing import Any

from fastapi.applications import FastAPI
from opentelemetry import trace
from opentelemetry.context import get_current
from opentelemetry.instrumentation import fastapi as fastapi_instrumentation
from opentelemetry.instrumentation.asgi import get_host_port_url_tuple
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import Status, StatusCode
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracestream.integrations.http_records import (
    SERVER_ERROR_LOGGERS,
    HttpExchange,
    emit_error_after_response,
    emit_request_record,
    emit_websocket_error,
    excluded_urls,
    forget_route,
    note_route,
    served,
    serving,
    trace_headers,
)
from tracestream.integrations.record_writer import exception_attributes, replace_lines
from tracestream.otel_setup.log_capture import replace_access_line
from tracestream.otel_setup.telemetry import Telemetry

# Per-message `http send`/`http receive` spans triple the span count for no insight.
CONTRIB_OPTIONS: dict[str, Any] = {"exclude_spans": ["receive", "send"]}
# Not a mark on the exception object: the app's objects stay as they were.
_recorded_exception: ContextVar[BaseException | None] = ContextVar("recorded_exception", default=None)
# The scope key of the response to the request being served: an exception that
# `SpanErrorMiddleware` sees before Starlette's 500 goes out is carried by that 500's request
# record, and a mounted app's middleware finds the request recorded already. A scope, not a
# context variable: uvicorn starts a pipelined request inside the last one's context.
_RESPONSE = "tracestream.response"
_installed = False


class _HttpMiddleware:
    """Hands HTTP requests to `http` and WebSocket sessions to `websocket`; lifespan passes through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class RequestRecordMiddleware(_HttpMiddleware):
    """Writes one request record per HTTP request and returns the trace id in headers; a
    WebSocket session that ends in an exception gets an ERROR record in its trace.

    A URL the contrib instrumentation excludes (OTEL_PYTHON_FASTAPI_EXCLUDED_URLS) gets none,
    and its access line stays out of the stream as well.
    """

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)
        self.excluded = excluded_urls("FASTAPI")

    def _is_excluded(self, scope: Scope) -> bool:
        if self.excluded is None:
            return False
        url: str = get_host_port_url_tuple(scope)[2]  # type: ignore[no-untyped-call]  # contrib's own match
        return self.excluded.url_disabled(url)

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The server logs the exception once the socket's span has ended, so without a trace id."""
        try:
            await self.app(scope, receive, send)
        except Exception as error:
            # A mounted app's middleware, nearer the handler, may have recorded it already.
            if error is not _recorded_exception.get() and not self._is_excluded(scope):
                path = scope.get("path", "")
                emit_websocket_error(path, _route_template(scope), _client_address(scope), error)
                _recorded_exception.set(error)
            raise

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _RESPONSE in scope:  # a mounted app's: the app it is mounted in records the request
            await self.app(scope, receive, send)
            return
        replace_access_line()  # an excluded URL's too: it is kept out of telemetry
        if self._is_excluded(scope):
            await self.app(scope, receive, send)
            return
        headers = [(name.lower().encode(), value.encode()) for name, value in trace_headers()]
        response = _Response(scope)
        scope[_RESPONSE] = response
        serving(response)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.status = message["status"]
                response.started = True
                own = message.get("headers", ())
                taken = {name for name, _ in own}  # a header the app set itself stays its own
                message = {**message, "headers": [*own, *(h for h in headers if h[0] not in taken)]}
            elif message["type"] == "http.response.body":
                response.size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    # Queued before the server sends it: a server that stops right after a
                    # response may cancel what the app still runs (hypercorn does).
                    response.record()
            await send(message)

        noted = note_route(_route_template, scope)
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as error:
            if not response.recorded:
                response.error = error
                if not response.started:
                    await PlainTextResponse("Internal Server Error", 500)(scope, receive, send_with_headers)
                response.record()
            elif error is not response.error:  # raised after the response: a background task
                emit_error_after_response(response.exchange(), error)
            _recorded_exception.set(error)
            raise
        except BaseException as error:  # cancelled: a server's graceful shutdown ran out of time
            if not response.recorded:
                response.error = error
                response.record()
            _recorded_exception.set(error)
            raise
        else:
            response.record()  # for an app that returned without ending its response
        finally:
            forget_route(noted)


class _Response:
    """What the app has sent so far; its request record goes out once, with the last body."""

    __slots__ = ("began", "context", "error", "path", "recorded", "scope", "size", "started", "status")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.context = get_current()
        self.path = scope.get("path", "")  # before older Starlettes cut a mount's path from it
        self.began = perf_counter()
        self.status = 500
        self.size = 0
        self.started = False
        self.recorded = False
        self.error: BaseException | None = None

    def record(self) -> None:
        if not self.recorded:
            self.recorded = True
            served(self)
            emit_request_record(self.exchange(), self.error, self.context)

    def record_unfinished(self, error: BaseException) -> None:
        if not self.recorded:
            self.error = error
            self.record()

    def exchange(self) -> HttpExchange:
        scope = self.scope
        return HttpExchange(
            method=scope.get("method", ""),
            path=self.path,
            route=_route_template(scope),
            status=self.status,
            duration_ms=(perf_counter() - self.began) * 1000,
            client=_client_address(scope),
            user_agent=_user_agent(scope.get("headers") or ()),
            response_size=self.size,
        )


class SpanErrorMiddleware(_HttpMiddleware):
    """Puts an unhandled exception on the server span before the 500 answer ends the span,
    and on the request record that goes out with that answer.

    It sits inside Starlette's `ServerErrorMiddleware`, where the contrib instrumentation
    puts its own recorder when nothing is in between. Once a response has started the span
    is still open above, and the contrib recorder records the exception itself.
    """

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_watched)
        except Exception as error:
            if not started:
                _record_on_span(error)
                response = scope.get(_RESPONSE)
                if response is not None:
                    response.error = error
            raise


def _record_on_span(error: Exception) -> None:
    """The exception event and ERROR status the contrib instrumentation records."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes = exception_attributes(error)
    span.add_event("exception", {**attributes, "exception.escaped": "False"})
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {attributes['exception.message']}"))


def _carries_recorded_exception(record: logging.LogRecord) -> bool:
    """A server's line about the exception a request record of this request carries."""
    error = record.exc_info[1] if record.exc_info else None
    return error is not None and error is _recorded_exception.get()


def _route_template(scope: Scope) -> str | None:
    """The matched route's path, from the top app: a mounted app's routes (`/subapi/items`)
    under the path of their mount, which Starlette adds to `root_path` (the server's own
    prefix, a proxy's, is `app_root_path`). A mount that serves what it matched itself, such
    as `StaticFiles`, is the route."""
    route = scope.get("route") or _matching_route(scope)
    path = getattr(route, "path", None)
    if "app_root_path" not in scope:  # nothing mounted matched
        return path
    mounted = str(scope.get("root_path", "")).removeprefix(scope["app_root_path"])
    return mounted if path is None or isinstance(route, Mount) else mounted + path


def _matching_route(scope: Scope) -> BaseRoute | None:
    """The route a request matched, found again: FastAPI (0.165) names only its own routes in
    the scope, not a Starlette `Route` or `add_route`'s, nor its docs pages."""
    for route in getattr(getattr(scope.get("app"), "router", None), "routes", ()):
        if route.matches(scope)[0] is Match.FULL:
            return route  # type: ignore[no-any-return]
    return None


def _client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _user_agent(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The one header the record needs, without a dict of them all."""
    for name, value in headers:
        if name == b"user-agent":
            return value.decode("latin-1") or None
    return None


def _build_middleware_stack(original: Any) -> Any:
    def build_middleware_stack(self: FastAPI) -> ASGIApp:
        if not getattr(self, "_is_instrumented_by_opentelemetry", False):
            # An app created before configure(): instrument it now; instrument_app re-enters here.
            FastAPIInstrumentor.instrument_app(self, **CONTRIB_OPTIONS)
            if getattr(self, "_is_instrumented_by_opentelemetry", False):
                stack: ASGIApp = self.build_middleware_stack()
                return stack
        # The contrib instrumentation unwraps the outermost ServerErrorMiddleware and puts its
        # span around what is inside, so ours goes inside a plain one.
        errors = original(self)
        if isinstance(errors, ServerErrorMiddleware):
            errors.app = SpanErrorMiddleware(errors.app)
        return ServerErrorMiddleware(RequestRecordMiddleware(errors))

    build_middleware_stack.__wrapped__ = original  # type: ignore[attr-defined]
    return build_middleware_stack


def _add_contrib_options() -> None:
    """The launcher's other distro instrumented FastAPI without our options: the apps it has yet to
    make get them too, beside whatever options it chose."""
    instrumented = fastapi_instrumentation._InstrumentedFastAPI
    chosen = getattr(instrumented, "_instrument_kwargs", None)
    if isinstance(chosen, dict):
        options: Any = {**CONTRIB_OPTIONS, **chosen}
        instrumented._instrument_kwargs = options


def install(telemetry: Telemetry, name: str = "fastapi") -> None:
    """Patches once per process; the line filters go on each configured handler."""
    global _installed
    if not _installed:
        _installed = True
        instrumentor = FastAPIInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(**CONTRIB_OPTIONS)
        else:
            _add_contrib_options()
        FastAPI.build_middleware_stack = _build_middleware_stack(  # type: ignore[method-assign]
            FastAPI.build_middleware_stack
        )
    for logger_name in SERVER_ERROR_LOGGERS:
        replace_lines(telemetry.handler, logger_name, _carries_recorded_exception)
