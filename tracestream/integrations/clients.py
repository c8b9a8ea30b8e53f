"""Outgoing HTTP (requests, httpx, urllib3, urllib, aiohttp): the contrib instrumentors inject
`traceparent`, so a service called over HTTP continues the caller's trace. requests calls
through urllib3; contrib's requests instrumentation keeps urllib3's from a second span."""

from __future__ import annotations

from importlib import import_module

from tracestream.otel_setup.telemetry import Telemetry

_INSTRUMENTORS = {
    "requests": ("opentelemetry.instrumentation.requests", "RequestsInstrumentor"),
    "httpx": ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    "urllib3": ("opentelemetry.instrumentation.urllib3", "URLLib3Instrumentor"),
    "urllib": ("opentelemetry.instrumentation.urllib", "URLLibInstrumentor"),
    "aiohttp-client": ("opentelemetry.instrumentation.aiohttp_client", "AioHttpClientInstrumentor"),
}


def install(telemetry: Telemetry, name: str) -> None:
    module, cls = _INSTRUMENTORS[name]
    instrumentor = getattr(import_module(module), cls)()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
