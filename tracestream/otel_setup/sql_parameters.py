"""Secret bound parameters in SQLAlchemy's `echo` lines.

With `echo=True` (its tutorial's setting) SQLAlchemy logs a statement, then its parameters on a
line of their own: `[generated in 0.0001s] ('spongebob', 'hunter2')`. Positional, they name no
column, and text scrubbing cannot tell the password. The statement the same thread logged just
before names them: a parameter bound to a column the scrubber calls secret is redacted in our
copy of the line. The app's own handlers print the line as SQLAlchemy wrote it.

Named parameters (`%(password)s`, `:password`) are logged as a dict, whose keys text scrubbing
reads already. A placeholder inside an expression (`SET password=lower(?)`) names no column and
is left as it is.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache, partial
from typing import Any

from tracestream.scrubbing import REDACTED

__all__ = ["ENGINE_LOGGER", "BoundParameters", "secret_placeholders"]

ENGINE_LOGGER = "sqlalchemy.engine.Engine"  # an engine's `logging_name` comes after it
_PARAMETERS_LINE = "[%s] %r"

_TOKEN = re.compile(
    r"""'(?:[^']|'')*'"""  # a string literal
    r"""|(?P<mark>\?|%s|\$\d+|:\d+)"""  # a positional placeholder: qmark, format, numeric
    r"""|(?P<name>(?:"(?:[^"]|"")*"|`[^`]*`|[A-Za-z_][\w$]*)(?:\.(?:"(?:[^"]|"")*"|`[^`]*`|[A-Za-z_][\w$]*))*)"""
    r"""|(?P<op><>|!=|<=|>=|[=<>(),])"""
    r"""|\S"""
)
_COMPARISONS = frozenset({"=", "<>", "!=", "<", ">", "<=", ">=", "LIKE", "ILIKE"})


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
        if not isinstance(rows, (tuple, list)) or not all(isinstance(row, (tuple, list)) for row in rows):
            return None  # named parameters: a dict, whose keys text scrubbing reads
        secret = self._secret_placeholders(getattr(self._last_statement, "text", ""))
        if not secret:
            return None
        redacted = copy.copy(shown)
        redacted.params = [_redacted(row, secret) for row in rows] if many else _redacted(rows[0], secret)
        return _PARAMETERS_LINE % (args[0], redacted)


def secret_placeholders(statement: str, secret_column: Callable[[str], bool]) -> frozenset[int]:
    """The positions (from 0) of the parameters `statement` binds to a secret column."""
    return frozenset(
        position for position, column in _placeholder_columns(statement) if column and secret_column(column)
    )


def _placeholder_columns(statement: str) -> Iterator[tuple[int, str]]:
    """Each positional placeholder's parameter position and the column it is bound to ('' if none)."""
    tokens = [(match.lastgroup, match.group()) for match in _TOKEN.finditer(statement)]
    words = [text.upper() if kind == "name" else text for kind, text in tokens]
    inserted = _inserted_columns(tokens, words)
    values = words.index("VALUES") if inserted is not None else len(words)
    order = 0
    group_position = -1  # within an INSERT's VALUES group
    in_list_of = ""  # the column of an `IN (...)` list being read
    depth = 0
    for index, (kind, text) in enumerate(tokens):
        if text == "(":
            depth += 1
            if inserted is not None and depth == 1 and index > values:
                group_position = 0
            elif index >= 2 and words[index - 1] == "IN" and tokens[index - 2][0] == "name":
                in_list_of = _column(tokens[index - 2][1])
        elif text == ")":
            depth -= 1
            in_list_of = ""
        elif text == "," and depth == 1 and group_position >= 0:
            group_position += 1
        elif kind == "mark":
            position = int(text[1:]) - 1 if text[0] in "$:" else order
            order += 1
            if inserted is not None and group_position >= 0:
                yield position, inserted[group_position] if group_position < len(inserted) else ""
            elif in_list_of:
                yield position, in_list_of
            else:
                yield position, _compared_column(tokens, words, index)


def _inserted_columns(tokens: Sequence[tuple[str | None, str]], words: Sequence[str]) -> list[str] | None:
    """An INSERT's column list, in order; None for any other statement."""
    if not words or words[0] not in ("INSERT", "REPLACE") or "(" not in words or "VALUES" not in words:
        return None
    opened, values = words.index("("), words.index("VALUES")
    if opened > values:
        return None
    return [_column(text) for kind, text in tokens[opened + 1 : values] if kind == "name"]


def _compared_column(tokens: Sequence[tuple[str | None, str]], words: Sequence[str], index: int) -> str:
    """`column = ?`, `column LIKE ?`: the column; '' where the placeholder is in an expression."""
    if index >= 2 and words[index - 1] in _COMPARISONS and tokens[index - 2][0] == "name":
        return _column(tokens[index - 2][1])
    return ""


def _column(name: str) -> str:
    """`user_account.password` and `"password"` are the column `password`."""
    return name.rsplit(".", 1)[-1].strip('"`')


def _redacted(row: Sequence[object], secret: frozenset[int]) -> object:
    """A copy of one row of parameters, each secret position redacted (NULL hides nothing)."""
    values = [
        REDACTED if position in secret and value is not None else value for position, value in enumerate(row)
    ]
    return tuple(values) if isinstance(row, tuple) else values
