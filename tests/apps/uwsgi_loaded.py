"""The Django docs project's WSGI module, in an app that logs once it has loaded it: under
uWSGI that line comes from the master, before it forks the workers."""

import logging

from proj.wsgi import application

__all__ = ["application"]

logging.getLogger("proj.boot").warning("application loaded")
