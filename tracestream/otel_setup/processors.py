"""OTel processors that queue records for a `BatchQueue` instead of exporting inline."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tracestream.otel_setup.pending import PendingLogRecord
from tracestream.otel_setup.pipeline import BatchQueue
from tracestream.otel_setup.settings import BatchSettings


def _readable(item: ReadWriteLogRecord | PendingLogRecord) -> ReadableLogRecord:
    if isinstance(item, ReadWriteLogRecord):
        return ReadableLogRecord(
            log_record=item.log_record,
            resource=item.resource or Resource.get_empty(),
            instrumentation_scope=item.instrumentation_scope,
            limits=item.limits,
        )
    return item.readable()


class StreamLogProcessor(LogRecordProcessor):
    """Queues log records, from the OTel API or from the stdlib bridge, for one exporter."""

    def __init__(
        self, exporter: LogRecordExporter, batch: BatchSettings, shutdown_timeout: float = 5.0
    ) -> None:
        self.exporter = exporter
        # Our Redis exporter encodes captured records directly, skipping the OTel objects.
        export_pending = getattr(exporter, "export_pending", None)
        self.queue: BatchQueue[ReadWriteLogRecord | PendingLogRecord] = BatchQueue(
            "logs", export_pending or self._export_readable, batch
        )
        self._shutdown_timeout = shutdown_timeout

    def _export_readable(self, batch: Sequence[ReadWriteLogRecord | PendingLogRecord]) -> bool:
        records = [_readable(item) for item in batch]
        return self.exporter.export(records) is LogRecordExportResult.SUCCESS

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self.queue.put(log_record)

    def put_pending(self, record: PendingLogRecord) -> None:
        self.queue.put(record)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.queue.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        self.queue.shutdown(self._shutdown_timeout)
        self.exporter.shutdown()  # type: ignore[no-untyped-call]


class StreamSpanProcessor(SpanProcessor):
    """Queues finished, sampled spans for one exporter."""

    def __init__(self, exporter: SpanExporter, batch: BatchSettings, shutdown_timeout: float = 5.0) -> None:
        self.exporter = exporter
        self.queue: BatchQueue[ReadableSpan] = BatchQueue("spans", self._export, batch)
        self._shutdown_timeout = shutdown_timeout

    def _export(self, batch: Sequence[ReadableSpan]) -> bool:
        return self.exporter.export(batch) is SpanExportResult.SUCCESS

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            self.queue.put(span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.queue.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        self.queue.shutdown(self._shutdown_timeout)
        self.exporter.shutdown()
