"""Celery: task spans continue the enqueuing request's trace; lifecycle records; no loss at child exit.

- The contrib instrumentor injects `traceparent` into the message at publish and
  continues it in `task_prerun`; our receivers run after its own, inside the task span.
- Prefork children end with `os._exit` (always with `worker_max_tasks_per_child`), which
  skips `atexit`: we flush on `worker_process_shutdown`, which the child sends just before.
- The causal chain of an error: at publish, the message carries what enqueued the task (the
  current request span's `http.route`, `beat:<schedule entry>`, or what enqueued the task
  that publishes it); the worker puts it on the task's records and span as
  `tracestream.enqueued_by`, which error issues count per route (docs/errors.md).
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from time import perf_counter
from types import FrameType, ModuleType
from typing import Any

import wrapt
from billiard.process import current_process as billiard_process
from celery import beat, current_task, signals
from celery.app import trace as celery_trace
from celery.states import IGNORED
from celery.worker.request import Request
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import Span

from tracestream._internal_log import internal_logger
from tracestream.integrations import LAUNCHER_MODULE
from tracestream.integrations.http_records import current_route
from tracestream.integrations.record_writer import RecordWriter, replace_lines
from tracestream.integrations.structlog import printed_after_being_written
from tracestream.otel_setup.shutdown import Kill, close_queues
from tracestream.otel_setup.telemetry import Telemetry, installed
from tracestream.schema import ENQUEUED_BY, rooted_route

_records = RecordWriter("tracestream.celery", located_by_exception=True)
# Each attempt running here, by task id and attempt: a retry shares its task's id, and on a
# threads pool it may start before the attempt that enqueued it has ended.
_started: dict[tuple[str, int], _Run] = {}
# The last task here ended past its hard time limit: the pool's SIGTERM ended it, and its
# SIGKILL follows 0.1 s later. A child logging faster than Redis took its lines lost the rest,
# and its task's span, as its exit waited for Redis.
_past_its_hard_time_limit = False
# The worker's main process, per task id: the trace and delivery each task arrived with, for an
# end recorded there (a hard time limit, a lost child, a rejection), outside any task span;
# None once that end is recorded: Celery may report it twice (5.7: a time limit).
_arrived: OrderedDict[str, _Arrival | None] = OrderedDict()
_ARRIVALS_KEPT = 2048
# An eager task's start and own context: one that propagates its exception fails after its span
# is no longer current (and after `task_postrun`), in the caller's context or none.
_eager_runs: OrderedDict[str, _Run] = OrderedDict()
_connected = False
# The message header carrying what enqueued a task (a header name is also a request attribute).
ENQUEUED_HEADER = "tracestream_enqueued_by"
_beat_entry: ContextVar[str | None] = ContextVar("tracestream_beat_entry", default=None)

# Celery's own per-task lines, which our lifecycle records replace in the stream.
_TRACE_LINES = frozenset(
    text
    for template in (
        celery_trace.LOG_SUCCESS,
        celery_trace.LOG_FAILURE,
        celery_trace.LOG_RETRY,
        celery_trace.LOG_INTERNAL_ERROR,
        celery_trace.LOG_IGNORED,
        celery_trace.LOG_REJECTED,
    )
    for text in (template, template.strip())
)
_RECEIVED_LINES = frozenset({celery_trace.LOG_RECEIVED, celery_trace.LOG_RECEIVED.strip()})
# What a worker prints, logged there (`worker_redirect_stdouts`): structlog's PrintLogger prints too.
_REDIRECTED_STDOUT = "celery.redirected"
# The main process's line for a task killed at its hard time limit: its failed record says it.
_TIME_LIMIT_LINE = "Hard time limit (%ss) exceeded for %s[%s]"


def _is_trace_line(record: logging.LogRecord) -> bool:
    return isinstance(record.msg, str) and record.msg in _TRACE_LINES


def _is_received_line(record: logging.LogRecord) -> bool:
    return isinstance(record.msg, str) and record.msg in _RECEIVED_LINES


def _is_time_limit_line(record: logging.LogRecord) -> bool:
    return record.msg == _TIME_LIMIT_LINE


# The main process logs "Task handler raised error" with the exception it has just sent
# `task_failure` for (a time limit, a lost child): the failed record written then stands for it.
_HANDLER_ERROR_LINE = "Task handler raised error: %r"
_failed_in_main: list[BaseException] = []  # that record's exception, until the next one


def _is_reported_failure_line(record: logging.LogRecord) -> bool:
    args = record.args
    return (
        record.msg == _HANDLER_ERROR_LINE
        and isinstance(args, tuple)
        and len(args) == 1
        and args[0] in _failed_in_main  # that very exception: an `is` test, exceptions have no ==
    )


# RabbitMQ's delayed delivery (Celery's quorum queues, for `countdown`, `eta` and `retry`) routes a
# message by its delay in 28 binary levels before the queue's key: `0.0.…1.0.qq` for `qq`.
_DELAY_LEVELS = re.compile(r"(?:[01]\.){28}")


def queue_name(routing_key: object) -> object:
    """The queue a task came by, without the delay levels kombu put before a delayed one's key:
    a retried or scheduled task's records named a queue of 28 digits, apart from its first try's."""
    if isinstance(routing_key, str) and (levels := _DELAY_LEVELS.match(routing_key)):
        return routing_key[levels.end() :]
    return routing_key


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
        "messaging.destination.name": queue_name(delivery.get("routing_key")),
        "celery.worker.hostname": getattr(request, "hostname", None),
        ENQUEUED_BY: getattr(request, ENQUEUED_HEADER, None),
    }


def _enqueuer(headers: dict[str, Any], task_name: str) -> str | None:
    """What is enqueueing a task now: a beat schedule entry, the current request's route, or
    whatever enqueued the task running here."""
    if headers.get("celery_beat_task"):
        return f"beat:{_beat_entry.get() or task_name}"
    route = current_route()
    if route:
        return rooted_route(route)  # as the request's record names it
    running = getattr(current_task, "request", None) if current_task else None  # the task run here
    enqueued_by = getattr(running, ENQUEUED_HEADER, None)
    return enqueued_by if isinstance(enqueued_by, str) else None


def _on_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Before the instrumentor's own receiver makes its producer span current.

    A task protocol 1 message has empty headers, and the instrumentor reads any header as
    protocol 2 and then finds no task id: such a message carries nothing of ours."""
    if not headers or ENQUEUED_HEADER in headers:
        return
    enqueued_by = _enqueuer(headers, str(headers.get("task", "")))
    if enqueued_by:
        headers[ENQUEUED_HEADER] = enqueued_by


@dataclass(frozen=True)
class _Run:
    """An attempt running here: when it started (perf_counter), its span's context (ours is the
    record that ends an ignored task, written after the instrumentation has ended the span), and
    when its hard time limit is up."""

    started: float
    context: Context
    hard_limit_end: float


@dataclass(frozen=True)
class _Arrival:
    context: Context
    attributes: dict[str, Any]


_DELIVERY = ("messaging.destination.name", "celery.worker.hostname", ENQUEUED_BY)


def _on_received(request: Any, **_: Any) -> None:
    """In the worker's main process, before any span: the record joins the publisher's trace."""
    headers = request.request_dict  # the message headers, where the publisher put `traceparent`
    attributes = _task_attributes("received", request.id, request.name, request, headers.get("retries"))
    attributes[ENQUEUED_BY] = headers.get(ENQUEUED_HEADER)
    context = propagate.extract(headers)
    _records.emit(
        f"task {request.name}[{request.id}] received", SeverityNumber.INFO, attributes, context=context
    )
    _remember_arrival(request.id, _Arrival(context, {name: attributes[name] for name in _DELIVERY}))


def _remember_arrival(task_id: str, arrival: _Arrival | None) -> None:
    _arrived[task_id] = arrival
    if len(_arrived) > _ARRIVALS_KEPT:
        _arrived.popitem(last=False)


def _attempt(task_id: str, request: Any) -> tuple[str, int]:
    return task_id, getattr(request, "retries", None) or 0


def _on_prerun(task_id: str, task: Any, **_: Any) -> None:
    context = otel_context.get_current()
    started = perf_counter()
    run = _Run(started, context, started + _hard_time_limit(task))
    _started[_attempt(task_id, task.request)] = run
    if getattr(task.request, "is_eager", False):
        _eager_runs[task_id] = run
        if len(_eager_runs) > _ARRIVALS_KEPT:
            _eager_runs.popitem(last=False)
    enqueued_by = getattr(task.request, ENQUEUED_HEADER, None)
    if isinstance(enqueued_by, str):
        trace.get_current_span().set_attribute(ENQUEUED_BY, enqueued_by)
    _records.emit(
        f"task {task.name}[{task_id}] started",
        SeverityNumber.INFO,
        _task_attributes("started", task_id, task.name, task.request),
    )


def _finished(
    state: str,
    task: Any,
    task_id: str,
    severity: SeverityNumber,
    error: Any = None,
    context: Context | None = None,
    run: _Run | None = None,
) -> None:
    """`run` for an attempt no longer kept as running (an eager task failing past its end)."""
    run = _started.get(_attempt(task_id, task.request)) or run
    runtime_ms = (perf_counter() - run.started) * 1000 if run is not None else None
    attributes = _task_attributes(state, task_id, task.name, task.request)
    attributes["celery.task.runtime_ms"] = round(runtime_ms, 3) if runtime_ms is not None else None
    ended_outside_its_span = not trace.get_current_span().get_span_context().is_valid
    if context is None and ended_outside_its_span:  # in the main process
        if task_id in _arrived and _arrived[task_id] is None:
            return  # recorded already
        arrival = _arrived.get(task_id)
        _remember_arrival(task_id, None)
        if arrival is not None:
            context = arrival.context
            attributes.update({k: v for k, v in arrival.attributes.items() if attributes.get(k) is None})
        if isinstance(error, BaseException):
            _failed_in_main[:] = [error]
    timing = f" in {runtime_ms:.1f} ms" if runtime_ms is not None else ""
    exception = error if isinstance(error, BaseException) else None
    _records.emit(
        f"task {task.name}[{task_id}] {state}{timing}",
        severity,
        attributes,
        exception=exception,
        context=context,
    )


def _on_success(sender: Any, **_: Any) -> None:
    _finished("succeeded", sender, sender.request.id, SeverityNumber.INFO)


def _on_failure(sender: Any, task_id: str, exception: BaseException, **_: Any) -> None:
    _finished("failed", sender, task_id, SeverityNumber.ERROR, exception)


class CancelledAtShutdown(Exception):
    """A running task a cold shutdown cancelled. Celery marks it for a retry, but its message was
    acknowledged as it started (only an `acks_late` task's is not), so no broker delivers it again."""


def _on_retry(sender: Any, request: Any, reason: Any = None, **_: Any) -> None:
    """`reason` is absent for a task a cold shutdown cancelled: lost, whatever its state says."""
    if reason is None:
        lost = CancelledAtShutdown(
            "a cold shutdown cancelled it; it will not run again (an acks_late task is delivered again)"
        )
        _finished("cancelled", sender, request.id, SeverityNumber.ERROR, lost)
        return
    _finished("retried", sender, request.id, SeverityNumber.WARN, getattr(reason, "exc", None) or reason)


def _on_internal_error(
    sender: Any, task_id: str, exception: BaseException, request: Any = None, **_: Any
) -> None:
    """An eager task that propagates its exception (`task_eager_propagates`, as apps' tests run
    tasks) fails past `task_failure`: its failed record is written from here. Elsewhere Celery
    sends `task_failure` for an internal error too."""
    eager = request.get("is_eager") if isinstance(request, dict) else getattr(request, "is_eager", False)
    if eager:
        run = _eager_runs.pop(task_id, None)
        context = run.context if run is not None else None
        _finished("failed", sender, task_id, SeverityNumber.ERROR, exception, context=context, run=run)


def _on_revoked(
    sender: Any = None, request: Any = None, terminated: bool = False, expired: bool = False, **_: Any
) -> None:
    """In the worker's main process: a task that will not run (revoked, or expired before it
    could) or that was stopped running (`revoke(terminate=True)`). One revoked before it was
    received has no arrival: its trace is read from its message, kept in its request."""
    if request is None:
        return
    task_id, name = request.id, str(getattr(sender, "name", None) or getattr(request, "task", ""))
    state = "expired" if expired else "revoked"
    attributes = _task_attributes(state, task_id, name, request)
    arrival = _arrived.get(task_id)
    _remember_arrival(task_id, None)
    context = arrival.context if arrival is not None else propagate.extract(vars(request))
    how = " (terminated while running)" if terminated else ""
    _records.emit(f"task {name}[{task_id}] {state}{how}", SeverityNumber.WARN, attributes, context=context)


def _on_postrun(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    """A task that raised `Ignore` ends with no other signal: its record is written here."""
    global _past_its_hard_time_limit
    attempt = _attempt(task_id, task.request)
    if state == IGNORED and attempt in _started:
        _finished("ignored", task, task_id, SeverityNumber.INFO, context=_started[attempt].context)
    run = _started.pop(attempt, None)
    _past_its_hard_time_limit = run is not None and perf_counter() >= run.hard_limit_end


def _flush_child(**_: Any) -> None:
    """Our queues are closed as a process's are at exit, which says how many records a child
    loses; the providers' other processors (an OTLP exporter beside ours) are flushed too."""
    telemetry = installed()
    if telemetry is not None:
        close_queues(_HARD_TIME_LIMIT_KILL if _past_its_hard_time_limit else None)
        telemetry.force_flush(telemetry.settings.shutdown_timeout)


def _hard_time_limit(task: Any) -> float:
    """Where the pool kills the task: the message's limit, else the task's, else the app's;
    infinite without one."""
    limits = getattr(task.request, "timelimit", None)
    limit = (limits[0] if limits else None) or task.time_limit or task.app.conf.task_time_limit
    return float(limit) if limit else math.inf


_HARD_TIME_LIMIT_KILL = Kill(0.1, "Celery's pool kills its child 0.1 s after a hard time limit's SIGTERM")


GEVENT_PATCH_FIRST = "OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH"


def _warn_of_a_late_gevent_patch(**_: Any) -> None:
    """Under the launcher, `-P gevent` patches the worker after OpenTelemetry loaded, and the pool
    can then stop taking tasks (with upstream's exporters as well); patched first, it does not."""
    monkey = sys.modules.get("gevent.monkey")
    if (
        monkey is not None
        and monkey.is_module_patched("socket")
        and LAUNCHER_MODULE in sys.modules
        and os.environ.get(GEVENT_PATCH_FIRST) != "patch_all"
    ):
        internal_logger.warning(
            "gevent patched this worker after the launcher loaded, and its pool may stop taking "
            "tasks: set %s=patch_all",
            GEVENT_PATCH_FIRST,
        )


def _warn_of_a_late_eventlet_patch(**_: Any) -> None:
    """Under the launcher, `-P eventlet` patches the worker after redis-py loaded. Upstream's
    worker then stops at start (`select` has no `poll`); ours starts, since our export thread
    mends redis-py's parser for the whole process (connection.py), but its pool's Redis calls
    (the result backend's, a Redis broker's) can block for minutes. eventlet has no setting
    that patches first, as gevent has: the worker must call configure() itself."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("socket") and LAUNCHER_MODULE in sys.modules:
        internal_logger.warning(
            "eventlet patched this worker after the launcher loaded redis-py, and its pool's Redis"
            " calls can block for minutes: start it without opentelemetry-instrument, with"
            " tracestream.configure() in the app (docs/frameworks.md)"
        )


# Celery's own Redis traffic outside any task or request (a worker's heartbeat every 2 s and two
# commands around each task, a publisher's result backend polling while it waits on a result,
# beat's connection) starts a trace of one span for each command under the launcher, which
# instruments redis-py: these crowded the task spans out of the spans stream. Such a span is
# told from an app's own command by its caller, the first frame outside redis-py and the code
# that starts a span around it.
_REDIS_INSTRUMENTATION = "opentelemetry.instrumentation.redis"
_BETWEEN_CALLER_AND_SPAN = frozenset({"redis", "opentelemetry", "wrapt", "tracestream"})
_CELERYS_OWN = frozenset({"celery", "kombu"})


def _celerys_own_redis_command(span: Span) -> bool:
    """A Redis span that starts a trace, as it starts: called by Celery or kombu (its broker
    transport), not by the app (a task called directly, a script using redis-py)."""
    scope = span.instrumentation_scope
    if scope is None or scope.name != _REDIS_INSTRUMENTATION:
        return False
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        package = str(frame.f_globals.get("__name__", "")).partition(".")[0]
        if package not in _BETWEEN_CALLER_AND_SPAN:
            return package in _CELERYS_OWN
        frame = frame.f_back
    return False


_RECEIVERS = (
    (signals.worker_init, _warn_of_a_late_gevent_patch),
    (signals.worker_init, _warn_of_a_late_eventlet_patch),
    (signals.task_received, _on_received),
    (signals.task_prerun, _on_prerun),
    (signals.task_success, _on_success),
    (signals.task_failure, _on_failure),
    (signals.task_retry, _on_retry),
    (signals.task_internal_error, _on_internal_error),
    (signals.task_revoked, _on_revoked),
    (signals.task_postrun, _on_postrun),
    (signals.worker_process_shutdown, _flush_child),
)


def _first_receiver(celery_signal: signals.Signal, receiver: Any) -> None:
    """Connect `receiver` to run before those connected earlier (the instrumentor's)."""
    celery_signal.connect(receiver, weak=False)
    with celery_signal.lock:
        entries = celery_signal.receivers
        mine = [entry for entry in entries if entry[1] is receiver]
        entries[:] = mine + [entry for entry in entries if entry[1] is not receiver]
        celery_signal.sender_receivers_cache.clear()


def _remember_beat_entry() -> None:
    """Beat publishes through `Scheduler.apply_async(entry)`; the entry's name is kept for the
    publish receiver, which only sees a `celery_beat_task` header."""
    original = beat.Scheduler.apply_async

    def apply_async(self: beat.Scheduler, entry: Any, *args: Any, **kwargs: Any) -> Any:
        token = _beat_entry.set(getattr(entry, "name", None))
        try:
            return original(self, entry, *args, **kwargs)
        finally:
            _beat_entry.reset(token)

    beat.Scheduler.apply_async = apply_async  # type: ignore[method-assign]


def _say_soft_time_limits_in_their_trace() -> None:
    """The worker's main process says a task passed its soft time limit outside any span: the
    line is said in the trace the task arrived with."""
    original = Request.on_timeout

    def on_timeout(self: Request, soft: bool, timeout: float) -> None:
        arrival = _arrived.get(self.id) if soft else None
        if arrival is None:
            original(self, soft, timeout)
            return
        with _in_context(arrival.context):
            original(self, soft, timeout)

    Request.on_timeout = on_timeout  # type: ignore[method-assign]


def _say_unknown_tasks_in_their_trace(module: ModuleType) -> None:
    """The worker's main process says it discarded a message naming a task it does not know
    outside any span, before it sends `task_unknown`: the line is said in the trace the message
    carries (none under task protocol 1, which leaves the headers empty)."""
    consumer = module.Consumer
    original = consumer.on_unknown_task

    def on_unknown_task(self: Any, body: Any, message: Any, exc: BaseException) -> None:
        with _in_context(propagate.extract(message.headers or {})):
            original(self, body, message, exc)

    consumer.on_unknown_task = on_unknown_task


def _arrival_context(request: Request) -> Context:
    """The trace a request arrived with; one not received yet has no arrival, and its trace is
    read from its message."""
    arrival = _arrived.get(request.id)
    return arrival.context if arrival is not None else propagate.extract(request.request_dict)


def _in_the_trace_it_arrived_with(method: Callable[..., Any]) -> Callable[..., Any]:
    def in_its_trace(self: Request, *args: Any, **kwargs: Any) -> Any:
        with _in_context(_arrival_context(self)):
            return method(self, *args, **kwargs)

    return in_its_trace


def _say_discarded_tasks_in_their_trace() -> None:
    """The worker's main process says it discards a revoked or expired task, and stops one
    revoked while running, outside any span: what is said there is said in the trace the task
    arrived with."""
    Request.revoked = _in_the_trace_it_arrived_with(Request.revoked)  # type: ignore[method-assign]
    Request.terminate = _in_the_trace_it_arrived_with(Request.terminate)  # type: ignore[method-assign]


def _say_terminations_in_their_trace(control: ModuleType) -> None:
    """`revoke(terminate=True)` says `Terminating <id>` for each request it finds running, in the
    loop over what `_find_requests_by_id` yields: each is yielded in its own trace, which stays
    current until the loop takes the next one or stops."""
    find = control._find_requests_by_id

    def in_their_traces(ids: Any, *args: Any, **kwargs: Any) -> Iterator[Request]:
        for request in find(ids, *args, **kwargs):
            with _in_context(_arrival_context(request)):
                yield request

    control._find_requests_by_id = in_their_traces  # type: ignore[attr-defined]


@contextmanager
def _in_context(context: Context) -> Iterator[None]:
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def install(telemetry: Telemetry, name: str = "celery") -> None:
    """Signals once per process; the line filters on each configured handler, and what its span
    processors leave out."""
    global _connected
    if not _connected:
        _connected = True
        _say_when_only_pool_children_are_set_up()
        _first_receiver(signals.before_task_publish, _on_publish)
        _remember_beat_entry()
        _say_soft_time_limits_in_their_trace()
        _say_discarded_tasks_in_their_trace()
        wrapt.register_post_import_hook(_say_unknown_tasks_in_their_trace, "celery.worker.consumer.consumer")
        wrapt.register_post_import_hook(_say_terminations_in_their_trace, "celery.worker.control")
        instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()  # first, so its prerun receiver has started the span before ours
        for celery_signal, receiver in _RECEIVERS:
            celery_signal.connect(receiver, weak=False)
    for processor in telemetry.span_processors:
        processor.quiet_root = _celerys_own_redis_command
    replace_lines(telemetry.handler, "celery.app.trace", _is_trace_line)
    replace_lines(telemetry.handler, "celery.worker.strategy", _is_received_line)
    replace_lines(telemetry.handler, "celery.worker.request", _is_time_limit_line)
    replace_lines(telemetry.handler, "celery.worker.request", _is_reported_failure_line)
    replace_lines(telemetry.handler, _REDIRECTED_STDOUT, printed_after_being_written)


def _say_when_only_pool_children_are_set_up() -> None:
    """configure() from `worker_process_init` (the OpenTelemetry docs' Celery recipe) sets up
    each prefork child, and the worker's main process stays as it was: what it writes was lost
    without a word. The first child says so, once each time it starts."""
    prefork = sys.modules.get("celery.concurrency.prefork")
    if prefork is None:
        return
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code is not prefork.process_initializer.__code__:
        frame = frame.f_back
    if frame is None or getattr(billiard_process(), "index", 0) != 0:  # the pool numbers its children
        return
    internal_logger.warning(
        "configure() ran in a prefork child (worker_process_init): the worker's main process is "
        "not set up, so its 'received' records, its own log lines and the failure of a task it "
        "ends (a hard time limit) are not sent; call configure() where the Celery app is defined"
    )
