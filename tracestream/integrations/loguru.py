"""loguru: a sink that sends each message to OTel with its bound key/values as attributes.

    from loguru import logger
    from tracestream.integrations.loguru import otel_sink
    logger.add(otel_sink)

The sink writes to the OTel logs API directly (never through `logging`, so it cannot
loop), synchronously in the logging thread, so the record carries the current trace.
Pick one route per message: do not also forward loguru into `logging` (or `logging`
into loguru) through the root logger, or each message is written twice.
"""

from __future__ import annotations

from typing import Any

from tracestream.integrations.record_writer import RecordWriter
from tracestream.integrations.structured import attributes_of, severity_of

_writers: dict[str, RecordWriter] = {}


def otel_sink(message: Any) -> None:
    record = message.record
    scope = record["name"] or "loguru"
    writer = _writers.get(scope) or _writers.setdefault(scope, RecordWriter(scope))
    exception = record["exception"]
    writer.emit(
        record["message"],
        severity_of(record["level"].name),
        {
            **attributes_of(record["extra"]),
            "code.file.path": record["file"].path,
            "code.line.number": record["line"],
            "code.function.name": record["function"],
        },
        exception=exception.value if exception is not None else None,
    )
