"""What `configure()` installed in this process, for the integrations and the launcher to find."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from tracestream.otel_setup import app_overrides, log_capture
from tracestream.otel_setup.logging_bridge import OTelHandler
from tracestream.otel_setup.processors import StreamLogProcessor, StreamSpanProcessor
from tracestream.settings import Settings, note_configured, shown_url

_installed: Telemetry | None = None


@dataclass(frozen=True, repr=False)
class Telemetry:
    """What `configure()` installed; keep it to flush or shut down explicitly."""

    settings: Settings
    resource: Resource
    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    handler: OTelHandler
    log_processors: tuple[StreamLogProcessor, ...]
    span_processors: tuple[StreamSpanProcessor, ...]
    # False when another setup (upstream's configurator, the app) had set the providers first.
    owns_providers: bool = True

    def __repr__(self) -> str:
        """Short: a notebook cell or a REPL line that ends with `configure()` shows it."""
        settings = self.settings
        return f"<Telemetry to {shown_url(settings.redis_url)}, stream {settings.stream!r}>"

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Export everything recorded so far; False if `timeout` seconds were not enough."""
        millis = int(timeout * 1000)
        spans_ok = self.tracer_provider.force_flush(millis)
        return all(p.force_flush(millis) for p in self.log_processors) and spans_ok

    def shutdown(self) -> None:
        log_capture.uninstall()
        app_overrides.uninstall()
        if self.owns_providers:
            self.tracer_provider.shutdown()
            self.logger_provider.shutdown()
            return
        for span_processor in self.span_processors:
            span_processor.close()
        for log_processor in self.log_processors:
            log_processor.close()


def installed() -> Telemetry | None:
    """The telemetry `configure()` installed, or None before it ran."""
    return _installed


def remember(telemetry: Telemetry) -> None:
    global _installed
    _installed = telemetry
    note_configured(telemetry.settings)
