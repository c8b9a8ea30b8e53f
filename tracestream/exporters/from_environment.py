"""The Redis exporters as another configurator builds them: from the environment, with no arguments.

Upstream's configurator (opentelemetry-distro) builds every exporter named in
`OTEL_*_EXPORTER` this way and puts the SDK's batch processors in front. When
`configure()` then joins those providers, its own processors (spool, status, request
records) take over the Redis writes, and these exporters step aside, so nothing is
written twice.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

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
