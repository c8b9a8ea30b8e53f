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
from typing import TextIO


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr


class _StderrLogger(logging.Logger):
    def handle(self, record: logging.LogRecord) -> None:
        if not self.disabled:
            _handler.handle(record)


_handler = _Stderr()
_handler.setFormatter(logging.Formatter("tracestream: %(levelname)s %(message)s"))
internal_logger = _StderrLogger("tracestream.internal", logging.WARNING)
internal_logger.propagate = False
