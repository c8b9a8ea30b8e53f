"""Whether the console's Redis answers: one log line per outage, and what viewers are told.

Every endpoint and every viewer meets the same outage, so they report it here instead of
each logging a traceback: the first failure logs a line, later ones are silent until a
Redis call succeeds again, which logs the recovery.
"""

from __future__ import annotations

import time

from redis.exceptions import AuthenticationError, BusyLoadingError, ConnectionError, TimeoutError
from starlette.responses import JSONResponse, Response

from tracestream._internal_log import internal_logger
from tracestream.connection import CLUSTER_CHANGES

UNREACHABLE = "Redis unreachable, retrying"
# Errors of a Redis that is down, restarting, loading its data or failing over.
OUTAGES = (ConnectionError, TimeoutError, BusyLoadingError, *CLUSTER_CHANGES)


def is_outage(error: Exception) -> bool:
    """Credentials Redis refused are no outage, though redis-py raises them as a connection
    error: retrying will not help, and the user should look at the URL, not the network."""
    return isinstance(error, OUTAGES) and not isinstance(error, AuthenticationError)


def describe(error: Exception) -> str:
    """What viewers are shown: the outage wording, or what Redis refused (e.g. an ACL right)."""
    if is_outage(error):
        return f"{UNREACHABLE} ({error})"
    if isinstance(error, AuthenticationError):
        return f"Redis refused the console's credentials: {error} (check the user and password in the URL)"
    return f"Redis refused the console's read: {error}"


class RedisHealth:
    """The current problem with Redis, if any; shared by the JSON endpoints and the live feed."""

    def __init__(self) -> None:
        self._problem = ""
        self._kind = ""  # an outage's messages vary (refused, timed out, reset): it logs once
        self._since = 0.0

    def failed(self, error: Exception) -> str:
        """Record a failed call; logs only when the problem is new. Returns the viewers' message."""
        message = describe(error)
        kind = UNREACHABLE if is_outage(error) else message
        if kind != self._kind:
            internal_logger.warning("console: %s", message)
            self._kind, self._since = kind, time.monotonic()
        self._problem = message
        return message

    def recovered(self) -> None:
        """Record a successful call; one log line when it ends a problem."""
        if self._problem:
            outage = time.monotonic() - self._since
            internal_logger.warning("console: Redis answers again after %.1fs", outage)
            self._problem = self._kind = ""

    def response(self, error: Exception) -> Response:
        """503 while Redis is out (retrying helps), 502 when it refuses (it will again)."""
        message = self.failed(error)
        return JSONResponse({"error": message}, status_code=503 if is_outage(error) else 502)
