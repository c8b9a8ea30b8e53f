"""tracestream: OpenTelemetry logs and traces from FastAPI, Django and Celery into Redis streams."""

from tracestream.otel_setup.configure import configure
from tracestream.otel_setup.telemetry import Telemetry
from tracestream.settings import ConfigError, Settings

__version__ = "0.1.0"

__all__ = ["ConfigError", "Settings", "Telemetry", "__version__", "configure"]
