"""tracestream's own diagnostics: to stderr only, never back into the pipeline."""

from __future__ import annotations

import logging
import sys

internal_logger = logging.getLogger("tracestream.internal")
internal_logger.propagate = False
if not internal_logger.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("tracestream: %(levelname)s %(message)s"))
    internal_logger.addHandler(_handler)
    internal_logger.setLevel(logging.WARNING)
