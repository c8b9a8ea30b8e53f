"""Hooks for the `opentelemetry-instrument` launcher.

Upstream's distro defaults every exporter to `otlp`; when that exporter is missing,
configuration raises, the launcher swallows it, and no instrumentation loads at all.
Ours defaults to the Redis stream exporters and installs through `configure()`, so the
launcher and the one-call setup give exactly the same pipeline.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _BaseConfigurator

from tracestream.integrations import INSTALLED_BY_CONFIGURE
from tracestream.otel_setup.configure import REDIS_STREAM, configure, installed
from tracestream.otel_setup.settings import ConfigError

_DEFAULTS = {
    "OTEL_TRACES_EXPORTER": REDIS_STREAM,
    "OTEL_LOGS_EXPORTER": REDIS_STREAM,
    "OTEL_METRICS_EXPORTER": "none",
}


class TracestreamDistro(BaseDistro):  # type: ignore[misc]
    """Selected by the launcher through the `opentelemetry_distro` entry point."""

    def _configure(self, **kwargs: Any) -> None:
        for name, value in _DEFAULTS.items():
            os.environ.setdefault(name, value)

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        if installed() is not None and entry_point.name in INSTALLED_BY_CONFIGURE:
            # configure() instrumented it with our additions (Django: once settings are ready);
            # instrumenting again here would only warn, or configure Django's settings too early.
            return
        if entry_point.name == "logging":
            # Our handler is already on root; a second OTel handler would double every record.
            kwargs["enable_log_auto_instrumentation"] = False
        super().load_instrumentor(entry_point, **kwargs)


class TracestreamConfigurator(_BaseConfigurator):
    """Selected by the launcher through the `opentelemetry_configurator` entry point."""

    def _configure(self, **kwargs: Any) -> None:
        try:
            configure()
        except ConfigError as error:
            # The launcher would log and carry on uninstrumented; a bad setting must be seen.
            # We run inside site import, where SystemExit is a fatal interpreter error.
            print(f"tracestream: invalid configuration: {error}", file=sys.stderr, flush=True)
            os._exit(2)
