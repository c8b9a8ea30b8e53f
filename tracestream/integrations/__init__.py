"""Framework integrations that `configure()` installs, once per process, for each library in use.

Each one builds on the contrib instrumentor (guarded by its `is_instrumented_by_opentelemetry`
flag, so the launcher loading it again is harmless) and adds what upstream lacks: request
and task records inside their trace, trace headers, handlers where frameworks rewire
logging, and a flush where Celery children end with `os._exit`.

An integration installs when its library is imported (at once if it already is), so a
process pays nothing for frameworks it has installed but never uses.
`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS` (the launcher's variable) turns any of them off.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import import_module
from types import ModuleType

import wrapt

from tracestream._internal_log import internal_logger
from tracestream.otel_setup.configure import Telemetry

# entry-point name (as in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS), library, our module
INTEGRATIONS = (
    ("fastapi", "fastapi", "fastapi"),
    ("django", "django", "django"),
    ("celery", "celery", "celery"),
    ("requests", "requests", "clients"),
    ("httpx", "httpx", "clients"),
)
INSTALLED_BY_CONFIGURE = frozenset(name for name, _, _ in INTEGRATIONS)


def disabled() -> set[str]:
    return {name.strip() for name in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}


def install_all(telemetry: Telemetry) -> None:
    off = disabled()
    if "*" in off:
        return
    for name, library, module in INTEGRATIONS:
        if name not in off:
            wrapt.register_post_import_hook(_installer(telemetry, name, module), library)


def _installer(telemetry: Telemetry, name: str, module: str) -> Callable[[ModuleType], None]:
    def install(_: ModuleType) -> None:
        try:
            integration = import_module(f"tracestream.integrations.{module}")
        except ImportError:  # the library without its contrib instrumentor: nothing to add
            return
        try:
            integration.install(telemetry, name)
        except Exception:  # a broken integration must not cost the process its telemetry
            internal_logger.exception("the %s integration failed to install", name)

    return install
