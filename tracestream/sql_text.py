"""Which of a SQL statement's positional parameters are bound to which column, and where each
parameter is in a printed row of them.

SQLAlchemy prints a statement and its parameters apart: on `echo` lines of their own, and in a
failed statement's error (`[SQL: INSERT INTO users (name, password) VALUES (?, ?)]`, then
`[parameters: ('spongebob', 'hunter2')]`). Positional, a parameter names no column; the
statement does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

__all__ = ["parameter_rows", "secret_placeholders"]

_TOKEN = re.compile(
    r"""'(?:[^']|'')*'"""  # a string literal
    r"""|(?P<mark>\?|%s|\$\d+|:\d+)"""  # a positional placeholder: qmark, format, numeric
    r"""|(?P<name>(?:"(?:[^"]|"")*"|`[^`]*`|[A-Za-z_][\w$]*)(?:\.(?:"(?:[^"]|"")*"|`[^`]*`|[A-Za-z_][\w$]*))*)"""
    r"""|(?P<op><>|!=|<=|>=|[=<>(),])"""
    r"""|\S"""
)
_COMPARISONS = frozenset({"=", "<>", "!=", "<", ">", "<=", ">=", "LIKE", "ILIKE"})


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


_STRING = re.compile(r"""[bBrRuU]{0,2}(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_OPENERS, _CLOSERS = "([{", ")]}"


def parameter_rows(printed: str) -> list[list[tuple[int, int]]]:
    """Where each parameter of each row is in `printed`, a row's `repr` (a tuple) or a list of
    them (executemany), as (start, end) spans; rows cut short or shortened by SQLAlchemy
    (`... displaying 10 of 100 total bound parameter sets ...`) keep the parameters shown."""
    text = printed.strip()
    offset = printed.index(text) if text else 0
    rows: list[list[tuple[int, int]]] = []
    depth, row_depth = 0, 2 if text.startswith("[") else 1
    item_start = -1
    position = 0
    while position < len(text):
        string = _STRING.match(text, position)
        if string is not None and (position == 0 or not text[position - 1].isalnum()):
            if depth == row_depth and item_start < 0:
                item_start = position
            position = string.end()
            continue
        char = text[position]
        if char in _OPENERS:
            depth += 1
            if depth == row_depth and char in "([":
                rows.append([])
                item_start = -1
            elif depth == row_depth + 1 and item_start < 0:
                item_start = position
        elif char in _CLOSERS:
            if depth == row_depth and rows:
                _close_item(rows[-1], text, item_start, position, offset)
                item_start = -1
            depth -= 1
        elif char == "," and depth == row_depth and rows:
            _close_item(rows[-1], text, item_start, position, offset)
            item_start = -1
        elif depth == row_depth and item_start < 0 and not char.isspace():
            item_start = position
        position += 1
    return rows


def _close_item(row: list[tuple[int, int]], text: str, start: int, end: int, offset: int) -> None:
    if start >= 0:
        row.append((offset + start, offset + start + len(text[start:end].rstrip())))
