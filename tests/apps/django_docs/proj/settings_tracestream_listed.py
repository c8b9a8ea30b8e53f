"""The project with tracestream listed in INSTALLED_APPS as `$PROJ_TRACESTREAM_APPS` spells it
(comma-separated): as a package, as its Django integration's module, or by its AppConfig's path."""

import os

from proj.settings import *  # noqa: F403

INSTALLED_APPS = [
    *(app for app in INSTALLED_APPS if not app.startswith("tracestream")),  # noqa: F405
    *os.environ["PROJ_TRACESTREAM_APPS"].split(","),
]
