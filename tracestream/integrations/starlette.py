"""Starlette: request records, trace headers and a server span for every Starlette app.

FastAPI builds on this (`tracestream.integrations.fastapi`). A plain Starlette app gets the
same as a FastAPI app, as it builds its middleware stack on its first call:

    OpenTelemetryMiddleware          the server span (contrib's ASGI middleware)
      RequestRecordMiddleware        the request record and the trace headers
        ServerErrorMiddleware        the app's own, with its 500 handler
          SpanErrorMiddleware        an exception, on the span before the 500 ends it
            the app's middleware, its routes

The request record sits inside the span and outside the app's `ServerErrorMiddleware`, so it
sees every status and every exception, and the app's 500 handler and debug page answer as
without us. An app `StarletteInstrumentor.instrument_app` instrumented has contrib's middleware
inside its `ServerErrorMiddleware`: it is moved out to the top, with its options (the launcher
leaves Starlette to us, as it does FastAPI). A Starlette app mounted in an app that traced the
request (a FastAPI app, say) adds nothing: the outer app records.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from functools import partial
from time import perf_counter
from types import FrameType
from typing import Any
from weakref import WeakSet

from opentelemetry import trace
from opentelemetry.context import get_current
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware, get_host_port_url_tuple
from opentelemetry.trace import Status, StatusCode
from starlette.applications import Starlette
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracestream.integrations.http_records import (
    HttpExchange,
    RequestNote,
    emit_error_after_response,
    emit_request_record,
    emit_websocket_error,
    end_abandoned_span,
    excluded_urls,
    forget_request,
    keep_server_lines_out,
    note_logged_errors,
    note_request,
    recorded_exception,
    requests_accounted_for,
    served,
    serving,
    trace_headers,
)
from tracestream.integrations.record_writer import exception_attributes
from tracestream.otel_setup.log_capture import replace_access_line
from tracestream.otel_setup.telemetry import Telemetry

__all__ = [
    "CONTRIB_OPTIONS",
    "EXCLUDED_KEY",
    "RESPONSE_KEY",
    "RequestRecordMiddleware",
    "install",
    "instrument_serving_apps",
    "keep_recorded_exceptions_out",
    "stack_built_before",
    "watch_errors",
]

# Per-message `http send`/`http receive` spans triple the span count for no insight.
CONTRIB_OPTIONS: dict[str, Any] = {"exclude_spans": ["receive", "send"]}
# The scope key of the response to the request being served: an exception that
# `SpanErrorMiddleware` sees before Starlette's 500 goes out is carried by that 500's request
# record, and a mounted app's middleware finds the request recorded already. A scope, not a
# context variable: uvicorn starts a pipelined request inside the last one's context.
RESPONSE_KEY = "tracestream.response"
# Where FastAPI 0.137+ notes the route a request selected, with its full path.
_FASTAPI_SCOPE, _EFFECTIVE_ROUTE = "fastapi", "effective_route_context"
# The scope key of a request the app's own `FastAPI(telemetry={"exclude": ...})` keeps out.
EXCLUDED_KEY = "tracestream.excluded"
# A serving app and the stack it built before configure(), which a build hook instruments
# instead of building the app's middleware a second time.
_built_before: ContextVar[tuple[Starlette, ASGIApp] | None] = ContextVar("built_before", default=None)
# The plain Starlette apps whose stack our hook built.
_recorded: WeakSet[Starlette] = WeakSet()
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

    A URL the contrib instrumentation excludes (`OTEL_PYTHON_<INSTRUMENTATION>_EXCLUDED_URLS`), or
    a request the app's `FastAPI(telemetry={"exclude": ...})` excludes, gets none, and its access
    line stays out of the stream as well.
    """

    def __init__(self, app: ASGIApp, instrumentation: str) -> None:
        super().__init__(app)
        requests_accounted_for()
        self.excluded = excluded_urls(instrumentation)

    def _is_excluded(self, scope: Scope) -> bool:
        if EXCLUDED_KEY in scope:
            return True
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
            if error is not recorded_exception.get() and not self._is_excluded(scope):
                path = scope.get("path", "")
                emit_websocket_error(path, _route_template(scope), _client_address(scope), error)
                recorded_exception.set(error)
            raise

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if RESPONSE_KEY in scope:  # a mounted app's: the app it is mounted in records the request
            await self.app(scope, receive, send)
            return
        replace_access_line()  # an excluded URL's too: it is kept out of telemetry
        if self._is_excluded(scope):
            await self.app(scope, receive, send)
            return
        headers = [(name.lower().encode(), value.encode()) for name, value in trace_headers()]
        response = _Response(scope, note_request(_route_template, scope))
        scope[RESPONSE_KEY] = response
        serving(response)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.status = message["status"]
                response.started = True
                if response.status >= 500:
                    _note_answered_error(response)
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
            recorded_exception.set(error)
            raise
        except BaseException as error:  # cancelled: a server's graceful shutdown ran out of time
            if not response.recorded:
                response.error = error
                response.record()
            recorded_exception.set(error)
            raise
        else:
            response.record()  # for an app that returned without ending its response
        finally:
            forget_request(response.note)


class _Response:
    """What the app has sent so far; its request record goes out once, with the last body."""

    __slots__ = (
        "app",
        "began",
        "context",
        "error",
        "note",
        "path",
        "recorded",
        "root_path",
        "scope",
        "size",
        "started",
        "status",
    )

    def __init__(self, scope: Scope, note: RequestNote) -> None:
        self.scope = scope
        self.note = note
        self.context = get_current()
        # As received: routing changes them for a mounted app (`_as_received`).
        self.app = scope.get("app")
        self.path = scope.get("path", "")
        self.root_path = scope.get("root_path", "")
        self.began = perf_counter()
        self.status = 500
        self.size = 0
        self.started = False
        self.recorded = False
        self.error: BaseException | None = None

    def record(self) -> None:
        """In flight until the record is written: one an exit interrupts is recorded at exit."""
        if not self.recorded:
            exchange = self.exchange()
            _name_span_by_route(trace.get_current_span(self.context), exchange)
            emit_request_record(exchange, self.error, self.context, note=self.note)
            self.recorded = True
            served(self)

    def record_unfinished(self, error: BaseException) -> None:
        if not self.recorded:
            self.error = error
            self.record()
            end_abandoned_span(trace.get_current_span(self.context), error)

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


def _name_span_by_route(span: trace.Span, exchange: HttpExchange) -> None:
    """The server span named for the route its record names: a span opened before routing
    knows only the mount a request went into (`GET /users`, not `GET /users/{username}`), so
    the trace list and the record would name the request apart."""
    route = exchange.route
    if route and span.is_recording() and (getattr(span, "attributes", None) or {}).get("http.route") != route:
        span.set_attribute("http.route", route)
        span.update_name(f"{exchange.method} {route}")


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
                response = scope.get(RESPONSE_KEY)
                if response is not None:
                    response.error = error
            raise


class _AnsweredErrorNote(_HttpMiddleware):
    """Around Starlette's `ExceptionMiddleware`, whose handlers send a 5xx while they handle the
    exception: a `BaseHTTPMiddleware` above (`@app.middleware("http")`) hands that answer on from
    another task, where the exception is no longer being handled."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = scope.get(RESPONSE_KEY)
        if response is None:
            await self.app(scope, receive, send)
            return

        async def send_noting(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 500:
                _note_answered_error(response)
            await send(message)

        await self.app(scope, receive, send_noting)


def _note_answered_error(response: _Response) -> None:
    """The exception being handled as a 5xx is sent: what the exception handler answered."""
    error = sys.exc_info()[1]
    if error is not None:
        response.note.answered_error = error


# How deep under `ServerErrorMiddleware` an app's own middleware may put `ExceptionMiddleware`.
_DEEPEST_MIDDLEWARE = 64


def watch_errors(errors: ASGIApp) -> None:
    """Our middleware inside the stack Starlette built: `SpanErrorMiddleware` inside its
    `ServerErrorMiddleware`, and the note of answered errors around its `ExceptionMiddleware`,
    found through the app's middleware, each of which holds the next as `app`."""
    if not isinstance(errors, ServerErrorMiddleware):
        return
    holder: Any = errors
    holder.app = SpanErrorMiddleware(holder.app)
    for _ in range(_DEEPEST_MIDDLEWARE):
        inner = getattr(holder, "app", None)
        if isinstance(inner, ExceptionMiddleware):
            holder.app = _AnsweredErrorNote(inner)
            return
        if inner is None:
            return
        holder = inner


def _record_on_span(error: BaseException) -> None:
    """The exception event and ERROR status the contrib instrumentation records."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes = exception_attributes(error, error.__traceback__)
    span.add_event("exception", {**attributes, "exception.escaped": "False"})
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {attributes['exception.message']}"))


def _carries_recorded_exception(record: logging.LogRecord) -> bool:
    """A server's line about the exception a request record of this request carries."""
    error = record.exc_info[1] if record.exc_info else None
    return error is not None and error is recorded_exception.get()


def _route_template(scope: Scope) -> str | None:
    """The matched route's path, from the top app: a mounted app's routes (`/subapi/items`)
    under the path of their mount, which Starlette adds to `root_path` (the server's own
    prefix, a proxy's, is `app_root_path`). A mount that serves what it matched itself, such
    as `StaticFiles`, is the route."""
    route = scope.get("route")
    path = _included_route_path(scope) or getattr(route, "path", None)
    if route is None and path is None:
        received = _as_received(scope)
        return _matched_path(_routes_of(received), received)
    if "app_root_path" not in scope:  # nothing mounted matched
        return path
    mounted = str(scope.get("root_path", "")).removeprefix(scope["app_root_path"])
    return mounted if path is None or isinstance(route, Mount) else mounted + path


def _included_route_path(scope: Scope) -> str | None:
    """FastAPI 0.137+ keeps the routes of an included router as declared, so the scope's route
    lacks the prefixes `include_router()` adds, and notes the route's full path in a part of the
    scope of its own (the contrib instrumentation finds the same path for the span)."""
    noted = scope.get(_FASTAPI_SCOPE)
    context = noted.get(_EFFECTIVE_ROUTE) if type(noted) is dict else None
    path = getattr(context, "path_format", None)
    return path if isinstance(path, str) else None


def _as_received(scope: Scope) -> Scope:
    """The scope as the top app received it: routing has put a mounted app in `app`, the mount's
    path in `root_path`, and before Starlette 0.33 cut it from `path`."""
    response = scope.get(RESPONSE_KEY)
    if response is None:
        return scope
    return {**scope, "app": response.app, "path": response.path, "root_path": response.root_path}


def _routes_of(scope: Scope) -> list[BaseRoute]:
    routes: list[BaseRoute] = getattr(getattr(scope.get("app"), "router", None), "routes", [])
    return routes


def _matched_path(routes: list[BaseRoute], scope: Scope) -> str | None:
    """The path of the route a request matched, found again as the contrib instrumentation finds
    the span's: the first full match, else the last partial one (a method the route does not
    take, as a CORS preflight's OPTIONS, which `CORSMiddleware` answers before any route). Into a
    mount's routes too: Starlette notes the route in the scope since 1.8, and FastAPI (0.165)
    only its own routes, not a Starlette `Route` or `add_route`'s, nor its docs pages."""
    partial = None
    for route in _routes_with_full_paths(routes):
        match, child = route.matches(scope)
        if match is Match.FULL:
            path: str | None = getattr(route, "path", None)
            inner = _matched_path(route.routes, {**scope, **child}) if isinstance(route, Mount) else None
            return path if inner is None or path is None else path + inner
        if match is Match.PARTIAL:
            partial = route
    return getattr(partial, "path", None)


def _routes_with_full_paths(routes: list[BaseRoute]) -> Iterator[Any]:
    """An app's routes as they match, an included router's as route contexts under their full
    paths (FastAPI 0.137.2+ nests them under a node without a path, `iter_route_contexts` lays
    them out; looked up where it is, so a plain Starlette app imports no FastAPI)."""
    flatten = getattr(sys.modules.get("fastapi.routing"), "iter_route_contexts", None)
    for route in routes:
        if flatten is not None and not hasattr(route, "path"):
            yield from flatten([route])
        else:
            yield route


def _client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _user_agent(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The one header the record needs, without a dict of them all."""
    for name, value in headers:
        if name == b"user-agent":
            return value.decode("latin-1") or None
    return None


def stack_built_before(app: Starlette, build: Callable[[Starlette], ASGIApp]) -> ASGIApp:
    """The stack the app built before configure() when `instrument_serving_apps` rebuilds it,
    else a new one."""
    built = _built_before.get()
    return built[1] if built is not None and built[0] is app else build(app)


def instrument_serving_apps(frame: FrameType | None, unrecorded: Callable[[Starlette], bool]) -> None:
    """configure() called while apps serve, from a lifespan or a startup handler (or a request):
    Starlette calls those through the app's middleware stack, which it built before our hook was
    there. Each `unrecorded` app up the call stack gets the stack it would have built, around the
    middleware it did build (constructing that again would run the app's own code twice). The
    call under way goes on in the old stack; requests, which a server sends once startup is
    complete, come to the new one."""
    serving: dict[Starlette, ASGIApp] = {}
    while frame is not None:
        app = frame.f_locals.get("self")  # Starlette.__call__'s, among others
        if isinstance(app, Starlette) and app.middleware_stack is not None and unrecorded(app):
            serving[app] = app.middleware_stack
        frame = frame.f_back
    for app, built in serving.items():
        token = _built_before.set((app, built))
        try:
            app.middleware_stack = app.build_middleware_stack()
        finally:
            _built_before.reset(token)


class _UnlessTracedAbove:
    """Our server span, unless one is current already: a Starlette app mounted in an app that
    traced the request, or wrapped in the ASGI `OpenTelemetryMiddleware` as OpenTelemetry's ASGI
    docs show, gets no second span."""

    def __init__(self, app: ASGIApp, traced: ASGIApp) -> None:
        self.app = app
        self.traced = traced

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if trace.get_current_span().get_span_context().is_valid:
            await self.app(scope, receive, send)
        else:
            await self.traced(scope, receive, send)


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The server span's name and `http.route`, as the contrib Starlette instrumentation names
    them, with a route under a `Mount` named whole."""
    route = _route_template(scope)
    method = scope.get("method", "")
    name = f"{method} {route}" if method and route else route or method
    return name, {"http.route": route} if route else {}


def _contrib_middleware(app: Starlette) -> Any | None:
    """The entry `StarletteInstrumentor.instrument_app` put in the app's middleware, inside its
    `ServerErrorMiddleware`, if it did (or the app's own `Middleware(OpenTelemetryMiddleware)`)."""
    found = [entry for entry in app.user_middleware if getattr(entry, "cls", None) is OpenTelemetryMiddleware]
    return found[0] if found else None


def _server_span(app: ASGIApp, contrib: Any | None) -> ASGIApp:
    """The ASGI middleware the app was given by `StarletteInstrumentor.instrument_app` (with its
    options: `kwargs`, or `options` before Starlette 0.35), else ours."""
    options = getattr(contrib, "kwargs", None) or getattr(contrib, "options", None)
    if options is None:
        options = {"excluded_urls": excluded_urls("STARLETTE"), "default_span_details": _span_details}
    return _UnlessTracedAbove(app, OpenTelemetryMiddleware(app, **{**CONTRIB_OPTIONS, **options}))


def _built_without(entry: Any | None, build: Callable[[Starlette], ASGIApp], app: Starlette) -> ASGIApp:
    """The app's stack without one entry of its middleware, which stays in the app's list."""
    if entry is None:
        return build(app)
    index = app.user_middleware.index(entry)
    del app.user_middleware[index]
    try:
        return build(app)
    finally:
        app.user_middleware.insert(index, entry)


def _unrecorded(app: Starlette) -> bool:
    """A plain Starlette app whose stack was built without us (a FastAPI app builds its own)."""
    return type(app).build_middleware_stack is Starlette.build_middleware_stack and app not in _recorded


def _build_middleware_stack(original: Any) -> Any:
    def build_middleware_stack(self: Starlette) -> ASGIApp:
        contrib = _contrib_middleware(self)
        errors = stack_built_before(self, partial(_built_without, contrib, original))
        _recorded.add(self)
        watch_errors(errors)
        records = RequestRecordMiddleware(errors, "STARLETTE")
        return _server_span(records, contrib)

    build_middleware_stack.__wrapped__ = original  # type: ignore[attr-defined]
    return build_middleware_stack


def keep_recorded_exceptions_out(telemetry: Telemetry) -> None:
    """A server's line about an exception a request record carries stays out of the stream;
    the app's lines are noted for the exceptions a request record may carry."""
    keep_server_lines_out(telemetry.handler, _carries_recorded_exception)
    note_logged_errors(telemetry.handler)


def install(telemetry: Telemetry, name: str = "starlette") -> None:
    """Patches once per process; FastAPI builds its stack with its own method, and its own integration."""
    global _installed
    keep_recorded_exceptions_out(telemetry)
    if _installed:
        return
    _installed = True
    Starlette.build_middleware_stack = _build_middleware_stack(  # type: ignore[method-assign]
        Starlette.build_middleware_stack
    )
    instrument_serving_apps(sys._getframe(), _unrecorded)
