"""OTel processors that queue records for a `BatchQueue` instead of exporting inline."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordLimits, LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode, get_current_span

from tracestream.disk_spool import Spool
from tracestream.export_status import register_metrics
from tracestream.exporters.pending import PendingLogRecord
from tracestream.exporters.scrubbed import with_dropped_count
from tracestream.otel_setup.app_overrides import check_propagator
from tracestream.otel_setup.otel_handlers import emitted_by_an_otel_logging_handler
from tracestream.otel_setup.pipeline import BatchQueue
from tracestream.otel_setup.sampling import TraceLogGate, release_trace, sample_ratio
from tracestream.settings import SAMPLE_WEIGHT, BatchSettings


@runtime_checkable
class RowWriter(Protocol):
    """An exporter's `writer` that takes encoded rows: the queue encodes, spools and reports for it."""

    def encode(self, items: Sequence[Any]) -> list[list[str]]: ...

    def write_rows(self, rows: Sequence[list[str]]) -> bool: ...

    def make_spool(self) -> Spool | None: ...

    def publish_status(self, signal: str, status: dict[str, int]) -> None: ...

    @property
    def failing_because(self) -> str: ...


def _row_writer(exporter: object) -> RowWriter | None:
    """The writer behind our Redis exporters; None for any other exporter."""
    writer = getattr(exporter, "writer", None)
    return writer if isinstance(writer, RowWriter) else None


def _shut_down(queue: BatchQueue[Any], exporter: Any, timeout: float) -> None:
    """Ours closes once its worker is done; another exporter was shut down by its queue (once:
    OTLP's warns at a second call)."""
    queue.shutdown(timeout)
    if _row_writer(exporter) is not None:
        exporter.shutdown()


def _queue(
    name: str, exporter: object, batch: BatchSettings, export: Callable[[Sequence[Any]], bool]
) -> BatchQueue[Any]:
    """Our Redis exporters get the spool and status reports; any other exporter gets `export`."""
    writer = _row_writer(exporter)
    if writer is not None:
        queue: BatchQueue[Any] = BatchQueue(
            name,
            writer.write_rows,
            batch,
            encode=writer.encode,
            spool=writer.make_spool(),
            report=lambda status: writer.publish_status(name, status),
            why_failing=lambda: writer.failing_because,
        )
        if queue.spool:  # a dead process left records for this stream: replay them now
            queue.start()
    else:  # named by the exporter too, so a line about its records says whose they are
        inner = getattr(exporter, "exporter", exporter)  # behind the scrubbing wrapper
        shutdown = getattr(exporter, "shutdown", None)
        queue = BatchQueue(f"{name} ({type(inner).__name__})", export, batch, interrupt=shutdown)
    register_metrics(name, queue.status)
    return queue


class SampledPendingRecord(PendingLogRecord, Protocol):
    """A captured record, with what sampling decides on and where its weight goes."""

    @property
    def context(self) -> Context: ...

    @property
    def severity(self) -> SeverityNumber: ...

    @property
    def attributes(self) -> MutableMapping[str, Any]: ...


LogItem = ReadWriteLogRecord | SampledPendingRecord


def _readable(item: LogItem, limits: LogRecordLimits | None) -> ReadableLogRecord:
    if isinstance(item, ReadWriteLogRecord):  # the SDK's logger held it to its limits
        return ReadableLogRecord(
            log_record=item.log_record,
            resource=item.resource or Resource.get_empty(),
            instrumentation_scope=item.instrumentation_scope,
            limits=item.limits,
        )
    readable = item.readable()
    return readable if limits is None else _held_to(readable, limits)


def _held_to(readable: ReadableLogRecord, limits: LogRecordLimits) -> ReadableLogRecord:
    """OTel's log record limits on a record we captured, as the SDK holds the records it makes:
    the newest attributes kept, texts cut, the dropped counted. Cut here, without the SDK's
    warning for each key or text, which would print to the app's terminal."""
    record = readable.log_record
    attributes = dict(record.attributes or {})
    count, length = limits.max_log_record_attributes, limits.max_log_record_attribute_length
    kept = attributes
    if count is not None and len(attributes) > count:
        kept = dict(list(attributes.items())[len(attributes) - count :])
    if length is not None:
        kept = {key: _cut_texts(value, length) for key, value in kept.items()}
    # the record `readable()` made for this export alone
    record.attributes = with_dropped_count(kept, len(attributes) - len(kept))
    return replace(readable, limits=limits)


def _cut_texts(value: Any, length: int) -> Any:
    if isinstance(value, (str, bytes)):
        return value[:length]
    if isinstance(value, (list, tuple)):
        return [_cut_texts(item, length) for item in value]
    if isinstance(value, dict):
        return {key: _cut_texts(item, length) for key, item in value.items()}
    return value


def _weigh(item: LogItem, weight: float) -> None:
    attributes = item.log_record.attributes if isinstance(item, ReadWriteLogRecord) else item.attributes
    if attributes is not None:  # the SDK gives every record a (mutable) attribute map
        attributes[SAMPLE_WEIGHT] = weight  # type: ignore[index]


def _tracer_sample_ratio() -> float | None:
    return sample_ratio(getattr(trace.get_tracer_provider(), "sampler", None))


class _QueueOwner:
    """What both processors do with their queue: flush it when asked, close it once."""

    exporter: Any
    queue: BatchQueue[Any]
    joined: bool  # set when added to a provider another setup made (see `shutdown`)
    _shutdown_timeout: float

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.queue.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        """From a provider another setup made, when that setup shuts it down: flushed, and kept
        open until tracestream's exit, as the process goes on making spans and records (the log
        queue also takes the capture's)."""
        if self.joined:
            self.queue.flush(self._shutdown_timeout)
        else:
            self.close()

    def close(self) -> None:
        _shut_down(self.queue, self.exporter, self._shutdown_timeout)


class StreamLogProcessor(_QueueOwner, LogRecordProcessor):
    """Queues log records, from the OTel API or from the stdlib bridge, for one exporter.

    With `follow_trace`, records below WARN follow their trace's sampling decision (see sampling.py).
    """

    def __init__(
        self,
        exporter: LogRecordExporter,
        batch: BatchSettings,
        shutdown_timeout: float = 5.0,
        follow_trace: bool = True,
        limits: LogRecordLimits | None = None,
    ) -> None:
        self.exporter = exporter
        self._limits = limits  # OTel's, for the records we captured; ours hold them in Redis
        # Our Redis exporter encodes captured records directly, skipping the OTel objects.
        self.queue: BatchQueue[LogItem] = _queue("logs", exporter, batch, self._export_readable)
        self._shutdown_timeout = shutdown_timeout
        self.joined = False
        self.gate: TraceLogGate[LogItem] | None = None
        if follow_trace:
            self.gate = TraceLogGate(self.queue.put, _weigh, _tracer_sample_ratio)
            self.queue.status_before = self.gate.status

    def _export_readable(self, batch: Sequence[LogItem]) -> bool:
        records = [_readable(item, self._limits) for item in batch]
        return self.exporter.export(records) is LogRecordExportResult.SUCCESS

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if emitted_by_an_otel_logging_handler():
            return  # a stdlib record: the capture has decided on it
        gate = self.gate
        if gate is None:
            self.queue.put(log_record)
            return
        record = log_record.log_record
        severity = record.severity_number
        gate.admit(
            log_record,
            record.trace_id or 0,
            bool(record.trace_flags and record.trace_flags.sampled),
            severity.value if severity is not None else 0,
        )

    def put_pending(self, record: SampledPendingRecord) -> None:
        gate = self.gate
        if gate is None:
            self.queue.put(record)
            return
        span_context = get_current_span(record.context).get_span_context()
        gate.admit(record, span_context.trace_id, span_context.trace_flags.sampled, record.severity.value)

    def wake(self) -> None:
        self.queue.wake()


class StreamSpanProcessor(_QueueOwner, SpanProcessor):
    """Queues finished, sampled spans for one exporter."""

    def __init__(self, exporter: SpanExporter, batch: BatchSettings, shutdown_timeout: float = 5.0) -> None:
        self.exporter = exporter
        self.queue: BatchQueue[ReadableSpan] = _queue("spans", exporter, batch, self._export)
        self._shutdown_timeout = shutdown_timeout
        self.joined = False
        # Whether a span that starts a trace is housekeeping, decided as it starts (from the
        # stack that starts it: Celery's broker traffic, integrations/celery.py): it is left out,
        # with every span under it (the commands of a pipeline): their trace ids while it is open.
        self.quiet_root: Callable[[Span], bool] | None = None
        self._quiet_traces: set[int] = set()

    def _export(self, batch: Sequence[ReadableSpan]) -> bool:
        return self.exporter.export(batch) is SpanExportResult.SUCCESS

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        check_propagator()
        quiet_root = self.quiet_root
        if quiet_root is not None and span.parent is None and quiet_root(span):
            self._quiet_traces.add(span.context.trace_id)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        if self._quiet_traces and context.trace_id in self._quiet_traces:
            if span.parent is None:
                self._quiet_traces.discard(context.trace_id)
            return
        if self.queue.closed and span.kind is SpanKind.CLIENT:
            # A call an exit handler registered before configure() makes (Sentry's last upload,
            # as Sentry's docs have it set up first): a line at every exit would say little.
            self.queue.count_late()
            return
        if context.trace_flags.sampled:
            self.queue.put(span)
        elif span.status.status_code is StatusCode.ERROR:  # seen only under a RECORD_ONLY sampler
            release_trace(context.trace_id)
