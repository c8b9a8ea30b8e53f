"""A private export pipeline for in-process tests: real exporters and queues, no global providers."""

from __future__ import annotations

import logging
import uuid

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from tracestream.exporters import RedisStreamLogExporter, RedisStreamSpanExporter
from tracestream.otel_setup.logging_bridge import OTelHandler
from tracestream.otel_setup.processors import StreamLogProcessor, StreamSpanProcessor
from tracestream.settings import BatchSettings, Settings

FAST = BatchSettings(schedule_delay=0.02, max_queue_size=10_000, max_export_batch_size=512)


class PrivatePipeline:
    """Log and span processors on `settings`, and a stdlib logger (not propagating) bridged into them."""

    def __init__(self, settings: Settings, batch: BatchSettings = FAST, service: str = "unit") -> None:
        resource = Resource({"service.name": service})
        self.logs = StreamLogProcessor(RedisStreamLogExporter(settings), batch)
        self.spans = StreamSpanProcessor(RedisStreamSpanExporter(settings), batch)
        self.logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(self.logs)
        self.tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(self.spans)
        self.handler = OTelHandler(self.logger_provider, [self.logs], logging.DEBUG)
        self.logger = logging.getLogger(f"{service}.{uuid.uuid4().hex[:8]}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self.handler)

    def flush(self) -> bool:
        logs_ok = self.logs.force_flush(10_000)
        return self.spans.force_flush(10_000) and logs_ok

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger_provider.shutdown()
        self.tracer_provider.shutdown()
