"""FastAPI: the contrib instrumentation for spans, plus the request records and trace headers
of `tracestream.integrations.starlette`.

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

import sys
from collections.abc import Awaitable
from typing import Any

from fastapi.applications import FastAPI
from opentelemetry.instrumentation import fastapi as fastapi_instrumentation
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from starlette.applications import Starlette
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from tracestream._internal_log import internal_logger
from tracestream.integrations.http_records import requests_accounted_for
from tracestream.integrations.starlette import (
    CONTRIB_OPTIONS,
    EXCLUDED_KEY,
    RESPONSE_KEY,
    RequestRecordMiddleware,
    instrument_serving_apps,
    keep_recorded_exceptions_out,
    stack_built_before,
    watch_errors,
)
from tracestream.otel_setup.telemetry import Telemetry

# FastAPI telemetry settings that only shape FastAPI's own telemetry, which has stepped aside.
_UNUSED_TELEMETRY_SETTINGS = ("tracer_provider", "meter_provider", "logger_provider")
_installed = False
_excluding = False  # FastAPI.__call__ asks apps' telemetry exclude callables


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
        errors = stack_built_before(self, original)
        watch_errors(errors)
        return ServerErrorMiddleware(RequestRecordMiddleware(errors, "FASTAPI"))

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
            scope[EXCLUDED_KEY] = True
            with suppress_http_instrumentation():
                await original(self, scope, receive, send)
        else:
            await original(self, scope, receive, send)

    return call


def _no_second_span_in_a_mounted_app(original: Any) -> Any:
    """The contrib instrumentation instruments every FastAPI app, one mounted in another too (the
    Sub Applications tutorial's), whose span then opened inside the request's: the app's lines
    carried it and its exception was on it alone. A request the app it is mounted in records
    already gets none."""

    def call(self: OpenTelemetryMiddleware, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Not a coroutine of its own: a frame less on every request's way."""
        if RESPONSE_KEY in scope:
            return self.app(scope, receive, send)  # type: ignore[no-any-return]
        return original(self, scope, receive, send)  # type: ignore[no-any-return]

    return call


def _say_apps_instrumented_without_us() -> None:
    """Apps `FastAPIInstrumentor.instrument_app()` instrumented before configure() (as the
    OpenTelemetry docs' FastAPI example does): contrib's wrapper holds FastAPI's own builder,
    so ours never runs for them, and building their stack again would make their middleware a
    second time."""
    for app in list(getattr(fastapi_instrumentation._InstrumentedFastAPI, "_instrumented_fastapi_apps", ())):
        requests_accounted_for()
        internal_logger.warning(
            "the FastAPI app %r was instrumented by FastAPIInstrumentor.instrument_app() before "
            "configure() ran: its requests get spans but no request records or trace headers; call "
            "configure() first (it instruments every FastAPI app itself)",
            getattr(app, "title", "FastAPI"),
        )


def _unrecorded(app: Starlette) -> bool:
    """A FastAPI app that the contrib instrumentation has yet to instrument."""
    return isinstance(app, FastAPI) and not getattr(app, "_is_instrumented_by_opentelemetry", False)


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
    keep_recorded_exceptions_out(telemetry)
    if _installed:
        return
    _installed = True
    # The apps are instrumented as they build their stack, not by `instrument()`, whose subclass
    # of `FastAPI` would be the app's type and the frame FastAPI's own warnings point at.
    if FastAPIInstrumentor().is_instrumented_by_opentelemetry:
        _add_contrib_options()
    FastAPI.build_middleware_stack = _build_middleware_stack(  # type: ignore[method-assign]
        FastAPI.build_middleware_stack
    )
    OpenTelemetryMiddleware.__call__ = _no_second_span_in_a_mounted_app(  # type: ignore[method-assign]
        OpenTelemetryMiddleware.__call__
    )
    _say_apps_instrumented_without_us()
    instrument_serving_apps(sys._getframe(), _unrecorded)
