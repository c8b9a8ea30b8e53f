"""The project served by daphne's runserver, as the daphne docs set it up; Django's default logging."""

from proj.settings import *  # noqa: F403

INSTALLED_APPS = ["daphne", *INSTALLED_APPS]  # noqa: F405
ASGI_APPLICATION = "proj.asgi.application"
LOGGING: dict[str, object] = {}
