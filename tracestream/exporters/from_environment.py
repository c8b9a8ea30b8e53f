"""The Redis exporters as another configurator builds them: from the environment, with no arguments.

Upstream's configurator (opentelemetry-distro) builds every exporter named in
`OTEL_*_EXPORTER` this way and puts the SDK's batch processors in front. When
`configure()` then joins those providers, its own processors (spool, status, request
records) take over the Redis writes, and these exporters step aside, so nothing is
written twice.
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry import trace
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tracestream._internal_log import internal_logger
from tracestream.exporters.redis_stream import RedisStreamLogExporter, RedisStreamSpanExporter
from tracestream.settings import ConfigError, refuse_to_launch

__all__ = ["EnvironmentLogExporter", "EnvironmentSpanExporter", "step_aside"]

_Exporter = TypeVar("_Exporter", RedisStreamLogExporter, RedisStreamSpanExporter)
_built: weakref.WeakSet[_FromEnvironment[Any]] = weakref.WeakSet()


class _FromEnvironment(Generic[_Exporter]):
    def __init__(self, build: Callable[[], _Exporter]) -> None:
        try:
            self._exporter: _Exporter | None = build()
        except ConfigError as error:  # the configurator that builds us would carry on without us
            refuse_to_launch(error)
        _built.add(self)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # each export is written before it returns

    def shutdown(self) -> None:
        self.step_aside()

    def step_aside(self) -> None:
        exporter, self._exporter = self._exporter, None
        if exporter is not None:
            exporter.shutdown()


class EnvironmentLogExporter(_FromEnvironment[RedisStreamLogExporter], LogRecordExporter):
    """`redis_stream` in OTEL_LOGS_EXPORTER, for any configurator."""

    def __init__(self) -> None:
        super().__init__(RedisStreamLogExporter)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        exporter = self._exporter
        return LogRecordExportResult.SUCCESS if exporter is None else exporter.export(batch)


class EnvironmentSpanExporter(_FromEnvironment[RedisStreamSpanExporter], SpanExporter):
    """`redis_stream` in OTEL_TRACES_EXPORTER, for any configurator."""

    def __init__(self) -> None:
        super().__init__(RedisStreamSpanExporter)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        exporter = self._exporter
        return SpanExportResult.SUCCESS if exporter is None else exporter.export(spans)


def step_aside() -> int:
    """Every exporter built from the environment so far stops writing; how many there were."""
    exporters = list(_built)
    for exporter in exporters:
        exporter.step_aside()
    return len(exporters)


_LAUNCHER_LOGGER = "opentelemetry.instrumentation.auto_instrumentation"
_LAUNCHER_FAILED = "Failed to auto initialize OpenTelemetry"
_GRPC_METRICS = "'otlp_proto_grpc' not found in entry point 'opentelemetry_metrics_exporter'"
_MISSING_EXPORTER = re.compile(
    r"component '(?P<name>[^']+)' not found in entry point 'opentelemetry_(?P<signal>\w+?)_exporter'"
)


class _SayWhenTheLaunchFails(logging.Filter):
    """Another configurator imports these exporters by entry point and may then fail on an
    exporter it cannot find: upstream's distro picks OTLP over gRPC for metrics where
    `OTEL_METRICS_EXPORTER` is unset, and `opentelemetry-bootstrap` does not install it. The
    launcher logs its traceback and runs the app with nothing set up, and no hook of ours runs
    after that: this filter reads the launcher's line and says what it means, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != _LAUNCHER_FAILED or _set_up():
            return True
        error = record.exc_info[1] if record.exc_info else None
        internal_logger.warning(
            "nothing reaches Redis: the launcher stopped before it set anything up (%r); %s",
            error,
            _way_out(str(error)),
        )
        return True


def _set_up() -> bool:
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _way_out(error: str) -> str:
    if _GRPC_METRICS in error and os.environ.get("OTEL_METRICS_EXPORTER") == "otlp":
        return (
            "upstream's opentelemetry-distro sets OTEL_METRICS_EXPORTER=otlp over gRPC where it is "
            "unset: set OTEL_METRICS_EXPORTER=none, or OTEL_PYTHON_DISTRO=tracestream"
        )
    missing = _MISSING_EXPORTER.search(error)
    if missing is None:
        return "its traceback says why"
    variable = f"OTEL_{missing['signal'].upper()}_EXPORTER"
    if missing["name"] == "otlp_proto_grpc":
        return (
            f"{variable} names otlp, which upstream's configurator sends over gRPC, and "
            "opentelemetry-exporter-otlp-proto-grpc is not installed: install it, or set "
            "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
        )
    return f"no exporter named {missing['name']!r} is installed for {variable}"


logging.getLogger(_LAUNCHER_LOGGER).addFilter(_SayWhenTheLaunchFails())
