"""`settings.TRACESTREAM`: a Django project's `configure()` arguments, for the exporter and the console.

A Django project's web server, Celery worker and beat share one settings module, so a
service name taken from it alone would label every process alike. `worker_service_name`
names the processes Celery starts (`celery worker`, `celery beat` and their prefork children).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from tracestream.settings import ConfigError

WORKER_SERVICE_NAME = "worker_service_name"
# The URL name the console serves under (tracestream.console.django_urls): its requests are not traced.
CONSOLE_URL_NAME = "tracestream-console"


def configure_arguments() -> dict[str, Any]:
    """`settings.TRACESTREAM` as `configure()` arguments for this process."""
    declared = getattr(settings, "TRACESTREAM", None) or {}
    if not isinstance(declared, Mapping):
        raise ConfigError(
            f"settings.TRACESTREAM must be a dict of configure() arguments, not {type(declared).__name__}"
        )
    arguments = dict(declared)
    worker_service_name = arguments.pop(WORKER_SERVICE_NAME, None)
    if worker_service_name is None:
        return arguments
    if not isinstance(worker_service_name, str) or not worker_service_name.strip():
        raise ConfigError(
            f"settings.TRACESTREAM[{WORKER_SERVICE_NAME!r}]={worker_service_name!r} is invalid: "
            "expected a service name"
        )
    if started_by_celery():
        arguments["service_name"] = worker_service_name
    return arguments


def started_by_celery() -> bool:
    """True in a Celery worker or beat (prefork children inherit what their parent configured).

    Celery's Django fixup runs `django.setup()` once the loader has started the worker, so
    when our AppConfig is ready the project's Celery app already says so.
    """
    state = sys.modules.get("celery._state")
    if state is None or state.default_app is None:
        return False
    return bool(state.get_current_app().loader.worker_initialized)
