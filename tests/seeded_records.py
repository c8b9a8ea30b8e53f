"""Writing records for reader tests through the exporter's own writer and schema encoders."""

from __future__ import annotations

import time
from typing import Any

import redis
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.support import RedisHandle
from tracestream import schema
from tracestream.exporters import RedisStreamLogExporter, RedisStreamSpanExporter, encoding
from tracestream.settings import Settings

SEVERITY_NUMBERS = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}


class RecordWriter:
    """Appends log rows exactly as the exporter does (script, trace index and all)."""

    def __init__(self, handle: RedisHandle, **settings: Any) -> None:
        self.settings = Settings.load(environ={}, redis_url=handle.url, stream=handle.stream, **settings)
        self.writer = RedisStreamLogExporter(self.settings).writer
        self._ids = schema.RecordIds()

    def row(
        self,
        body: str,
        *,
        service: str = "api",
        instance: str = "1",
        severity: str = "INFO",
        trace_id: int = 0,
        span_id: int = 0,
        attributes: dict[str, Any] | None = None,
        exception: tuple[str, str, str] = encoding.NO_EXCEPTION,
        code: str = "app/views.py:10 in handle",
    ) -> list[str]:
        attributes_of_resource = {"service.name": service, "service.instance.id": instance}
        resource = encoding.EncodedResource.of(Resource(attributes_of_resource))
        now = time.time_ns()
        return encoding.log_values(
            self._ids.next(), now, severity, SEVERITY_NUMBERS[severity], body, resource,
            trace_id, span_id, 1, "app", code, attributes or {}, exception,
        )  # fmt: skip

    def write(self, *rows: list[str]) -> None:
        assert self.writer.write_rows(list(rows))

    def log(self, body: str, **options: Any) -> None:
        self.write(self.row(body, **options))

    def close(self) -> None:
        self.writer.close()


def tracer_provider(handle: RedisHandle, service: str, **settings: Any) -> TracerProvider:
    """A private provider whose spans go straight to the span stream."""
    config = Settings.load(environ={}, redis_url=handle.url, stream=handle.stream, **settings)
    provider = TracerProvider(resource=Resource({"service.name": service}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(RedisStreamSpanExporter(config)))
    return provider


def blocked_reader(admin: redis.Redis) -> str | None:
    """The id of a client blocked in XREAD right now (flag `b`), so killing it interrupts the read."""
    return next(
        (str(c["id"]) for c in admin.client_list() if c["cmd"] == "xread" and "b" in c["flags"]), None
    )
