"""Which of a SQL statement's parameters are bound to which column, and where each parameter is
in a printed row of them.

SQLAlchemy prints a statement and its parameters apart: on `echo` lines of their own, and in a
failed statement's error (`[SQL: INSERT INTO users (name, password) VALUES (?, ?)]`, then
`[parameters: ('spongebob', 'hunter2')]`). Positional, a parameter names no column; named, it
has the name the app gave it (`text("... VALUES (:n, :p)")`), which need not say either. The
statement does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Sequence

__all__ = ["named_parameter_values", "parameter_rows", "secret_placeholders"]

_TOKEN = re.compile(
    r"""'(?:[^']|'')*'"""  # a string literal
    r"""|(?P<mark>\?|%s|\$\d+|:\d+)"""  # a positional placeholder: qmark, format, numeric
    r"""|(?P<named>%\(\w+\)s|(?<![:\w]):[A-Za-z_]\w*)"""  # a named one: pyformat, named (not `::text`)
    r"""|(?P<name>(?:"(?:[^"]|"")*"|`[^`]*`|[A-Za-z_][\w$]*)(?:\.(?:"(?:[^"]|"")*"|`[^`]*`|[A-Za-z_][\w$]*))*)"""
    r"""|(?P<op><>|!=|<=|>=|[=<>(),])"""
    r"""|\S"""
)
_COMPARISONS = frozenset({"=", "<>", "!=", "<", ">", "<=", ">=", "LIKE", "ILIKE"})


def secret_placeholders(statement: str, secret_column: Callable[[str], bool]) -> frozenset[int | str]:
    """The parameters `statement` binds to a secret column: positions (from 0), and names."""
    return frozenset(
        position for position, column in _placeholder_columns(statement) if column and secret_column(column)
    )


def _placeholder_columns(statement: str) -> Iterator[tuple[int | str, str]]:
    """Each placeholder's parameter, by position or name, and the column it is bound to ('' if none)."""
    tokens = [(match.lastgroup, match.group()) for match in _TOKEN.finditer(statement)]
    words = [text.upper() if kind == "name" else text for kind, text in tokens]
    values, row_columns = _row_columns(tokens, words)
    order = 0
    depth = 0
    values_depth = -1  # the depth of an INSERT's VALUES keyword while its rows are read
    row_position = -1  # within a row of those VALUES
    in_list_of = ""  # the column of an `IN (...)` list being read
    for index, (kind, text) in enumerate(tokens):
        if index == values:
            values_depth = depth
        elif text == "(":
            depth += 1
            if depth == values_depth + 1:
                row_position = 0
            elif index >= 2 and words[index - 1] == "IN" and tokens[index - 2][0] == "name":
                in_list_of = _column(tokens[index - 2][1])
        elif text == ")":
            if depth == values_depth + 1:
                row_position = -1
            depth -= 1
            in_list_of = ""
            if depth < values_depth:  # the end of `(VALUES ...)`
                values_depth = -1
        elif text == "," and depth == values_depth + 1 and row_position >= 0:
            row_position += 1
        elif kind in ("mark", "named"):
            parameter: int | str
            if kind == "named":
                parameter = text[2:-2] if text.startswith("%(") else text[1:]
            else:
                parameter = int(text[1:]) - 1 if text[0] in "$:" else order
                order += 1
            if row_position >= 0:
                yield parameter, row_columns[row_position] if row_position < len(row_columns) else ""
            elif in_list_of:
                yield parameter, in_list_of
            else:
                yield parameter, _compared_column(tokens, words, index)
        elif depth == values_depth and text != ",":  # after the last row: `ON CONFLICT (...)`, `RETURNING`
            values_depth = -1


def _row_columns(tokens: Sequence[tuple[str | None, str]], words: Sequence[str]) -> tuple[int, list[str]]:
    """An INSERT's VALUES keyword (its index; past the end for any other statement) and the column
    each value of a row goes to: `INSERT INTO t (a, b) VALUES (?, ?)`, or through the derived
    table of `INSERT INTO t (a, b) SELECT p0, p1 FROM (VALUES (?, ?, 0)) AS v(p0, p1, n)`, which
    SQLAlchemy's insertmanyvalues writes on PostgreSQL and SQL Server to keep the rows' order."""
    if not words or words[0] not in ("INSERT", "REPLACE") or "VALUES" not in words or "(" not in words:
        return len(words), []
    values, opened = words.index("VALUES"), words.index("(")
    select = words.index("SELECT") if "SELECT" in words[:values] else values
    if opened > select:  # no column list
        return len(words), []
    closed = _closing(words, opened)
    columns = [_column(text) for kind, text in tokens[opened + 1 : closed] if kind == "name"]
    if select == values:
        return values, columns
    item_of = _select_items(tokens, words, select + 1, values)
    named = _derived_columns(tokens, words, values)
    return values, [
        columns[item_of[name]] if item_of.get(name, len(columns)) < len(columns) else "" for name in named
    ]


def _closing(words: Sequence[str], opened: int) -> int:
    """The index of the `)` that closes the `(` at `opened` (past the end if none does)."""
    depth = 0
    for index in range(opened, len(words)):
        depth += (words[index] == "(") - (words[index] == ")")
        if depth == 0:
            return index
    return len(words)


def _select_items(
    tokens: Sequence[tuple[str | None, str]], words: Sequence[str], start: int, end: int
) -> dict[str, int]:
    """Which item of the SELECT list from `start` to `end` first names each word:
    `p0::VARCHAR, CAST(p1 AS TEXT)` gives P0 and VARCHAR item 0, CAST, P1, AS and TEXT item 1."""
    item, depth = 0, 0
    item_of: dict[str, int] = {}
    for index in range(start, end):
        if words[index] in ("(", ")"):
            depth += 1 if words[index] == "(" else -1
        elif words[index] == "," and depth == 0:
            item += 1
        elif tokens[index][0] == "name":
            item_of.setdefault(words[index], item)
    return item_of


def _derived_columns(
    tokens: Sequence[tuple[str | None, str]], words: Sequence[str], values: int
) -> list[str]:
    """The names `(VALUES ...) AS v(p0, p1, n)` gives its columns; none without that form."""
    if words[values - 1] != "(":
        return []
    alias = _closing(words, values - 1) + 1
    alias += words[alias : alias + 1] == ["AS"]
    if words[alias + 1 : alias + 2] != ["("] or tokens[alias][0] != "name":
        return []
    names = range(alias + 2, _closing(words, alias + 1))
    return [words[index] for index in names if tokens[index][0] == "name"]


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


_DICT_KEY = re.compile(r"""(['"])(\w+)\1:\s*""")


def named_parameter_values(printed: str, names: Collection[str]) -> list[tuple[int, int]]:
    """Where the value of each parameter named in `names` is in `printed`, a dict's `repr` or a
    list of them (executemany), as (start, end) spans."""
    spans = []
    for key in _DICT_KEY.finditer(printed):
        if key.group(2) not in names:
            continue
        start = key.end()
        if string := _STRING.match(printed, start):
            spans.append((start, string.end()))
            continue
        end, depth = start, 0
        while end < len(printed) and not (depth == 0 and printed[end] in ",}"):
            depth += (printed[end] in _OPENERS) - (printed[end] in _CLOSERS)
            end += 1
        spans.append((start, start + len(printed[start:end].rstrip())))
    return spans


def _close_item(row: list[tuple[int, int]], text: str, start: int, end: int, offset: int) -> None:
    if start >= 0:
        row.append((offset + start, offset + start + len(text[start:end].rstrip())))
