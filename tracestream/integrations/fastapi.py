"""FastAPI: the contrib instrumentation for spans, plus request records and trace headers.

`FastAPIInstrumentor.instrument()` only replaces the `FastAPI` class, so an app built
before `configure()` would be missed. Every FastAPI app builds its middleware stack on
its first call, so we hook that instead: the app gets the contrib instrumentation
if it lacks it, and our `RequestRecordMiddleware` sits inside the server span and
outside Starlette's `ServerErrorMiddleware`, where it sees every status, every
exception, and can add the trace headers to 500 responses too. The request record is
written as the last body message goes to the server, so it is queued before the client
has the response, and it times what the client waited for, as the server span does;
background tasks run after that.

The first call is the lifespan's, so an app whose lifespan or startup handler calls
`configure()` has built its stack already: it gets the stack it would have built then,
around the middleware it built, before it serves a request.

FastAPI's own telemetry (0.142+) steps aside for the contrib instrumentation's: the requests
an app's `FastAPI(telemetry=...)` excludes stay untraced here too, and the providers it names
for FastAPI's telemetry, which go unused, are named in one line.

An unhandled exception goes on as it does without us: the span gets its exception
event and ERROR status, the server prints its traceback. The server's line for it is
kept out of the stream only, since a record carries the exception (the request record,
or for a background task's exception an ERROR record of its own): the request's context
remembers which exception that was, and the server logs it from that same context (the
request's task).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from time import perf_counter
from types import FrameType
from typing import Any

from fastapi import routing as fastapi_routing
from fastapi.applications import FastAPI
from opentelemetry import trace
from opentelemetry.context import get_current
from opentelemetry.instrumentation import fastapi as fastapi_instrumentation
from opentelemetry.instrumentation.asgi import get_host_port_url_tuple
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import Status, StatusCode
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracestream._internal_log import internal_logger
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
# Where FastAPI 0.137+ notes the route a request selected, with its full path.
_FASTAPI_SCOPE, _EFFECTIVE_ROUTE = "fastapi", "effective_route_context"
# The scope key of a request the app's own `FastAPI(telemetry={"exclude": ...})` keeps out.
_EXCLUDED = "tracestream.excluded"
# A serving app and the stack it built before configure(), which `_build_middleware_stack`
# instruments instead of building the app's middleware a second time.
_built_before: ContextVar[tuple[FastAPI, ASGIApp] | None] = ContextVar("built_before", default=None)
# FastAPI telemetry settings that only shape FastAPI's own telemetry, which has stepped aside.
_UNUSED_TELEMETRY_SETTINGS = ("tracer_provider", "meter_provider", "logger_provider")
_installed = False
_excluding = False  # FastAPI.__call__ asks apps' telemetry exclude callables


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

    A URL the contrib instrumentation excludes (OTEL_PYTHON_FASTAPI_EXCLUDED_URLS), or a request
    the app's `FastAPI(telemetry={"exclude": ...})` excludes, gets none, and its access line stays
    out of the stream as well.
    """

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)
        self.excluded = excluded_urls("FASTAPI")

    def _is_excluded(self, scope: Scope) -> bool:
        if _EXCLUDED in scope:
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
    path = _included_route_path(scope) or getattr(route, "path", None)
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


def _matching_route(scope: Scope) -> Any:
    """The route a request matched, found again as the contrib instrumentation finds the span's:
    the first full match, else the last partial one (a method the route does not take, as a CORS
    preflight's OPTIONS, which `CORSMiddleware` answers before any route). FastAPI (0.165) names
    only its own routes in the scope, not a Starlette `Route` or `add_route`'s, nor its docs pages."""
    partial = None
    for route in _routes_with_full_paths(getattr(getattr(scope.get("app"), "router", None), "routes", [])):
        match = route.matches(scope)[0]
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL:
            partial = route
    return partial


def _routes_with_full_paths(routes: list[BaseRoute]) -> Iterator[Any]:
    """An app's routes as they match, an included router's as route contexts under their full
    paths (FastAPI 0.137.2+ nests them under a node without a path, `iter_route_contexts` lays
    them out)."""
    flatten = getattr(fastapi_routing, "iter_route_contexts", None)
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


def _build_middleware_stack(original: Any) -> Any:
    def build_middleware_stack(self: FastAPI) -> ASGIApp:
        if not getattr(self, "_is_instrumented_by_opentelemetry", False):
            # An app created before configure(): instrument it now; instrument_app re-enters here.
            FastAPIInstrumentor.instrument_app(self, **CONTRIB_OPTIONS)
            if getattr(self, "_is_instrumented_by_opentelemetry", False):
                stack: ASGIApp = self.build_middleware_stack()
                return stack
        _say_unused_telemetry_settings(self)
        _honour_telemetry_exclude(self)
        # The contrib instrumentation unwraps the outermost ServerErrorMiddleware and puts its
        # span around what is inside, so ours goes inside a plain one.
        built = _built_before.get()
        errors = built[1] if built is not None and built[0] is self else original(self)
        if isinstance(errors, ServerErrorMiddleware):
            errors.app = SpanErrorMiddleware(errors.app)
        return ServerErrorMiddleware(RequestRecordMiddleware(errors))

    build_middleware_stack.__wrapped__ = original  # type: ignore[attr-defined]
    return build_middleware_stack


def _say_unused_telemetry_settings(app: FastAPI) -> None:
    """The providers an app named in `FastAPI(telemetry=...)` serve FastAPI's own telemetry, which
    steps aside for the contrib instrumentation's: that one writes to the global providers."""
    settings = getattr(app, "_telemetry", None) or {}
    unused = [name for name in _UNUSED_TELEMETRY_SETTINGS if settings.get(name) is not None]
    if unused:
        internal_logger.warning(
            "the FastAPI app %r names its own %s in telemetry=, which tracestream does not use: the "
            "contrib instrumentation traces its requests instead of FastAPI's telemetry, into the "
            "global providers configure() set; add your processors and readers to those instead",
            app.title,
            " and ".join(unused),
        )


def _honour_telemetry_exclude(app: FastAPI) -> None:
    """Once an app that excludes requests from FastAPI's telemetry (0.142+) builds its stack: an
    app without one pays nothing per request."""
    global _excluding
    settings = getattr(app, "_telemetry", None) or {}
    if not _excluding and settings.get("exclude") is not None:
        _excluding = True
        FastAPI.__call__ = _skip_excluded(FastAPI.__call__)  # type: ignore[method-assign]


def _skip_excluded(original: Any) -> Any:
    """The app's `FastAPI(telemetry={"exclude": ...})`, which FastAPI no longer applies once the
    contrib instrumentation is in the stack: a request or WebSocket it excludes runs with HTTP
    instrumentation suppressed (no server span, nor client spans for the calls it makes) and gets
    no request record or trace headers. The callable is asked here, then by FastAPI.
    Starlette looks `__call__` up on the class."""

    async def call(self: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
        exclude = self._telemetry.get("exclude")
        if exclude is not None and scope["type"] != "lifespan" and exclude(scope):
            scope[_EXCLUDED] = True
            with suppress_http_instrumentation():
                await original(self, scope, receive, send)
        else:
            await original(self, scope, receive, send)

    return call


def _say_apps_instrumented_without_us() -> None:
    """Apps `FastAPIInstrumentor.instrument_app()` instrumented before configure() (as the
    OpenTelemetry docs' FastAPI example does): contrib's wrapper holds FastAPI's own builder,
    so ours never runs for them, and building their stack again would make their middleware a
    second time."""
    for app in list(getattr(fastapi_instrumentation._InstrumentedFastAPI, "_instrumented_fastapi_apps", ())):
        internal_logger.warning(
            "the FastAPI app %r was instrumented by FastAPIInstrumentor.instrument_app() before "
            "configure() ran: its requests get spans but no request records or trace headers; call "
            "configure() first (it instruments every FastAPI app itself)",
            getattr(app, "title", "FastAPI"),
        )


def _instrument_serving_apps(frame: FrameType | None) -> None:
    """configure() called while apps serve, from a lifespan or a startup handler (or a request):
    Starlette calls those through the app's middleware stack, which it built before our hook was
    there. Each such app up the call stack is instrumented now, unless contrib did already."""
    serving: dict[FastAPI, ASGIApp] = {}
    while frame is not None:
        app = frame.f_locals.get("self")  # Starlette.__call__'s, among others
        if (
            isinstance(app, FastAPI)
            and app.middleware_stack is not None
            and not getattr(app, "_is_instrumented_by_opentelemetry", False)
        ):
            serving[app] = app.middleware_stack
        frame = frame.f_back
    for app, built in serving.items():
        _instrument_serving(app, built)


def _instrument_serving(app: FastAPI, built: ASGIApp) -> None:
    """The stack the app would have built, around the middleware it did build (constructing that
    again would run the app's own code twice). The call under way goes on in the old stack;
    requests, which a server sends once startup is complete, come to the new one."""
    token = _built_before.set((app, built))
    try:
        app.middleware_stack = app.build_middleware_stack()
    finally:
        _built_before.reset(token)


def _add_contrib_options() -> None:
    """The launcher's other distro instrumented FastAPI without our options: the apps it has yet to
    make get them too, beside whatever options it chose."""
    instrumented = fastapi_instrumentation._InstrumentedFastAPI
    chosen = getattr(instrumented, "_instrument_kwargs", None)
    if isinstance(chosen, dict):
        options: Any = {**CONTRIB_OPTIONS, **chosen}
        instrumented._instrument_kwargs = options


def install(telemetry: Telemetry, name: str = "fastapi") -> None:
    """Patches once per process, then instruments the apps serving already; the line filters go on
    each configured handler."""
    global _installed
    for logger_name in SERVER_ERROR_LOGGERS:
        replace_lines(telemetry.handler, logger_name, _carries_recorded_exception)
    if _installed:
        return
    _installed = True
    instrumentor = FastAPIInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(**CONTRIB_OPTIONS)
    else:
        _add_contrib_options()
    FastAPI.build_middleware_stack = _build_middleware_stack(  # type: ignore[method-assign]
        FastAPI.build_middleware_stack
    )
    _say_apps_instrumented_without_us()
    _instrument_serving_apps(sys._getframe())
