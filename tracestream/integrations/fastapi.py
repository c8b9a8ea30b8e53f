"""FastAPI: the contrib instrumentation for spans, plus request records and trace headers.

`FastAPIInstrumentor.instrument()` only replaces the `FastAPI` class, so an app built
before `configure()` would be missed. Every FastAPI app builds its middleware stack on
its first request, so we hook that instead: the app gets the contrib instrumentation
if it lacks it, and our `RequestRecordMiddleware` sits inside the server span and
outside Starlette's `ServerErrorMiddleware`, where it sees every status, every
exception, and can add the trace headers to 500 responses too.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from fastapi.applications import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracestream.integrations.http_records import HttpExchange, emit_request_record, trace_headers
from tracestream.otel_setup.configure import Telemetry

# Per-message `http send`/`http receive` spans triple the span count for no insight.
_OPTIONS: dict[str, Any] = {"exclude_spans": ["receive", "send"]}
_installed = False


class RequestRecordMiddleware:
    """Writes one request record per HTTP request and returns the trace id in headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        headers = [(name.lower().encode(), value.encode()) for name, value in trace_headers()]
        response: dict[str, Any] = {"status": 500, "size": 0, "started": False}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["started"] = True
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
            elif message["type"] == "http.response.body":
                response["size"] += len(message.get("body", b""))
            await send(message)

        error: Exception | None = None
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            # ServerErrorMiddleware has already answered 500; the record carries the exception,
            # so swallowing it here spares uvicorn a second, trace-less "Exception in ASGI
            # application" line.
            error = exc
            if not response["started"]:
                await PlainTextResponse("Internal Server Error", 500)(scope, receive, send_with_headers)
        emit_request_record(_exchange(scope, response, started), error)


def _exchange(scope: Scope, response: dict[str, Any], started: float) -> HttpExchange:
    request_headers = dict(scope.get("headers") or ())
    client = scope.get("client")
    route = scope.get("route")
    return HttpExchange(
        method=scope.get("method", ""),
        path=scope.get("path", ""),
        route=getattr(route, "path", None),
        status=response["status"],
        duration_ms=(perf_counter() - started) * 1000,
        client=client[0] if client else None,
        user_agent=request_headers.get(b"user-agent", b"").decode("latin-1") or None,
        response_size=response["size"],
    )


def _build_middleware_stack(original: Any) -> Any:
    def build_middleware_stack(self: FastAPI) -> ASGIApp:
        if not getattr(self, "_is_instrumented_by_opentelemetry", False):
            # An app created before configure(): instrument it now; instrument_app re-enters here.
            FastAPIInstrumentor.instrument_app(self, **_OPTIONS)
            if getattr(self, "_is_instrumented_by_opentelemetry", False):
                stack: ASGIApp = self.build_middleware_stack()
                return stack
        # The contrib instrumentation unwraps the outermost ServerErrorMiddleware and puts its
        # span around what is inside, so ours goes inside a plain one.
        return ServerErrorMiddleware(RequestRecordMiddleware(original(self)))

    build_middleware_stack.__wrapped__ = original  # type: ignore[attr-defined]
    return build_middleware_stack


def install(telemetry: Telemetry, name: str = "fastapi") -> None:
    """Patches once per process."""
    global _installed
    if not _installed:
        _installed = True
        instrumentor = FastAPIInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(**_OPTIONS)
        FastAPI.build_middleware_stack = _build_middleware_stack(  # type: ignore[method-assign]
            FastAPI.build_middleware_stack
        )
