"""tracestream's own diagnostics: to stderr only, never back into the pipeline.

The logger is made outside logging's registry, where an app's `dictConfig` or `fileConfig`
run after us would disable it (`disable_existing_loggers`, their default) and tracestream
would stop saying what goes wrong. `logging.disable()` still silences it.
"""

from __future__ import annotations

import logging
import sys

internal_logger = logging.Logger("tracestream.internal", logging.WARNING)
internal_logger.propagate = False
_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("tracestream: %(levelname)s %(message)s"))
internal_logger.addHandler(_handler)
