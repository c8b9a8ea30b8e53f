"""The app's own OpenTelemetry setup, made after tracestream's.

OpenTelemetry keeps the first global tracer provider and refuses later ones with a warning
that names neither. An app that sets up its own after us (Sentry's "OpenTelemetry support"
recipe, the OpenTelemetry docs' manual setup, under the launcher or after `configure()`)
would lose what its provider's span processors do: Sentry's transactions, its own
exporter's spans. Its processors join our provider instead, those it adds later too, and
one line says so; its sampler and resource are not used. Where they get the stable HTTP
names tracestream chose, that line also says how to keep both names.

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
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry._logs import _internal as logs_api
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from tracestream._internal_log import internal_logger
from tracestream.otel_setup.http_names import give_back_default_names

__all__ = [
    "check_propagator",
    "join_later_logger_providers",
    "join_later_tracer_providers",
    "span_processors_of",
    "uninstall",
]

_set_tracer_provider = trace.set_tracer_provider
# What `set_logger_provider` calls, whatever name the app imported it under and when.
_set_logger_provider = logs_api._set_logger_provider
_lock = threading.Lock()
_checked_propagator: object = None


def join_later_tracer_providers(ours: TracerProvider) -> None:
    """A tracer provider the app sets after `ours` lends `ours` its span processors."""

    def set_tracer_provider(tracer_provider: trace.TracerProvider) -> None:
        refused = trace.get_tracer_provider() is ours and tracer_provider is not ours
        processors = span_processors_of(tracer_provider) if refused else None
        if processors is None or not isinstance(tracer_provider, TracerProvider):
            _set_tracer_provider(tracer_provider)  # OpenTelemetry's own answer
            return
        _lend(tracer_provider, "add_span_processor", processors, ours.add_span_processor)
        internal_logger.warning(
            "the app set a TracerProvider after tracestream's, and OpenTelemetry keeps the first: %s get "
            "tracestream's spans instead; its sampler and resource are not used%s",
            _whose("span processors", processors),
            give_back_default_names(),
        )

    trace.set_tracer_provider = set_tracer_provider


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


def span_processors_of(provider: trace.TracerProvider) -> tuple[SpanProcessor, ...] | None:
    """An SDK provider's span processors (held privately by the SDK); None for any other."""
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", None)
    return processors if isinstance(processors, tuple) else None


def join_later_logger_providers(ours: LoggerProvider) -> None:
    """A logger provider the app sets after `ours` lends `ours` its log record processors: what an
    OTel `LoggingHandler()` or logger of the app emits through the global provider reaches them.
    (The stdlib records the capture takes go to tracestream's exporters, not to these.)"""

    def set_logger_provider(logger_provider: Any, log: bool) -> None:
        refused = log and logs_api.get_logger_provider() is ours and logger_provider is not ours
        processors = _log_record_processors_of(logger_provider) if refused else None
        if processors is None:
            _set_logger_provider(logger_provider, log)  # OpenTelemetry's own answer
            return
        _lend(logger_provider, "add_log_record_processor", processors, ours.add_log_record_processor)
        internal_logger.warning(
            "the app set a LoggerProvider after tracestream's, and OpenTelemetry keeps the first: %s get "
            "what is emitted through tracestream's instead; its resource is not used",
            _whose("log record processors", processors),
        )

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
