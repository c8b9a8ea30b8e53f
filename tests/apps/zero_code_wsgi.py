"""A plain WSGI app with a logger, as gunicorn's docs show one: no tracestream code at all."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/hello":
        logger.info("hello from wsgi")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!\n"]
