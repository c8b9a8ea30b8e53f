"""Hooks for the `opentelemetry-instrument` launcher.

The launcher runs one distro and one configurator, the first it finds unless
OTEL_PYTHON_DISTRO / OTEL_PYTHON_CONFIGURATOR name one; with upstream's
`opentelemetry-distro` installed too, which wins depends on install order. So the
setup does not hang on winning: our configurator runs `configure()`, and our
pre-instrument hook, which the launcher runs whichever configurator won, runs it too
when another configurator went first and the environment names our exporters.
`configure()` then joins that configurator's providers (see configure.py).

Our distro defaults the exporters to the Redis streams; upstream's defaults every
exporter to `otlp`, and when that exporter is missing, its configurator raises and the
launcher loads nothing at all, which our exporters' module says (exporters/from_environment.py):
set OTEL_METRICS_EXPORTER=none then (docs/configuration.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import wrapt
from opentelemetry.instrumentation.dependencies import DependencyConflictError
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.instrumentation.version import __version__ as launcher_version
from opentelemetry.sdk._configuration import _BaseConfigurator

from tracestream import integrations
from tracestream._internal_log import internal_logger, say
from tracestream.exporters import from_environment
from tracestream.integrations import INSTALLED_BY_CONFIGURE, threads, uncaught
from tracestream.integrations import structlog as structlog_integration
from tracestream.otel_setup.configure import configure, set_up_metrics
from tracestream.otel_setup.resource import set_up_by_the_launcher
from tracestream.otel_setup.telemetry import installed
from tracestream.settings import ConfigError, metrics_exporter_names, refuse_to_launch, sdk_disabled

_DEFAULTS = {
    "OTEL_TRACES_EXPORTER": from_environment.REDIS_STREAM,
    "OTEL_LOGS_EXPORTER": from_environment.REDIS_STREAM,
    "OTEL_METRICS_EXPORTER": "none",
    # Ours, even where upstream's configurator comes first in install order.
    "OTEL_PYTHON_CONFIGURATOR": "tracestream",
}


_our_distro_ran = False


class TracestreamDistro(BaseDistro):  # type: ignore[misc]
    """Selected by the launcher through the `opentelemetry_distro` entry point."""

    def _configure(self, **kwargs: Any) -> None:
        global _our_distro_ran
        _our_distro_ran = True
        for name, value in _DEFAULTS.items():
            os.environ.setdefault(name, value)

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        if sdk_disabled():  # the app runs as without the launcher, as configure() leaves it
            return
        if installed() is not None and entry_point.name in INSTALLED_BY_CONFIGURE:
            # configure() instrumented it with our additions (Django: once settings are ready);
            # instrumenting again here would only warn, or configure Django's settings too early.
            return
        if entry_point.name == "logging":
            # Our capture already takes every record; an OTel handler would double each one.
            kwargs["enable_log_auto_instrumentation"] = False
        try:
            super().load_instrumentor(entry_point, **kwargs)
        except (ImportError, DependencyConflictError):
            raise  # the launcher skips that one and goes on, saying why
        except Exception as error:
            # The launcher stops at any other error, leaving out every instrumentation after
            # this one and our integrations' completion (after_instrumentors).
            internal_logger.warning(
                "the %s instrumentation failed, the others are loaded: %s: %s",
                entry_point.name,
                type(error).__name__,
                error,
            )


class TracestreamConfigurator(_BaseConfigurator):
    """Selected by the launcher through the `opentelemetry_configurator` entry point."""

    def _configure(self, **kwargs: Any) -> None:
        _configure_or_exit(with_metrics=True)


def before_instrumentors() -> None:
    """`opentelemetry_pre_instrument`: runs after whichever configurator the launcher picked."""
    if sdk_disabled():
        return
    integrations.defer_while_launcher_instruments()
    if installed() is None and from_environment.named(os.environ):
        _configure_or_exit()
    if installed() is not None:
        _hold_back_django_instrumentor()
        _keep_the_logging_instrumentations_skip_note_off_the_terminal()
        wrapt.register_post_import_hook(_keep_servers_out_of_click_spans, _CLICK_INSTRUMENTATION)
        for instrumentation in _STOOD_IN_FOR:
            wrapt.register_post_import_hook(_stand_in, instrumentation)
        wrapt.register_post_import_hook(_asyncio_only_where_it_records, _ASYNCIO_INSTRUMENTATION)
    elif any(name.startswith("TRACESTREAM_") for name in os.environ):
        # Another distro chose the exporters (upstream's picks otlp): nothing would reach Redis.
        say(
            "tracestream: not set up: TRACESTREAM_* is set, but OTEL_TRACES_EXPORTER="
            f"{os.environ.get('OTEL_TRACES_EXPORTER', '')!r} and OTEL_LOGS_EXPORTER="
            f"{os.environ.get('OTEL_LOGS_EXPORTER', '')!r} name no redis_stream exporter"
        )


# The logging instrumentation's note where `OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=true`
# says the SDK's handler is on root. Without tracestream that handler exports the note as a record
# (the console exporter prints it on stdout); with tracestream's capture in place of that handler
# the note's claim is untrue, and it is kept out of the exporters and of the terminal, where
# Python's last resort would print it on every start when root has no handler.
_SKIP_NOTE = "Skipping installation of LoggingHandler from `opentelemetry-instrumentation-logging`"


def _keep_the_logging_instrumentations_skip_note_off_the_terminal() -> None:
    if os.environ.get("OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED", "").strip().lower() == "true":
        logging.getLogger("opentelemetry.instrumentation.logging").addFilter(_without_the_skip_note)


def _without_the_skip_note(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_SKIP_NOTE)


def after_instrumentors() -> None:
    """`opentelemetry_post_instrument`: our integrations complete what the launcher instrumented."""
    if _held_django:
        del os.environ[_DJANGO_SWITCH]
    integrations.run_deferred()


# Click commands that serve until stopped: the click instrumentation leaves `uvicorn` out of a
# span when run as itself but not as `python -m uvicorn`, and knows granian under neither. It
# knows `flask run` by its `ScriptInfo`, not Quart's, a copy of it.
_SERVER_COMMANDS = frozenset({"uvicorn", "granian"})
_RUN_COMMAND_OWNERS = frozenset({"quart.cli"})
# And by the package of the function a command runs: RQ's worker, its pool and its scheduler
# (every job's lines were in the worker's one trace, which `traces` listed only at its exit).
_SERVING_COMMANDS_OF = {"rq": frozenset({"worker", "worker-pool", "cron"})}
_CLICK_INSTRUMENTATION = "opentelemetry.instrumentation.click"


def _keep_servers_out_of_click_spans(click_instrumentation: Any) -> None:
    """The instrumentation opens a span around each click command, and a server's requests then
    all become its children, in one trace that never ends; it knows a server by the command's
    name, which `python -m` changes, or by Flask's `ScriptInfo`."""
    skip = click_instrumentation._skip_servers

    def skip_servers(ctx: Any) -> bool:
        name = str(ctx.info_name or "")
        if name == "run" and type(ctx.obj).__module__ in _RUN_COMMAND_OWNERS:
            return True
        package = str(getattr(getattr(ctx.command, "callback", None), "__module__", "")).split(".")[0]
        if name in _SERVING_COMMANDS_OF.get(package, ()):
            return True
        return bool(skip(ctx)) or name.rsplit(" ", 1)[-1] in _SERVER_COMMANDS

    click_instrumentation._skip_servers = skip_servers


# Upstream's instrumentations `opentelemetry-bootstrap` installs (structlog's beside structlog,
# the exceptions and threading ones everywhere) whose work configure() has done: beside ours
# each wrote every record twice, or added frames to the tracebacks a thread prints (see
# integrations/structlog.py, uncaught.py and threads.py). Instrumenting runs ours instead.
# Starlette's, which another distro loads (ours skips it), swaps `starlette.applications.Starlette`
# for a subclass: what patches that class afterwards (Sentry's Starlette integration) misses
# every FastAPI app, a subclass of the real one; configure() instruments Starlette already.
_STOOD_IN_FOR: dict[str, tuple[str, Callable[[], None]]] = {
    "opentelemetry.instrumentation.structlog": ("StructlogInstrumentor", structlog_integration.install),
    "opentelemetry.instrumentation.exceptions": ("UnhandledExceptionInstrumentor", uncaught.install),
    "opentelemetry.instrumentation.threading": ("ThreadingInstrumentor", threads.install),
    "opentelemetry.instrumentation.starlette": ("StarletteInstrumentor", lambda: None),
}


def _stand_in(instrumentation: ModuleType) -> None:
    class_name, install = _STOOD_IN_FOR[instrumentation.__name__]
    instrumentor = getattr(instrumentation, class_name)
    instrumentor._instrument = lambda self, **kwargs: install()
    instrumentor._uninstrument = lambda self, **kwargs: None


_ASYNCIO_INSTRUMENTATION = "opentelemetry.instrumentation.asyncio"
# What it records where metrics go nowhere: the coroutines, futures and `to_thread` functions
# these name.
_ASYNCIO_SETTINGS = (
    "OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE",
    "OTEL_PYTHON_ASYNCIO_FUTURE_TRACE_ENABLED",
    "OTEL_PYTHON_ASYNCIO_TO_THREAD_FUNCTION_NAMES_TO_TRACE",
)


def _asyncio_only_where_it_records(instrumentation: ModuleType) -> None:
    """Upstream's asyncio instrumentation, which `opentelemetry-bootstrap` installs everywhere,
    wraps the coroutine of every task, `gather`, `wait_for` and `to_thread` call, to time it for
    metrics and trace the ones its settings name: a frame more in every traceback through them
    (daphne's for a failing Channels consumer). Where no metrics exporter is set and none of its
    settings is, it would record nothing, and is left out."""
    instrumentor = instrumentation.AsyncioInstrumentor
    instrument = instrumentor._instrument

    def _instrument(self: object, **kwargs: object) -> None:
        if metrics_exporter_names() or any(os.environ.get(name, "").strip() for name in _ASYNCIO_SETTINGS):
            instrument(self, **kwargs)

    instrumentor._instrument = _instrument


_DJANGO_SWITCH = "OTEL_PYTHON_DJANGO_INSTRUMENT"
_held_django = False


def _hold_back_django_instrumentor() -> None:
    """Another distro's launcher run instruments Django now, reading settings this early: with
    DJANGO_SETTINGS_MODULE not yet set (manage.py sets it later) it configures empty settings
    for good. Our integration adds the middleware once the handler loads it, settings ready."""
    global _held_django
    if _DJANGO_SWITCH not in os.environ:
        os.environ[_DJANGO_SWITCH] = "False"
        _held_django = True


def _configure_or_exit(*, with_metrics: bool = False) -> None:
    """`with_metrics` when ours is the launcher's configurator: upstream's, had it won, would
    have set up what OTEL_METRICS_EXPORTER names. Under another distro, metrics that cannot be
    set up are said and left off, the app served with traces and logs: that distro, not the
    user, may have chosen the exporter (upstream's sets `otlp` over gRPC where unset)."""
    set_up_by_the_launcher(launcher_version)
    try:
        telemetry = configure()
    except ConfigError as error:
        refuse_to_launch(error)
    if not with_metrics or sdk_disabled():
        return
    try:
        set_up_metrics(telemetry.resource)
    except ConfigError as error:
        if _our_distro_ran:
            refuse_to_launch(error)
        internal_logger.warning("metrics are off, traces and logs are set up: %s", error)
