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
from _thread import get_ident
from collections.abc import Mapping
from typing import Any

from tracestream.terminal_text import visible

# The threads writing a line of ours now. What their stderr does with it is no record of the
# app's: a Celery worker logs what it prints (as `celery.redirected`), as does an app whose
# stderr hands its lines to logging.
_saying: set[int] = set()


def saying_here() -> bool:
    """Whether this thread is writing a line of ours now."""
    return bool(_saying) and get_ident() in _saying


def say(line: str) -> None:
    """`line` on the `sys.stderr` of the moment, as one line any terminal shows: control characters
    escaped, and what its encoding cannot take (a C locale, `PYTHONIOENCODING=ascii`) as escapes.
    A stderr that is gone, closed or full loses the line and nothing else: the thread that says it
    (an export thread, the launcher's setup) goes on as if it had been printed."""
    stream = sys.stderr
    if stream is None:  # closed at start (`2>&-`), or set so by the app: never stdout instead
        return
    text = visible(line) + "\n"
    ident = get_ident()
    _saying.add(ident)
    try:
        try:
            stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(stream, "encoding", None) or "ascii"
            stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
        stream.flush()
    except Exception:
        pass
    finally:
        _saying.discard(ident)


class _Stderr(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a line of ours whose arguments do not fit its message
            line = f"tracestream: {record.levelname} {record.msg}"
        say(line)


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
