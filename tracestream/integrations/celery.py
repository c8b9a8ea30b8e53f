"""Celery: task spans continue the enqueuing request's trace; lifecycle records; no loss at child exit.

- The contrib instrumentor injects `traceparent` into the message at publish and
  continues it in `task_prerun`; our receivers run after its own, inside the task span.
- Prefork children end with `os._exit` (always with `worker_max_tasks_per_child`), which
  skips `atexit`: we flush on `worker_process_shutdown`, which the child sends just before.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any

from celery import signals
from celery.app import trace as celery_trace
from opentelemetry import propagate
from opentelemetry._logs import SeverityNumber
from opentelemetry.instrumentation.celery import CeleryInstrumentor

from tracestream.integrations.record_writer import RecordWriter, replace_lines
from tracestream.otel_setup.telemetry import Telemetry, installed

_records = RecordWriter("tracestream.celery")
_started: dict[str, float] = {}
_connected = False

# Celery's own per-task lines, which our lifecycle records replace in the stream.
_TRACE_LINES = frozenset(
    text
    for template in (
        celery_trace.LOG_SUCCESS,
        celery_trace.LOG_FAILURE,
        celery_trace.LOG_RETRY,
        celery_trace.LOG_INTERNAL_ERROR,
    )
    for text in (template, template.strip())
)
_RECEIVED_LINES = frozenset({celery_trace.LOG_RECEIVED, celery_trace.LOG_RECEIVED.strip()})


def _is_trace_line(record: logging.LogRecord) -> bool:
    return isinstance(record.msg, str) and record.msg in _TRACE_LINES


def _is_received_line(record: logging.LogRecord) -> bool:
    return isinstance(record.msg, str) and record.msg in _RECEIVED_LINES


def _task_attributes(
    state: str, task_id: str, name: str, request: Any, retries: Any = None
) -> dict[str, Any]:
    delivery = getattr(request, "delivery_info", None) or {}
    return {
        "event.name": f"celery.task.{state}",
        "celery.task.state": state,
        "celery.task.id": task_id,
        "celery.task.name": name,
        "celery.task.retries": getattr(request, "retries", retries),
        "messaging.destination.name": delivery.get("routing_key"),
        "celery.worker.hostname": getattr(request, "hostname", None),
    }


def _on_received(request: Any, **_: Any) -> None:
    """In the worker's main process, before any span: the record joins the publisher's trace."""
    headers = request.request_dict  # the message headers, where the publisher put `traceparent`
    attributes = _task_attributes("received", request.id, request.name, request, headers.get("retries"))
    context = propagate.extract(headers)
    _records.emit(
        f"task {request.name}[{request.id}] received", SeverityNumber.INFO, attributes, context=context
    )


def _on_prerun(task_id: str, task: Any, **_: Any) -> None:
    _started[task_id] = perf_counter()
    _records.emit(
        f"task {task.name}[{task_id}] started",
        SeverityNumber.INFO,
        _task_attributes("started", task_id, task.name, task.request),
    )


def _finished(state: str, task: Any, task_id: str, severity: SeverityNumber, error: Any = None) -> None:
    started = _started.get(task_id)
    runtime_ms = (perf_counter() - started) * 1000 if started is not None else None
    attributes = _task_attributes(state, task_id, task.name, task.request)
    attributes["celery.task.runtime_ms"] = round(runtime_ms, 3) if runtime_ms is not None else None
    timing = f" in {runtime_ms:.1f} ms" if runtime_ms is not None else ""
    exception = error if isinstance(error, BaseException) else None
    _records.emit(f"task {task.name}[{task_id}] {state}{timing}", severity, attributes, exception=exception)


def _on_success(sender: Any, **_: Any) -> None:
    _finished("succeeded", sender, sender.request.id, SeverityNumber.INFO)


def _on_failure(sender: Any, task_id: str, exception: BaseException, **_: Any) -> None:
    _finished("failed", sender, task_id, SeverityNumber.ERROR, exception)


def _on_retry(sender: Any, request: Any, reason: Any, **_: Any) -> None:
    _finished("retried", sender, request.id, SeverityNumber.WARN, getattr(reason, "exc", None) or reason)


def _on_postrun(task_id: str, **_: Any) -> None:
    _started.pop(task_id, None)


def _flush_child(**_: Any) -> None:
    telemetry = installed()
    if telemetry is not None:
        telemetry.force_flush(telemetry.settings.shutdown_timeout)


_RECEIVERS = (
    (signals.task_received, _on_received),
    (signals.task_prerun, _on_prerun),
    (signals.task_success, _on_success),
    (signals.task_failure, _on_failure),
    (signals.task_retry, _on_retry),
    (signals.task_postrun, _on_postrun),
    (signals.worker_process_shutdown, _flush_child),
)


def install(telemetry: Telemetry, name: str = "celery") -> None:
    """Signals once per process; the line filters on each configured handler."""
    global _connected
    if not _connected:
        _connected = True
        instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()  # first, so its prerun receiver has started the span before ours
        for signal, receiver in _RECEIVERS:
            signal.connect(receiver, weak=False)
    replace_lines(telemetry.handler, "celery.app.trace", _is_trace_line)
    replace_lines(telemetry.handler, "celery.worker.strategy", _is_received_line)
