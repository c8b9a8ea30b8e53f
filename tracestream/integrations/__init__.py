"""Framework integrations that `configure()` installs, once per process, for each library in use.

Each one builds on the contrib instrumentor (guarded by its `is_instrumented_by_opentelemetry`
flag, so the launcher loading it again is harmless) and adds what upstream lacks: request
and task records inside their trace, trace headers, and a flush where Celery children
end with `os._exit`.

An integration installs when its library is imported (at once if it already is), so a
process pays nothing for frameworks it has installed but never uses.
`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS` (the launcher's variable) turns any of them off.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from importlib.util import find_spec
from types import ModuleType

import wrapt

from tracestream._internal_log import internal_logger
from tracestream.otel_setup.telemetry import Telemetry
from tracestream.settings import metrics_exporter_names


@dataclass(frozen=True)
class Integration:
    name: str  # the entry-point name, as in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
    library: str
    module: str  # ours, under tracestream.integrations
    contrib: str  # the contrib instrumentation it builds on
    extra: str  # the tracestream extra that installs `contrib`


INTEGRATIONS = (
    Integration("fastapi", "fastapi", "fastapi", "opentelemetry.instrumentation.fastapi", "fastapi"),
    Integration("django", "django", "django", "opentelemetry.instrumentation.django", "django"),
    Integration("celery", "celery", "celery", "opentelemetry.instrumentation.celery", "celery"),
    Integration("requests", "requests", "clients", "opentelemetry.instrumentation.requests", "clients"),
    Integration("httpx", "httpx", "clients", "opentelemetry.instrumentation.httpx", "clients"),
)
INSTALLED_BY_CONFIGURE = frozenset(integration.name for integration in INTEGRATIONS)

_lock = threading.Lock()
_deferred: list[Callable[[], None]] | None = None


def disabled() -> set[str]:
    return {name.strip() for name in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}


# The stable HTTP conventions alone (contrib's default is the old ones): fewer attributes to build
# per server span, named as our request records are. Contrib reads it at its first instrument().
SEMCONV_DEFAULT = ("OTEL_SEMCONV_STABILITY_OPT_IN", "http")


def _choose_http_conventions(telemetry: Telemetry) -> None:
    """Only where tracestream alone reads span attributes and no metrics go out: a console or
    OTLP exporter's readers, and HTTP metrics' names, keep contrib's default."""
    only_ours = set(telemetry.settings.traces_exporter) <= {"redis_stream"}
    if only_ours and not metrics_exporter_names():
        os.environ.setdefault(*SEMCONV_DEFAULT)


def install_all(telemetry: Telemetry) -> None:
    off = disabled()
    if "*" in off:
        return
    _choose_http_conventions(telemetry)
    for integration in INTEGRATIONS:
        if integration.name not in off:
            _Installer(telemetry, integration).register()


def defer_while_launcher_instruments() -> None:
    """The launcher's own instrumentors go first; ours complete theirs afterwards.

    Instrumenting before the launcher does would only make it warn that the library is
    already instrumented (printed on the app's terminal).
    """
    global _deferred
    with _lock:
        if _deferred is None:
            _deferred = []


def run_deferred() -> None:
    global _deferred
    with _lock:
        pending, _deferred = _deferred or [], None
    for install in pending:
        install()


class _Installer:
    """Installs one integration once both its library and the contrib module are importable.

    Importing a contrib module imports its library, so the library's import hook can fire
    while the contrib module is half-initialised (the launcher loads it that way): then
    the contrib module's own import hook, which fires once it is complete, installs.
    """

    def __init__(self, telemetry: Telemetry, integration: Integration) -> None:
        self.telemetry = telemetry
        self.integration = integration
        self._started = False

    def register(self) -> None:
        wrapt.register_post_import_hook(self._on_import, self.integration.library)
        if find_spec_quietly(self.integration.contrib) is not None:
            wrapt.register_post_import_hook(self._on_import, self.integration.contrib)

    def _on_import(self, module: ModuleType) -> None:
        integration = self.integration
        if integration.library not in sys.modules:
            return
        # The contrib module's own hook fires once its code has run, still flagged as initialising.
        if module.__name__ != integration.contrib and _initializing(integration.contrib):
            return
        with _lock:
            if self._started:
                return
            self._started = True
            if _deferred is not None:
                _deferred.append(self._install)
                return
        self._install()

    def _install(self) -> None:
        integration = self.integration
        if find_spec_quietly(integration.contrib) is None:
            internal_logger.warning(
                "%s is in use but %s is not installed: no %s integration "
                "(pip install 'tracestream[%s]' adds it)",
                integration.library,
                integration.contrib.replace(".", "-"),
                integration.name,
                integration.extra,
            )
            return
        try:
            module = import_module(f"tracestream.integrations.{integration.module}")
            module.install(self.telemetry, integration.name)
        except Exception as error:  # a broken integration must not cost the process its telemetry
            internal_logger.warning("the %s integration failed to install: %r", integration.name, error)


def find_spec_quietly(name: str) -> object | None:
    try:
        return find_spec(name)
    except (ImportError, ValueError):
        return None


def _initializing(name: str) -> bool:
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return module is not None and bool(getattr(spec, "_initializing", False))
