"""Secret bound parameters in SQLAlchemy's `echo` lines.

With `echo=True` (its tutorial's setting) SQLAlchemy logs a statement, then its parameters on a
line of their own: `[generated in 0.0001s] ('spongebob', 'hunter2')`. Positional, they name no
column, and text scrubbing cannot tell the password. The statement the same thread logged just
before names them: a parameter bound to a column the scrubber calls secret is redacted in our
copy of the line. The app's own handlers print the line as SQLAlchemy wrote it.

Named parameters (`%(p)s`, `:p`) are logged as a dict keyed by the names the app chose, which
need not say either: the statement tells them alike. A placeholder inside an expression
(`SET password=lower(?)`) names no column and is left as it is.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from typing import Any

from tracestream.scrubbing import REDACTED
from tracestream.sql_text import secret_placeholders

__all__ = ["ENGINE_LOGGER", "BoundParameters"]

ENGINE_LOGGER = "sqlalchemy.engine.Engine"  # an engine's `logging_name` comes after it
_PARAMETERS_LINE = "[%s] %r"


class BoundParameters:
    """Our text of SQLAlchemy's parameter lines, secrets redacted."""

    def __init__(self, secret_column: Callable[[str], bool]) -> None:
        # An engine logs the statements it has compiled, again and again.
        placeholders = partial(secret_placeholders, secret_column=secret_column)
        self._secret_placeholders = lru_cache(maxsize=64)(placeholders)
        self._last_statement = threading.local()

    def message(self, record: logging.LogRecord) -> str | None:
        """The line with its secret parameters redacted; None where nothing is to redact (or
        `record` is no engine line), and the line is as the app's handlers show it."""
        args = record.args
        if not args:  # a statement, or BEGIN, COMMIT: the next parameters are this one's
            statement = record.msg
            # in full: an INSERT of many rows is a `str` whose own `str()` shortens it
            self._last_statement.text = statement[:] if isinstance(statement, str) else ""
            return None
        if record.msg != _PARAMETERS_LINE or not isinstance(args, tuple) or len(args) != 2:
            return None
        shown: Any = args[1]  # SQLAlchemy's `_repr_params`, which shortens what it shows
        parameters = getattr(shown, "params", None)
        many = bool(getattr(shown, "ismulti", False))  # executemany: a row of parameters each
        rows = parameters if many else [parameters]
        if not isinstance(rows, (tuple, list)) or not all(
            isinstance(row, (tuple, list, dict)) for row in rows
        ):
            return None
        secret = self._secret_placeholders(getattr(self._last_statement, "text", ""))
        if not secret:
            return None
        redacted = copy.copy(shown)
        redacted.params = [_redacted(row, secret) for row in rows] if many else _redacted(rows[0], secret)
        return _PARAMETERS_LINE % (args[0], redacted)


def _redacted(row: Sequence[object] | dict[str, object], secret: frozenset[int | str]) -> object:
    """A copy of one row of parameters, each secret position or name redacted (NULL hides nothing)."""
    if isinstance(row, dict):
        return {
            name: REDACTED if name in secret and value is not None else value for name, value in row.items()
        }
    values = [
        REDACTED if position in secret and value is not None else value for position, value in enumerate(row)
    ]
    return tuple(values) if isinstance(row, tuple) else values
