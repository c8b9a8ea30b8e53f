"""Django: the AppConfig that configures from settings. The request handling it leads to,
contrib's middleware among it, is in `middleware`, which the integration loads once Django's
handlers are in use: listing the app needs no more than Django, and without the `django`
extra the app starts and configure() says in one line what is missing."""

from __future__ import annotations

from django.apps import AppConfig

from tracestream.django_settings import configure_arguments

__all__ = ["TracestreamConfig"]


class TracestreamConfig(AppConfig):  # type: ignore[misc]
    """List `"tracestream"` in INSTALLED_APPS to configure from settings. Django finds this
    class in `tracestream.apps`, in this package's `apps` when the package is listed, or by its
    own path: whichever is listed, it is the one app `tracestream`, and two of them a duplicate.

    `settings.TRACESTREAM` holds `configure()` arguments (environment variables fill the
    rest), and `worker_service_name` for Celery's processes (see `django_settings`); it runs
    in `django.setup()`, before the handler loads its middleware.
    """

    name = "tracestream.integrations.django"
    label = "tracestream"
    verbose_name = "tracestream"

    def ready(self) -> None:
        # An entry point, as the launcher is: configure() installs the integrations, this among them.
        from tracestream.otel_setup.configure import configure

        configure(**configure_arguments())
