"""tracestream's own diagnostics: to stderr only, never back into the pipeline.

The logger is made outside logging's registry, where an app's `dictConfig` or `fileConfig`
run after us would disable it (`disable_existing_loggers`, their default) and tracestream
would stop saying what goes wrong. `logging.disable()` still silences it. Lines go to the
`sys.stderr` of the moment they are said, wherever the app has pointed it since, and nowhere
else: what wraps `Logger.handle` or `Logger.callHandlers` (Sentry's logging integration, which
would make them breadcrumbs and Sentry logs) never sees them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr


class _StderrLogger(logging.Logger):
    def makeRecord(
        self,
        name: str,
        level: int,
        fn: str,
        lno: int,
        msg: object,
        args: Any,
        exc_info: Any,
        func: str | None = None,
        extra: Mapping[str, object] | None = None,
        sinfo: str | None = None,
    ) -> logging.LogRecord:
        return _Line(name, level, msg, args, exc_info)

    def handle(self, record: logging.LogRecord) -> None:
        if not self.disabled:
            _handler.handle(record)


class _Line(logging.LogRecord):
    """What the line's format reads, and no more. A `LogRecord` asks `threading` which thread
    it is made on, and our export threads are not `threading`'s: asking made each one a dummy
    `Thread` that the app's `threading.enumerate()` then listed for good."""

    def __init__(self, name: str, level: int, msg: object, args: Any, exc_info: Any) -> None:
        self.name = name
        self.levelno = level
        self.levelname = logging.getLevelName(level)
        self.msg = msg
        self.args = args
        self.exc_info = exc_info
        self.exc_text = None
        self.stack_info = None


_handler = _Stderr()
_handler.setFormatter(logging.Formatter("tracestream: %(levelname)s %(message)s"))
internal_logger = _StderrLogger("tracestream.internal", logging.WARNING)
internal_logger.propagate = False
