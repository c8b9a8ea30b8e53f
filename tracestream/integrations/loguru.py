"""loguru: a sink that sends each message to OTel with its bound key/values as attributes.

    from loguru import logger
    from tracestream.integrations.loguru import otel_sink
    logger.add(otel_sink)

The sink writes to the OTel logs API directly (never through `logging`, so it cannot
loop), synchronously in the logging thread, so the record carries the current trace.
A stdlib record that loguru's InterceptHandler recipe hands to loguru is in the stream
already (the stdlib capture took it): the sink leaves it out. Forwarding loguru into
`logging` as well (a PropagateHandler) writes each message twice: pick one route.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.instrumentation.log_utils import std_to_otel

from tracestream.integrations.record_writer import RecordWriter
from tracestream.otel_setup.logging_bridge import remember_last_taken, was_just_taken
from tracestream.otel_setup.structured import attributes_of

_writers: dict[str, RecordWriter] = {}

remember_last_taken()


def otel_sink(message: Any) -> None:
    record = message.record
    if was_just_taken(record["file"].path, record["line"], record["message"]):
        return
    scope = record["name"] or "loguru"
    writer = _writers.get(scope) or _writers.setdefault(scope, RecordWriter(scope))
    exception = record["exception"]
    writer.emit(
        record["message"],
        severity_of_level(record["level"].no),
        {
            **attributes_of(record["extra"]),
            "code.file.path": record["file"].path,
            "code.line.number": record["line"],
            "code.function.name": record["function"],
        },
        exception=exception.value if exception is not None else None,
    )


def severity_of_level(number: int) -> SeverityNumber:
    """loguru's level numbers are stdlib's (SUCCESS 25, a custom level its own); TRACE is 5."""
    return SeverityNumber.TRACE if number < logging.DEBUG else std_to_otel(number)
