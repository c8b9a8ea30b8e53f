"""Every stdlib log record, seen below the handler tree.

A handler on the root logger misses what an app's own logging setup does later:
`dictConfig` with a `root` entry removes it, a logger with `propagate=False` never
reaches it, `dictConfig`'s default disables every logger it does not name, and an app
whose root level is WARNING never creates its INFO records at all. It also turns off
`logging.lastResort`, so an app without handlers stops printing its errors.

So no handler is added anywhere. Like Sentry's logging integration, we wrap three
`logging.Logger` methods, once per process:

- `callHandlers`, which every enabled logger calls once per record that passed its level
  and filters: the record goes to the app's handlers exactly as before, then to us.
- `isEnabledFor`, so a record at or above our level is created even where the app's
  level or a disabled logger would skip it, and
- `handle`, which sends such a record to us alone: the app's handlers never see a record
  it would not have created, so nothing it prints changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

__all__ = ["ACCESS_LOGGERS", "LogCapture", "current", "install", "uninstall"]

# Each server's own access line: the request record replaces it in the stream. (daphne's
# runserver logs HTTP and WebSocket lines on one logger: the Django integration tells them apart.)
ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access", "hypercorn.access")
_MAX_REMEMBERED_NAMES = 10_000

_is_enabled_for = logging.Logger.isEnabledFor
_handle = logging.Logger.handle
_call_handlers = logging.Logger.callHandlers


class LogCapture:
    """Hands records at or above `level` to `handler`, except those of excluded loggers."""

    def __init__(self, handler: logging.Handler, level: int, excluded: Iterable[str] = ()) -> None:
        self.handler = handler
        self.level = level
        self.excluded = tuple(dict.fromkeys((*ACCESS_LOGGERS, *excluded)))
        self._wanted: dict[str, bool] = {}

    def wants(self, logger_name: str) -> bool:
        """Loggers repeat, so each name is matched against the exclusions once."""
        wanted = self._wanted.get(logger_name)
        if wanted is None:
            wanted = not any(
                logger_name == name or logger_name.startswith(f"{name}.") for name in self.excluded
            )
            if len(self._wanted) >= _MAX_REMEMBERED_NAMES:
                self._wanted.clear()
            self._wanted[logger_name] = wanted
        return wanted

    def take(self, record: logging.LogRecord) -> None:
        if record.levelno >= self.level and self.wants(record.name):
            self.handler.handle(record)


_capture: LogCapture | None = None


def current() -> LogCapture | None:
    return _capture


def install(capture: LogCapture) -> None:
    """Route records to `capture` from now on; the wrappers are put in place once."""
    global _capture
    _capture = capture
    if logging.Logger.callHandlers is not _capturing_call_handlers:
        logging.Logger.isEnabledFor = _capturing_is_enabled_for  # type: ignore[method-assign]
        logging.Logger.handle = _capturing_handle  # type: ignore[method-assign]
        logging.Logger.callHandlers = _capturing_call_handlers  # type: ignore[method-assign]


def uninstall() -> None:
    """Stop capturing; logging then behaves exactly as it does without us."""
    global _capture
    _capture = None
    logging.Logger.isEnabledFor = _is_enabled_for  # type: ignore[method-assign]
    logging.Logger.handle = _handle  # type: ignore[method-assign]
    logging.Logger.callHandlers = _call_handlers  # type: ignore[method-assign]


def _capturing_is_enabled_for(self: logging.Logger, level: int) -> bool:
    if _is_enabled_for(self, level):
        return True
    capture = _capture
    return (
        capture is not None
        and level >= capture.level
        and self.manager.disable < level  # logging.disable() still silences everything
        and capture.wants(self.name)
    )


def _capturing_handle(self: logging.Logger, record: logging.LogRecord) -> None:
    if _is_enabled_for(self, record.levelno):
        _handle(self, record)  # the app's path: its filters, then callHandlers
        return
    # Created only because we asked for it: the app's handlers must not see it.
    capture = _capture
    if capture is None:
        return
    passed = self.filter(record)
    if passed:
        capture.take(passed if isinstance(passed, logging.LogRecord) else record)


def _capturing_call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
    try:
        _call_handlers(self, record)
    finally:
        capture = _capture
        if capture is not None:
            capture.take(record)
