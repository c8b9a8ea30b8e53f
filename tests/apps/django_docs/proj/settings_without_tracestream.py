"""The same project without tracestream: what the terminal shows when it is not installed."""

from proj.settings import *  # noqa: F403

INSTALLED_APPS = [app for app in INSTALLED_APPS if not app.startswith("tracestream")]  # noqa: F405
