"""tracestream: OpenTelemetry logs and traces from FastAPI, Django and Celery into Redis streams.

The setup API loads the OpenTelemetry SDK on first use, so the readers (CLI, console, alerts,
forwarder) never do.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from tracestream.settings import ConfigError, Settings

if sys.flags.bytes_warning:  # -b, -bb: redis-py 8.2 compares bytes with str as it loads, not the app
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BytesWarning)
        import redis  # noqa: F401

if TYPE_CHECKING:
    from tracestream.otel_setup.configure import configure
    from tracestream.otel_setup.telemetry import Telemetry

__version__ = "0.1.0"

__all__ = ["ConfigError", "Settings", "Telemetry", "__version__", "configure"]


def __getattr__(name: str) -> Any:
    if name == "configure":
        from tracestream.otel_setup.configure import configure

        return configure
    if name == "Telemetry":
        from tracestream.otel_setup.telemetry import Telemetry

        return Telemetry
    raise AttributeError(f"module 'tracestream' has no attribute {name!r}")
