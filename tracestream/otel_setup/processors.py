"""OTel processors that queue records for a `BatchQueue` instead of exporting inline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tracestream.disk_spool import Spool
from tracestream.export_status import register_metrics
from tracestream.exporters.pending import PendingLogRecord
from tracestream.otel_setup.pipeline import BatchQueue
from tracestream.settings import BatchSettings


@runtime_checkable
class RowWriter(Protocol):
    """An exporter's `writer` that takes encoded rows: the queue encodes, spools and reports for it."""

    def encode(self, items: Sequence[Any]) -> list[list[str]]: ...

    def write_rows(self, rows: Sequence[list[str]]) -> bool: ...

    def make_spool(self) -> Spool | None: ...

    def publish_status(self, signal: str, status: dict[str, int]) -> None: ...


def _queue(
    name: str, exporter: object, batch: BatchSettings, export: Callable[[Sequence[Any]], bool]
) -> BatchQueue[Any]:
    """Our Redis exporters get the spool and status reports; any other exporter gets `export`."""
    writer = getattr(exporter, "writer", None)
    if isinstance(writer, RowWriter):
        queue: BatchQueue[Any] = BatchQueue(
            name,
            writer.write_rows,
            batch,
            encode=writer.encode,
            spool=writer.make_spool(),
            report=lambda status: writer.publish_status(name, status),
        )
        if queue.spool:  # a dead process left records for this stream: replay them now
            queue.start()
    else:
        queue = BatchQueue(name, export, batch)
    register_metrics(name, queue.status)
    return queue


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
        self.queue: BatchQueue[ReadWriteLogRecord | PendingLogRecord] = _queue(
            "logs", exporter, batch, self._export_readable
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
        self.queue: BatchQueue[ReadableSpan] = _queue("spans", exporter, batch, self._export)
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
