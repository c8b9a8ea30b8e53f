"""The app's own OpenTelemetry setup, made after tracestream's.

OpenTelemetry keeps the first global tracer provider and refuses later ones with a warning
that names neither. An app that sets up its own after us (Sentry's "OpenTelemetry support"
recipe, the OpenTelemetry docs' manual setup, under the launcher or after `configure()`)
would lose what its provider's span processors do: Sentry's transactions, its own
exporter's spans. Its processors join our provider instead, those it adds later too, and
one line says so; its sampler and resource are not used. Where they get the stable HTTP
names tracestream chose, that line also says how to keep both names.

Pydantic Logfire's providers wrap the SDK's, whose processors they do not show, and its
instrumentations and spans use them, not the global one: set after ours, they take tracestream's
processors, so what they record reaches Redis too, and one line says what their own processors
then miss (what is made through the global provider).

Traces cross services only while the global propagator carries W3C `traceparent`. Sentry's
integrations replace it with theirs, which does not, and services called from here then
start traces of their own, silently. The first span to start after the propagator changes
checks it, and one line says what stopped working and how to keep both, unless
`OTEL_PROPAGATORS` chose propagators without W3C trace context.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeGuard

from opentelemetry import propagate, trace
from opentelemetry._logs import _internal as logs_api
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from tracestream._internal_log import internal_logger
from tracestream.otel_setup.http_names import give_back_default_names

__all__ = [
    "TakesLogRecordProcessors",
    "TakesSpanProcessors",
    "already_set",
    "check_propagator",
    "join_later_logger_providers",
    "join_later_tracer_providers",
    "span_processors_of",
    "takes_log_record_processors",
    "takes_span_processors",
    "uninstall",
]

_set_tracer_provider = trace.set_tracer_provider
# What `set_logger_provider` calls, whatever name the app imported it under and when.
_set_logger_provider = logs_api._set_logger_provider
_lock = threading.Lock()
_checked_propagator: object = None


class TakesSpanProcessors(Protocol):
    """A tracer provider tracestream can join: the SDK's, or one that wraps it (Logfire's)."""

    def add_span_processor(self, span_processor: SpanProcessor) -> None: ...

    def force_flush(self, timeout_millis: int = 30000) -> bool: ...


class TakesLogRecordProcessors(Protocol):
    """A logger provider tracestream can join: the SDK's, or one that wraps it (Logfire's)."""

    def add_log_record_processor(self, log_record_processor: LogRecordProcessor) -> None: ...

    def force_flush(self, timeout_millis: int = 30000) -> bool: ...


def takes_span_processors(provider: object) -> TypeGuard[TakesSpanProcessors]:
    return _has_methods(provider, "add_span_processor")


def takes_log_record_processors(provider: object) -> TypeGuard[TakesLogRecordProcessors]:
    return _has_methods(provider, "add_log_record_processor")


def _has_methods(provider: object, adder: str) -> bool:
    """Told by its public methods: Logfire's logger provider passes them on from the one it wraps."""
    return all(callable(getattr(provider, name, None)) for name in (adder, "force_flush"))


def already_set(provider: object) -> bool:
    """Whether OpenTelemetry holds a global provider already, and would refuse another: until one
    is set, it hands out its own proxy."""
    return not isinstance(provider, trace.ProxyTracerProvider | logs_api.ProxyLoggerProvider)


def _refused(current: object, theirs: object, ours: object) -> bool:
    """OpenTelemetry keeps `ours`, the global provider, and refuses `theirs`."""
    return current is ours and theirs is not ours


def join_later_tracer_providers(ours: TakesSpanProcessors, own: Sequence[SpanProcessor]) -> None:
    """A tracer provider the app sets after `ours` lends `ours` its span processors; one whose
    processors cannot be reached takes tracestream's `own` instead."""

    def set_tracer_provider(tracer_provider: trace.TracerProvider) -> None:
        refused = _refused(trace.get_tracer_provider(), tracer_provider, ours)
        processors = span_processors_of(tracer_provider) if refused else None
        if processors is not None and isinstance(tracer_provider, TracerProvider):
            _lend(tracer_provider, "add_span_processor", processors, ours.add_span_processor)
            internal_logger.warning(
                "the app set a TracerProvider after tracestream's, and OpenTelemetry keeps the first: %s "
                "get tracestream's spans instead; its sampler and resource are not used%s",
                _whose("span processors", processors),
                give_back_default_names(),
            )
        elif refused and takes_span_processors(tracer_provider):
            _borrow(tracer_provider, "TracerProvider", own, tracer_provider.add_span_processor)
        else:
            _set_tracer_provider(tracer_provider)  # OpenTelemetry's own answer

    trace.set_tracer_provider = set_tracer_provider


# What a provider whose processors cannot be reached loses to the global one, by kind.
_THROUGH_THE_GLOBAL_ONE = {
    "TracerProvider": (
        "span processors",
        "what its tracers record reaches tracestream as well, but spans started through the global "
        "provider (trace.get_tracer(), instrumentations not given that provider) do not reach its own "
        "processors",
    ),
    "LoggerProvider": (
        "log record processors",
        "what is emitted through it reaches tracestream as well, but records emitted through the global "
        "provider (an OpenTelemetry LoggingHandler(), get_logger()) do not reach its own processors",
    ),
}


def _borrow(provider: object, kind: str, own: Sequence[Any], add_to_theirs: Callable[[Any], None]) -> None:
    """A provider OpenTelemetry refused that wraps the SDK's (Logfire's) and keeps working for
    what is made through it: tracestream's `own` processors join it, and one line says what its
    processors miss."""
    for processor in own:
        add_to_theirs(_Lent(processor))
    processors, missed = _THROUGH_THE_GLOBAL_ONE[kind]
    internal_logger.warning(
        "the app set a %s after tracestream's (%s, whose %s tracestream cannot reach), and OpenTelemetry "
        "keeps the first: %s%s",
        kind,
        type(provider).__name__,
        processors,
        missed,
        give_back_default_names() if kind == "TracerProvider" else "",
    )


class _Lent(SpanProcessor, LogRecordProcessor):
    """One of tracestream's processors in a provider of the app's, which passes on all but that
    provider's shutdown (a second `logfire.configure()` shuts down the one the first made): the
    processor goes on for tracestream's own provider, and tracestream flushes and closes it at exit."""

    def __init__(self, processor: Any) -> None:
        self._processor = processor

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self._processor.on_start(span, parent_context)

    def on_end(self, span: Any) -> None:
        self._processor.on_end(span)

    def on_emit(self, log_record: Any) -> None:
        self._processor.on_emit(log_record)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._processor.force_flush(timeout_millis))

    def shutdown(self) -> None:
        pass


def _lend(
    provider: object, adder: str, processors: Sequence[Any], add_to_ours: Callable[[Any], None]
) -> None:
    """`processors` of a provider OpenTelemetry refused, and those the app adds to it later
    through its `adder` method, go to ours as well."""
    for processor in processors:
        add_to_ours(processor)
    add_to_theirs = getattr(provider, adder)

    def add_to_both(processor: Any) -> None:
        add_to_theirs(processor)
        add_to_ours(processor)

    setattr(provider, adder, add_to_both)


def _whose(kind: str, processors: Sequence[object]) -> str:
    """The processors the refused provider holds, or those it is given later: the OpenTelemetry logs
    example sets its provider before it adds a processor."""
    if not processors:
        return f"the {kind} it is given"
    return f"its {kind} ({', '.join(type(processor).__name__ for processor in processors)})"


def span_processors_of(provider: object) -> tuple[SpanProcessor, ...] | None:
    """An SDK provider's span processors (held privately by the SDK); None for any other."""
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", None)
    return processors if isinstance(processors, tuple) else None


def join_later_logger_providers(ours: TakesLogRecordProcessors, own: Sequence[LogRecordProcessor]) -> None:
    """A logger provider the app sets after `ours` lends `ours` its log record processors: what an
    OTel `LoggingHandler()` or logger of the app emits through the global provider reaches them,
    with our resource, while what is emitted through the app's provider itself keeps its own. One
    whose processors cannot be reached takes tracestream's `own` instead. (The stdlib records the
    capture takes go to tracestream's exporters, not to these.)"""

    def set_logger_provider(logger_provider: Any, log: bool) -> None:
        refused = log and _refused(logs_api.get_logger_provider(), logger_provider, ours)
        processors = _log_record_processors_of(logger_provider) if refused else None
        if processors is not None:
            _lend(logger_provider, "add_log_record_processor", processors, ours.add_log_record_processor)
            internal_logger.warning(
                "the app set a LoggerProvider after tracestream's, and OpenTelemetry keeps the first: %s "
                "also get what is emitted through tracestream's, with tracestream's resource; what is "
                "emitted through it directly (a LoggingHandler given it) keeps its resource",
                _whose("log record processors", processors),
            )
        elif refused and takes_log_record_processors(logger_provider):
            _borrow(logger_provider, "LoggerProvider", own, logger_provider.add_log_record_processor)
        else:
            _set_logger_provider(logger_provider, log)  # OpenTelemetry's own answer

    logs_api._set_logger_provider = set_logger_provider


def _log_record_processors_of(provider: object) -> tuple[LogRecordProcessor, ...] | None:
    """An SDK provider's processors (held privately by the SDK); None for any other."""
    if not isinstance(provider, LoggerProvider):
        return None
    multi = getattr(provider, "_multi_log_record_processor", None)
    processors = getattr(multi, "_log_record_processors", None)
    return processors if isinstance(processors, tuple) else None


def uninstall() -> None:
    trace.set_tracer_provider = _set_tracer_provider
    logs_api._set_logger_provider = _set_logger_provider


def check_propagator() -> None:
    """Says once per propagator when the global one drops W3C trace context; otherwise an
    identity test, as it runs at every span's start."""
    global _checked_propagator
    propagator = propagate.get_global_textmap()
    if propagator is _checked_propagator:
        return
    with _lock:
        if propagator is _checked_propagator:
            return
        _checked_propagator = propagator
    if "traceparent" in propagator.fields or _chosen_without_trace_context():
        return
    internal_logger.warning(
        "the global propagator is now %s, which sends no traceparent: a service called from here "
        "that reads W3C trace context starts a trace of its own, and a caller's traceparent is not "
        "continued; to keep both, set CompositePropagator([TraceContextTextMapPropagator(), "
        "get_global_textmap()]) after it",
        type(propagator).__name__,
    )


def _chosen_without_trace_context() -> bool:
    chosen = os.environ.get("OTEL_PROPAGATORS", "").strip()
    return bool(chosen) and "tracecontext" not in {name.strip() for name in chosen.split(",")}
