"""Outgoing HTTP (requests, httpx): the contrib instrumentors inject `traceparent`, so a
service called over HTTP continues the caller's trace."""

from __future__ import annotations

from importlib import import_module

from tracestream.otel_setup.telemetry import Telemetry

_INSTRUMENTORS = {
    "requests": ("opentelemetry.instrumentation.requests", "RequestsInstrumentor"),
    "httpx": ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
}


def install(telemetry: Telemetry, name: str) -> None:
    module, cls = _INSTRUMENTORS[name]
    instrumentor = getattr(import_module(module), cls)()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
