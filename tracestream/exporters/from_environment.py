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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tracestream._internal_log import internal_logger
from tracestream.exporters.redis_stream import RedisStreamLogExporter, RedisStreamSpanExporter
from tracestream.settings import BatchSettings, ConfigError, configured, refuse_to_launch, sdk_disabled

__all__ = ["REDIS_STREAM", "EnvironmentLogExporter", "EnvironmentSpanExporter", "named", "step_aside"]

REDIS_STREAM = "redis_stream"

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
# Logged first, with the configurator's traceback, by the launcher's module that loads it.
_CONFIGURATOR_LOGGER = f"{_LAUNCHER_LOGGER}._load"
_CONFIGURATOR_FAILED = "Configuration of %s failed"
_GRPC_METRICS = "'otlp_proto_grpc' not found in entry point 'opentelemetry_metrics_exporter'"
_MISSING_EXPORTER = re.compile(
    r"component '(?P<name>[^']+)' not found in entry point 'opentelemetry_(?P<signal>\w+?)_exporter'"
)


class _SayWhenTheLaunchFails(logging.Filter):
    """Another configurator imports these exporters by entry point and may then fail: on an
    exporter it cannot find (upstream's distro picks OTLP over gRPC for metrics where
    `OTEL_METRICS_EXPORTER` is unset, and `opentelemetry-bootstrap` does not install it), or on a
    value the SDK refuses as it builds a provider or a batch processor, after it set the tracer
    provider. The launcher logs its traceback and runs the app without our setup, and no hook of
    ours runs after that: this filter reads the launcher's line and says what it means, in one
    line; a value our setup or the SDK's batch processors refuse stops the launch, as it does
    under our configurator."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in (_CONFIGURATOR_FAILED, _LAUNCHER_FAILED) or configured() is not None:
            return True
        refused = _refused_setting() if named(os.environ) else None
        if refused is not None:
            refuse_to_launch(refused)  # before the configurator's traceback
        if record.msg == _CONFIGURATOR_FAILED:
            return True  # the launcher's own line follows
        error = record.exc_info[1] if record.exc_info else None
        internal_logger.warning("%s (%r); %s", _what_reaches_redis(), error, _way_out(str(error)))
        return True


def named(environ: Mapping[str, str]) -> bool:
    """Whether OTEL_TRACES_EXPORTER or OTEL_LOGS_EXPORTER names ours."""
    return any(
        REDIS_STREAM in (name.strip() for name in environ.get(variable, "").split(","))
        for variable in ("OTEL_TRACES_EXPORTER", "OTEL_LOGS_EXPORTER")
    )


def _refused_setting() -> ConfigError | None:
    """What our setup would have refused had the launch got to it, else what the SDK's batch
    processors refuse."""
    if sdk_disabled():
        return None
    # A floor up, imported only here: the launch failed, and configure() never ran.
    from tracestream.otel_setup.configure import check_settings

    try:
        check_settings()
        for prefix in ("OTEL_BSP", "OTEL_BLRP"):
            BatchSettings.check_the_sdks(prefix)
    except ConfigError as error:
        return error
    return None


def _what_reaches_redis() -> str:
    """Our exporters built so far sit behind the SDK's processors of the configurator that failed."""
    built = {type(exporter) for exporter in _built}
    signals = [name for kind, name in _SIGNALS if kind in built]
    if not signals:
        return "nothing reaches Redis: the launcher stopped before it set anything up"
    return (
        f"only {' and '.join(signals)} reach Redis, through upstream's configurator alone: the launcher "
        "stopped before tracestream's setup, its log capture and every instrumentation"
    )


_SIGNALS = ((EnvironmentSpanExporter, "spans"), (EnvironmentLogExporter, "OTel log records"))


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


_SAY_WHEN_THE_LAUNCH_FAILS = _SayWhenTheLaunchFails()
for _logger_name in (_CONFIGURATOR_LOGGER, _LAUNCHER_LOGGER):
    logging.getLogger(_logger_name).addFilter(_SAY_WHEN_THE_LAUNCH_FAILS)
