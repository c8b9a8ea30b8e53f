"""The contract between the logging bridge and the exporters for not-yet-translated records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource

from tracestream.exporters.encoding import EncodedResource


class PendingLogRecord(Protocol):
    """Captured cheaply on the app thread; turned into an OTel record or a stream entry later."""

    def readable(self) -> ReadableLogRecord: ...

    def stream_values(
        self, record_id: str, encode_resource: Callable[[Resource], EncodedResource]
    ) -> list[str]: ...
