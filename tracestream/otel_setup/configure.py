"""`configure()`: trace and log providers, exporters and the logging bridge, once per process."""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import fields
from importlib.metadata import entry_points
from typing import Any, cast

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)

from tracestream._internal_log import internal_logger
from tracestream.exporters import RedisStreamLogExporter, RedisStreamSpanExporter, from_environment
from tracestream.exporters.from_environment import REDIS_STREAM
from tracestream.exporters.scrubbed import ScrubbingLogExporter, ScrubbingSpanExporter
from tracestream.forks import renew_in_child
from tracestream.integrations import install_all
from tracestream.otel_setup import (
    app_overrides,
    log_capture,
    propagation,
    setup_loggers,
    shutdown,
    trace_ids,
)
from tracestream.otel_setup.logging_bridge import OTelHandler
from tracestream.otel_setup.otel_handlers import is_otel_logging_handler
from tracestream.otel_setup.processors import StreamLogProcessor, StreamSpanProcessor
from tracestream.otel_setup.resource import build_resource, process_resource
from tracestream.otel_setup.sql_parameters import BoundParameters
from tracestream.otel_setup.telemetry import Telemetry, installed, remember
from tracestream.scrubbing import Scrubber, scrubber_for, secret_names_for
from tracestream.settings import (
    BatchSettings,
    ConfigError,
    Settings,
    installing,
    metrics_exporter_names,
    sdk_disabled,
    shown_url,
)
from tracestream.terminal_text import visible

LOGS_GROUP = "opentelemetry_logs_exporter"
TRACES_GROUP = "opentelemetry_traces_exporter"
METRICS_GROUP = "opentelemetry_metrics_exporter"
ID_GENERATORS_GROUP = "opentelemetry_id_generator"
ID_GENERATOR_VARIABLE = "OTEL_PYTHON_ID_GENERATOR"
SAMPLERS_GROUP = "opentelemetry_traces_sampler"
SAMPLER_VARIABLE = "OTEL_TRACES_SAMPLER"
SAMPLER_ARGUMENT_VARIABLE = "OTEL_TRACES_SAMPLER_ARG"
# The SDK's own samplers by the names OTEL_TRACES_SAMPLER gives them (in any case), and those made
# with the ratio OTEL_TRACES_SAMPLER_ARG gives.
_SDK_SAMPLERS: dict[str, Sampler] = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_on": DEFAULT_ON,
    "parentbased_always_off": DEFAULT_OFF,
}
_SDK_RATIO_SAMPLERS: dict[str, Callable[[float], Sampler]] = {
    "traceidratio": TraceIdRatioBased,
    "parentbased_traceidratio": ParentBasedTraceIdRatio,
}
_SIGNAL_OF = {LOGS_GROUP: "LOGS", TRACES_GROUP: "TRACES", METRICS_GROUP: "METRICS"}
OTLP = "otlp"
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}


_lock = threading.Lock()


def configure(**arguments: Any) -> Telemetry:
    """Set up tracing and logging to Redis for this process.

    Every argument has an environment variable (see docs/configuration.md); arguments
    win. Calling it again returns what the first call installed, so there is never a
    second handler and never a duplicate record.
    """
    global _environment_at_install
    with _lock:
        disabled = sdk_disabled()
        settings = _settings_unused(arguments) if disabled else Settings.load(**arguments)
        current = installed()
        if current is not None:
            # A call without arguments (a Celery hook after Django's AppConfig) just asks for it,
            # unless the environment changed since (a forked child pointed elsewhere).
            first = current.settings if arguments else _environment_at_install
            kept = _kept_instead(first, settings, arguments) if first is not None else ""
            if kept:
                internal_logger.warning(
                    "configure() already ran in this process; keeping its first settings (%s): "
                    "records go to %s, stream %r",
                    kept,
                    shown_url(current.settings.redis_url),
                    current.settings.stream,
                )
            return current
        _environment_at_install = settings if not arguments else _environment_settings()
        if disabled:
            telemetry = _install_nothing(settings)
            remember(telemetry)
            return telemetry
        telemetry = _install(settings)
        remember(telemetry)
        install_all(telemetry)
        setup_loggers.install()
        return telemetry


def _kept_instead(first: Settings, asked: Settings, arguments: Mapping[str, Any]) -> str:
    """Each setting the later call asked otherwise: `service_name 'worker', not 'api'`. A setting
    at its default that the call did not name was not asked for: the first call's argument
    stands without a word."""
    kept = []
    for setting in fields(Settings):
        was, wanted = getattr(first, setting.name), getattr(asked, setting.name)
        if setting.name not in arguments and wanted == setting.default:
            continue
        if was != wanted:
            if setting.name == "redis_url":
                was, wanted = shown_url(was), shown_url(wanted)
            kept.append(f"{setting.name} {was!r}, not {wanted!r}")
    return "; ".join(kept)


# What the environment alone said when configure() installed: a later call without arguments
# under another environment is told where records still go.
_environment_at_install: Settings | None = None


def _environment_settings() -> Settings | None:
    try:
        return Settings.load()
    except ConfigError:  # a bad variable that the first call's arguments overrode
        return None


def _settings_unused(arguments: Mapping[str, Any]) -> Settings:
    """Under `OTEL_SDK_DISABLED=true` the app runs as without tracestream: a bad setting it
    inherited (a test environment's) stops nothing, since nothing uses it."""
    try:
        return Settings.load(**arguments)
    except ConfigError:
        return Settings()


def _install_nothing(settings: Settings) -> Telemetry:
    """`OTEL_SDK_DISABLED=true`, as a test environment sets it: logging, signals, frameworks and
    the OpenTelemetry globals stay as the app left them, and the providers record nothing. Their
    limits are given, so that no `OTEL_*_LIMIT` variable is read either."""
    resource = Resource.get_empty()
    unset = SpanLimits.UNSET
    span_limits = SpanLimits(*[unset] * 8)
    log_limits = LogRecordLimits(*[unset] * 4)
    logger_provider = LoggerProvider(resource=resource, log_record_limits=log_limits)
    tracer_provider = TracerProvider(resource=resource, span_limits=span_limits)
    handler = OTelHandler(logger_provider, (), settings.log_level)
    return Telemetry(settings, resource, tracer_provider, logger_provider, handler, (), ())


def _otel_limits() -> tuple[SpanLimits, LogRecordLimits]:
    """OTel's limit variables, read once, before anything is installed: a bad one stops setup
    with one line, as ours do, where the SDK would raise from inside it."""
    try:
        return SpanLimits(), LogRecordLimits()
    except ValueError as error:  # the SDK's message names the variable and its value, as it was set
        raise ConfigError(visible(str(error))) from None


def check_settings() -> None:
    """What `configure()` would refuse in the environment, for a launch that stopped before it ran."""
    _otel_settings(Settings.load())


def _otel_settings(settings: Settings) -> tuple[SpanLimits, LogRecordLimits, BatchSettings, BatchSettings]:
    """OTel's variables read once, before anything is installed: a bad one stops setup in one line."""
    if os.environ.get("OTEL_CONFIG_FILE"):
        raise ConfigError(
            "OTEL_CONFIG_FILE is set, but tracestream sets up from OTEL_* and TRACESTREAM_* variables"
            " and would not read the file: unset it (docs/configuration.md lists the variables)"
        )
    span_limits, log_limits = _otel_limits()
    span_batch = BatchSettings.load("OTEL_BSP", settings.batch_delay_ms)
    log_batch = BatchSettings.load("OTEL_BLRP", settings.batch_delay_ms)
    return span_limits, log_limits, span_batch, log_batch


def _install(settings: Settings) -> Telemetry:
    span_limits, log_limits, span_batch, log_batch = _otel_settings(settings)
    resource = build_resource(settings)
    # The SDK's providers, or ones that wrap them (Logfire's), set before configure(): joined.
    current_tracer_provider = trace.get_tracer_provider()
    current_logs = _logs.get_logger_provider()
    api_traces = (
        current_tracer_provider if app_overrides.takes_span_processors(current_tracer_provider) else None
    )
    api_logs = current_logs if app_overrides.takes_log_record_processors(current_logs) else None
    joining = api_traces is not None or api_logs is not None
    # Joining, the providers' own processors keep their other exporters: ours add Redis.
    span_names = tuple(n for n in settings.traces_exporter if n == REDIS_STREAM or api_traces is None)
    span_processors = tuple(
        StreamSpanProcessor(exporter, span_batch, settings.shutdown_timeout)
        for exporter in _span_exporters(settings, span_names)
    )
    # The stream follows its traces' sampling; other exporters (console, OTLP) get every record,
    # as OpenTelemetry sends them.
    follows = settings.log_sampling == "follow_trace"
    log_processors = tuple(
        StreamLogProcessor(
            exporter, log_batch, settings.shutdown_timeout, follows and name == REDIS_STREAM, log_limits
        )
        for name, exporter in zip(settings.logs_exporter, _log_exporters(settings), strict=True)
    )
    redis_log_processors = tuple(
        p for p, name in zip(log_processors, settings.logs_exporter, strict=True) if name == REDIS_STREAM
    )

    # Our logger provider holds the resource our records carry, whoever provides the OTel API.
    logger_provider = LoggerProvider(resource=resource, log_record_limits=log_limits)
    if joining and from_environment.step_aside():
        if api_logs is not None:
            _retire_configurators_handlers(api_logs)
        if api_traces is not None:
            _scrub_configurators_span_exporters(api_traces, scrubber_for(settings))
            if not os.environ.get(ID_GENERATOR_VARIABLE, "").strip():
                trace_ids.replace_default_generator(api_traces)
    tracer_provider: app_overrides.TakesSpanProcessors
    owned_tracer_provider: TracerProvider | None = None
    if api_traces is None:
        tracer_provider = owned_tracer_provider = TracerProvider(
            resource=resource, sampler=_sampler(), id_generator=_id_generator(), span_limits=span_limits
        )
        _set_global(current_tracer_provider, owned_tracer_provider, trace.set_tracer_provider)
    else:
        tracer_provider = api_traces
        _say_whose_service_name(api_traces, resource)
    propagation.mend_empty_propagator()
    app_overrides.join_later_tracer_providers(tracer_provider, span_processors)
    for span_processor in span_processors:
        span_processor.joined = api_traces is not None
        tracer_provider.add_span_processor(span_processor)
    global_logger_provider: app_overrides.TakesLogRecordProcessors = logger_provider
    global_log_processors = log_processors
    if api_logs is not None:
        global_logger_provider, global_log_processors = api_logs, redis_log_processors
    for log_processor in global_log_processors:
        log_processor.joined = api_logs is not None
        global_logger_provider.add_log_record_processor(log_processor)
    if api_logs is None:
        _set_global(current_logs, logger_provider, _logs.set_logger_provider)
    app_overrides.join_later_logger_providers(global_logger_provider, global_log_processors)
    _follow_forks(logger_provider, *(() if owned_tracer_provider is None else (owned_tracer_provider,)))

    secret_names = secret_names_for(settings)
    bound_parameters = BoundParameters(secret_names.secret) if secret_names is not None else None
    handler = OTelHandler(logger_provider, log_processors, settings.log_level, bound_parameters)
    _capture_logging(handler, settings)
    queues = [p.queue for p in log_processors] + [p.queue for p in span_processors]
    shutdown.install(queues, settings.shutdown_timeout)
    for joined in (api_traces, api_logs):
        if joined is not None:
            shutdown.flush_joined_provider(joined)
    telemetry = Telemetry(
        settings,
        resource,
        # The SDK's, or one that wraps it (Logfire's): Telemetry only flushes a provider it joined.
        cast(TracerProvider, tracer_provider),
        logger_provider,
        handler,
        log_processors,
        span_processors,
        owns_providers=not joining,
    )
    return telemetry


# What a global provider that takes no processors of ours, set before configure(), costs.
_UNJOINABLE = {
    "TracerProvider": "no span reaches Redis",
    "LoggerProvider": "what is emitted through the OpenTelemetry API does not reach Redis; stdlib records do",
}


def _set_global(current: object, ours: TracerProvider | LoggerProvider, setter: Callable[[Any], Any]) -> None:
    """Ours becomes the global provider, unless one that takes no processors was set first (a
    `NoOpTracerProvider`): OpenTelemetry would refuse ours with a line that names neither."""
    if not app_overrides.already_set(current):
        setter(ours)
        return
    kind = "TracerProvider" if isinstance(ours, TracerProvider) else "LoggerProvider"
    internal_logger.warning(
        "the %s set before configure() (%s) takes no processors, and OpenTelemetry keeps the first: %s",
        kind,
        type(current).__name__,
        _UNJOINABLE[kind],
    )


def _say_whose_service_name(provider: object, resource: Resource) -> None:
    """The spans of a provider set before configure() carry its resource: where it names the
    service otherwise than the records do, a trace list by service finds none of them."""
    theirs = getattr(getattr(provider, "resource", None), "attributes", {}).get(SERVICE_NAME)
    ours = resource.attributes.get(SERVICE_NAME)
    if theirs is None or theirs == ours:
        return
    internal_logger.warning(
        "the TracerProvider set before configure() keeps its resource on spans: service.name %r there, "
        "%r on records, so `tracestream traces --service %s` finds none of its spans; give that provider "
        "the same service.name, or call configure() first",
        theirs,
        ours,
        ours,
    )


def set_up_metrics(resource: Resource) -> None:
    """What `OTEL_METRICS_EXPORTER` names, as upstream's configurator sets it up, for the launcher
    run with ours: traces and logs are tracestream's, metrics go where the variable says."""
    exporters = [_from_entry_point(METRICS_GROUP, name) for name in metrics_exporter_names()]
    if not exporters:
        return
    # Imported here: the metrics SDK adds ~30 ms to the start of every process that uses none.
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

    readers = [e if isinstance(e, MetricReader) else PeriodicExportingMetricReader(e) for e in exporters]
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))


def _log_exporters(settings: Settings) -> list[LogRecordExporter]:
    return [
        _exporter(settings, name, LOGS_GROUP, RedisStreamLogExporter, ScrubbingLogExporter)
        for name in settings.logs_exporter
    ]


def _span_exporters(settings: Settings, names: tuple[str, ...]) -> list[SpanExporter]:
    return [
        _exporter(settings, name, TRACES_GROUP, RedisStreamSpanExporter, ScrubbingSpanExporter)
        for name in names
    ]


def _exporter(
    settings: Settings, name: str, group: str, ours: Callable[[Settings], Any], scrubbing: Callable[..., Any]
) -> Any:
    """Ours scrub their own rows; any other exporter (OTLP) is handed scrubbed copies."""
    if name == REDIS_STREAM:
        return ours(settings)
    other = _from_entry_point(group, name)
    scrubber = scrubber_for(settings)
    return scrubbing(other, scrubber) if scrubber is not None else other


def _from_entry_point(group: str, name: str) -> Any:
    """Other exporters are found the way the OTel launcher finds them, and built with no arguments."""
    found = {point.name: point for point in entry_points(group=group)}
    variable = f"OTEL_{_SIGNAL_OF[group]}_EXPORTER"
    known = ", ".join(sorted({*found, "none"}))
    if name != OTLP:
        if name not in found:
            raise ConfigError(f"{variable}: no exporter named {name!r} is installed (installed: {known})")
        return found[name].load()()
    protocol_variable, protocol = _otlp_protocol(group)
    otlp_name = _OTLP_BY_PROTOCOL[protocol]
    if otlp_name not in found:
        if protocol == "http/protobuf":
            raise ConfigError(
                f"{variable}=otlp: the OTLP/HTTP exporter is not installed (installed: {known}): "
                f"{installing('otlp')}"
            )
        # gRPC: upstream's distro may have chosen it, the user having set neither variable
        instead = "none" if group == METRICS_GROUP else REDIS_STREAM
        raise ConfigError(
            f"{variable}=otlp with {protocol_variable}={protocol}: no exporter named "
            f"{otlp_name!r} is installed (installed: {known}); upstream's "
            f"opentelemetry-distro sets these two where they are unset: set {variable}={instead}, or "
            f"{protocol_variable}=http/protobuf"
        )
    return found[otlp_name].load()()


def _id_generator() -> IdGenerator:
    """`OTEL_PYTHON_ID_GENERATOR` (`xray` with AWS's SDK extension, for X-Ray's time-stamped
    trace ids), found as upstream's configurator finds it; random ids that leave the app's
    `random` alone when unset (trace_ids.py)."""
    name = os.environ.get(ID_GENERATOR_VARIABLE, "").strip()
    if not name:
        return trace_ids.PrivateRandomIdGenerator()
    generator = _installed(ID_GENERATORS_GROUP, ID_GENERATOR_VARIABLE, "ID generator", name)()
    if not isinstance(generator, IdGenerator):
        raise ConfigError(
            f"{ID_GENERATOR_VARIABLE}={name!r} names {type(generator).__name__}, not an IdGenerator"
        )
    return generator


def _sampler() -> Sampler | None:
    """A sampler a package registers (AWS X-Ray's, a custom one), found by the name
    `OTEL_TRACES_SAMPLER` gives it and made from `OTEL_TRACES_SAMPLER_ARG`, as upstream's
    configurator makes it, or one of the SDK's own; None where none is named (the SDK's default)."""
    name = os.environ.get(SAMPLER_VARIABLE, "").strip()
    if not name:
        return None
    if name.lower() in _SDK_SAMPLERS.keys() | _SDK_RATIO_SAMPLERS.keys():
        return _sdk_sampler(name.lower())
    factory = _installed(SAMPLERS_GROUP, SAMPLER_VARIABLE, "sampler", name)
    argument = os.environ.get(SAMPLER_ARGUMENT_VARIABLE)
    try:
        sampler = factory(argument)
    except Exception as error:
        raise ConfigError(
            f"{SAMPLER_VARIABLE}={name!r} failed with {SAMPLER_ARGUMENT_VARIABLE}={argument!r}: "
            f"{type(error).__name__}: {error}"
        ) from None
    if not isinstance(sampler, Sampler):
        raise ConfigError(f"{SAMPLER_VARIABLE}={name!r} made {type(sampler).__name__}, not a Sampler")
    return sampler


def _sdk_sampler(name: str) -> Sampler:
    """One of the SDK's own, made here rather than read by its TracerProvider, which took
    `'always_off '` for no sampler it knows and a ratio it could not read for 1: each kept
    every trace, said only in a warning."""
    if name in _SDK_SAMPLERS:
        return _SDK_SAMPLERS[name]
    argument = os.environ.get(SAMPLER_ARGUMENT_VARIABLE, "").strip()
    try:
        ratio = float(argument) if argument else 1.0
    except ValueError:
        ratio = math.nan
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(
            f"{SAMPLER_ARGUMENT_VARIABLE}={argument!r} is not a ratio from 0 to 1, which {name} takes"
        )
    return _SDK_RATIO_SAMPLERS[name](ratio)


def _installed(group: str, variable: str, kind: str, name: str) -> Any:
    """What the entry point `name` of `group` loads; `variable` named it."""
    found = {point.name: point for point in entry_points(group=group)}
    if name not in found:
        known = ", ".join(sorted(found))
        raise ConfigError(f"{variable}: no {kind} named {name!r} is installed (installed: {known})")
    return found[name].load()


def _otlp_protocol(group: str) -> tuple[str, str]:
    """`otlp` names no entry point of its own in the HTTP package: the protocol picks one.

    As the spec says, OTEL_EXPORTER_OTLP_{LOGS,TRACES,METRICS}_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL,
    else http/protobuf, the exporter our `otlp` extra installs (the SDK's own default is grpc).
    """
    variable = f"OTEL_EXPORTER_OTLP_{_SIGNAL_OF[group]}_PROTOCOL"
    if not os.environ.get(variable, "").strip():
        variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
    protocol = os.environ.get(variable, "").strip() or "http/protobuf"
    if protocol not in _OTLP_BY_PROTOCOL:
        raise ConfigError(f"{variable}={protocol!r} is invalid: expected http/protobuf or grpc")
    return variable, protocol


def _follow_forks(*providers: TracerProvider | LoggerProvider) -> None:
    """Forked workers report their own pid and instance id, uWSGI's too (forks.py)."""

    def update_pid() -> None:
        for provider in providers:
            # Private, as the SDK's own fork handler calls it: upstream kept it private when it added
            # that handler (open-telemetry/opentelemetry-python#5279, PR #5280). The SDK refreshes only
            # process-dependent detectors, and its `process` detector would also store the command line.
            provider._update_resource(process_resource())

    renew_in_child(update_pid)


def _retire_configurators_handlers(provider: object) -> None:
    """Another configurator built `provider` from the same `OTEL_LOGS_EXPORTER` (it built our
    exporters too) and put a handler for it on root: the capture now feeds every exporter that
    names, scrubbed, so that handler would send each record a second time."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if is_otel_logging_handler(handler) and getattr(handler, "_logger_provider", None) is provider:
            root.removeHandler(handler)


def _scrub_configurators_span_exporters(provider: object, scrubber: Scrubber | None) -> None:
    """Another configurator built `provider` from the same `OTEL_TRACES_EXPORTER`: the other
    exporters it named (OTLP, console) are handed scrubbed copies, as they are where ours is the
    configurator. Its batch processors hold their exporter privately; one that holds it otherwise
    is said in a line."""
    if scrubber is None:
        return
    for processor in app_overrides.span_processors_of(provider) or ():
        batch: Any = getattr(processor, "_batch_processor", None)
        exporter = getattr(batch, "_exporter", None)
        if isinstance(exporter, ScrubbingSpanExporter | from_environment.EnvironmentSpanExporter):
            continue
        if isinstance(exporter, SpanExporter):
            batch._exporter = ScrubbingSpanExporter(exporter, scrubber)
        else:
            internal_logger.warning(
                "spans leave through %s, which the launcher's configurator set up, without scrubbing: "
                "tracestream cannot reach its exporter; set OTEL_PYTHON_CONFIGURATOR=tracestream",
                type(processor).__name__,
            )


def _capture_logging(handler: OTelHandler, settings: Settings) -> None:
    """Every stdlib record from now on, whatever the app's handler tree (see log_capture)."""
    log_capture.install(log_capture.LogCapture(handler, settings.log_level, settings.log_exclude))
    _say_the_capture_is_not_the_logging_instrumentation(settings)
    # opentelemetry-instrumentation-logging reads this when it instruments later.
    os.environ["OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION"] = "false"


def _say_the_capture_is_not_the_logging_instrumentation(settings: Settings) -> None:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS turns off the launcher's instrumentations, upstream's
    logging one among them, which bridges stdlib records where tracestream is not installed. The
    capture stands in for it and stays: OTEL_LOGS_EXPORTER, which names where records go, is the
    stronger word, and a `*` set to instrument by hand would otherwise lose every record unsaid."""
    disabled = {name.strip() for name in os.environ.get(_DISABLED_INSTRUMENTATIONS, "").split(",")}
    named = disabled & {"logging", "*"}
    if named and settings.logs_exporter:
        internal_logger.warning(
            "%s names %s, which turns off upstream's logging instrumentation, not tracestream's "
            "capture of stdlib records: they still go to OTEL_LOGS_EXPORTER=%s; "
            "OTEL_LOGS_EXPORTER=none exports none",
            _DISABLED_INSTRUMENTATIONS,
            " and ".join(sorted(named)),
            ",".join(settings.logs_exporter),
        )


_DISABLED_INSTRUMENTATIONS = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
