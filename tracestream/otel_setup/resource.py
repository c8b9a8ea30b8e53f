"""The OTel resource every record and span carries."""

from __future__ import annotations

import os
import socket

from opentelemetry.sdk.resources import Resource, ServiceInstanceIdResourceDetector

from tracestream.settings import Settings


def build_resource(settings: Settings) -> Resource:
    """Arguments and TRACESTREAM_* win, then OTEL_RESOURCE_ATTRIBUTES. Nothing the app did not say
    is made up (no `service.version` or `deployment.environment` of ours): every exporter, OTLP and
    the console's too, gets this resource, which says what the service is."""
    explicit = {
        "service.name": settings.service_name,
        "service.version": settings.service_version,
        "deployment.environment": settings.environment,
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "telemetry.auto.version": _launcher_version,
    }
    return Resource.create({key: value for key, value in explicit.items() if value is not None})


# The launcher's version (opentelemetry-instrumentation's), where it set us up: upstream's
# configurator adds it to the resource as `telemetry.auto.version`, and ours does the same.
_launcher_version: str | None = None


def set_up_by_the_launcher(version: str) -> None:
    global _launcher_version
    _launcher_version = version


def process_resource() -> Resource:
    """What changes in a forked child: its pid, and the instance id the SDK's detector gives each
    process. The SDK renews that one from Python's fork hook, which a server forking in C
    (uWSGI) never runs: its workers all reported the master's."""
    return Resource({"process.pid": os.getpid()}).merge(ServiceInstanceIdResourceDetector().detect())
