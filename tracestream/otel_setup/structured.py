"""Shared by the stdlib, structlog and loguru bridges: key/values to OTel attributes, levels, exceptions.

These run on the application thread, inside its logging call, so they must not raise
whatever the application passes, nor spend long on a huge value.
"""

from __future__ import annotations

import contextvars
import logging
import re
import reprlib
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, time
from decimal import Decimal
from itertools import islice, takewhile
from pathlib import PurePath
from typing import Any, NamedTuple
from uuid import UUID

from opentelemetry._logs import SeverityNumber
from opentelemetry.instrumentation.log_utils import std_to_otel

from tracestream.schema import TRACEBACK_HEADER

# A structlog event dict's keys that are not key/values of the event.
_STRUCTLOG_FIELDS = ("event", "level", "exc_info", "logger", "timestamp", "_record", "_from_structlog")
_PRIMITIVES = (str, bool, int, float)
_CONTAINERS = (dict, list, tuple, set, frozenset, deque)


class _BoundedRepr(reprlib.Repr):
    """repr() on the application thread: never raises, and a huge container costs no more
    than a small one. A broken `__repr__` gives `<Type instance at 0x…>`; containers show
    their first items, nesting its first levels (cycles included), then `...`.
    Dicts and sets keep their own order: `reprlib` sorts them, a cost that grows with size."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 6
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 32
        # Beyond the exporter's default attribute limit (4096) the text is cut anyway.
        self.maxstring = self.maxother = 4096
        self.maxlong = 200

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        pairs = islice(x.items(), self.maxdict if level > 0 else 0)
        shown = (f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}" for k, v in pairs)
        return self._joined(shown, len(x), "{", "}")

    def repr_set(self, x: set[Any], level: int) -> str:
        return self._set(x, level, "{", "}") if x else "set()"

    def repr_frozenset(self, x: frozenset[Any], level: int) -> str:
        return self._set(x, level, "frozenset({", "})") if x else "frozenset()"

    def _set(self, x: set[Any] | frozenset[Any], level: int, left: str, right: str) -> str:
        shown = (self.repr1(item, level - 1) for item in islice(x, self.maxset if level > 0 else 0))
        return self._joined(shown, len(x), left, right)

    def _joined(self, shown: Iterator[str], total: int, left: str, right: str) -> str:
        pieces = list(shown)
        if total > len(pieces):
            pieces.append("...")
        return f"{left}{', '.join(pieces)}{right}"


_bounded = _BoundedRepr()


def text_of(value: object) -> str:
    """str() for messages and keys that never raises (nor returns a non-str), with bounded work on
    containers; what cannot be printed at all becomes `<Type instance at 0x…>`."""
    if isinstance(value, str):
        return value
    if isinstance(value, _CONTAINERS):
        return _bounded.repr(value)
    try:
        return str(value)
    except Exception:  # a broken __str__, or one returning a non-str
        return _bounded.repr(value)


# Values whose text is what an app prints, and searches for (an id, a time, an amount, a path),
# where their repr (`UUID('…')`) would match nothing the app wrote.
TEXT_VALUES = (UUID, date, time, Decimal, PurePath)


def as_text(value: UUID | date | time | Decimal | PurePath) -> str:
    """A time in ISO 8601, as JSON loggers write it; the rest as `str()` has it."""
    return value.isoformat() if isinstance(value, (date, time)) else str(value)


def attribute_value(value: object) -> object:
    """OTel attributes hold primitives and lists of them; anything else becomes its bounded repr,
    or its text where that is what the app prints (`as_text`)."""
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, _PRIMITIVES) for item in value):
        return list(value)
    if isinstance(value, TEXT_VALUES):
        return as_text(value)
    return _bounded.repr(value)


def attributes_of(fields: Mapping[str, Any], skip: Iterable[str] = ()) -> dict[str, object]:
    skipped = set(skip)
    return {text_of(key): attribute_value(value) for key, value in fields.items() if key not in skipped}


# What structlog's `bind_contextvars` binds (one context variable a key, under
# `structlog.contextvars.STRUCTLOG_KEY_PREFIX`; `...` once unbound) and loguru's `contextualize`
# (one context variable holding a dict).
_STRUCTLOG_BOUND = "structlog_"
_LOGURU_CONTEXTUALIZED = "loguru_context"
_CONTEXTUALIZED = "\0"  # the verdict for loguru's variable: no key can be this
# A context variable's verdict by its name, kept: a request's context holds a dozen or more.
_binding_keys: dict[contextvars.ContextVar[Any], str | None] = {}
_BINDING_KEYS_KEPT = 4_096


def context_bound(context: contextvars.Context) -> dict[str, object]:
    """The key/values structlog's and loguru's recipes bind for a request and print on every
    line, the app's stdlib records included, as attributes. Read on the export thread: the
    logging call only copied its context, which costs next to nothing."""
    bound: dict[str, object] = {}
    for variable, value in context.items():
        try:
            key = _binding_keys[variable]
        except KeyError:
            key = _binding_key(variable)
        if key is None:
            continue
        if key == _CONTEXTUALIZED:
            if isinstance(value, dict):
                bound.update(attributes_of(value))
        elif value is not Ellipsis:
            bound[key] = attribute_value(value)
    return bound


def _binding_key(variable: contextvars.ContextVar[Any]) -> str | None:
    """The attribute key a variable binds, `_CONTEXTUALIZED` for loguru's, None for any other."""
    name = variable.name
    key: str | None = None
    if name.startswith(_STRUCTLOG_BOUND):
        key = name[len(_STRUCTLOG_BOUND) :]
    elif name == _LOGURU_CONTEXTUALIZED:
        key = _CONTEXTUALIZED
    if len(_binding_keys) >= _BINDING_KEYS_KEPT:
        _binding_keys.clear()
    _binding_keys[variable] = key
    return key


def severity_of(level_name: str) -> SeverityNumber:
    """A structlog method or level name (`info`, `WARNING`, `exception`, `msg`, …) as an OTel severity."""
    name = level_name.upper()
    name = {"EXCEPTION": "ERROR", "WARN": "WARNING", "SUCCESS": "INFO", "TRACE": "DEBUG", "MSG": "INFO"}.get(
        name, name
    )
    level = logging.getLevelName(name)
    return std_to_otel(level if isinstance(level, int) else logging.INFO)


_EXCEPTION_LINE = re.compile(r"([A-Za-z_][\w.]*)(?:: (.*))?", re.S)
# Where the last exception of a chain is printed: a traceback's header, or a group's.
_HEADER = re.compile(r"^(?P<group>  \+ Exception Group )?Traceback \(most recent call last\):$", re.M)
_GROUP_LINE = "  | "


def exception_from_text(text: str) -> tuple[str, str, str]:
    """Type, message and stacktrace of a traceback already rendered to text (by structlog, or
    by a formatter in another process), as Python prints it: the last exception of the chain is
    named on the first unindented line after its frames, and its message runs from there to the
    end, lines and notes included; a group's lines carry a `  | ` margin, up to its members."""
    header = deque(_HEADER.finditer(text), maxlen=1)
    if not header:
        return "", "", text
    last = header[0]
    lines = text[last.end() :].strip("\n").splitlines()
    if last.group("group"):
        lines = [line.removeprefix(_GROUP_LINE) for line in _until_members(lines)]
    shown = next((i for i, line in enumerate(lines) if line and not line[0].isspace()), None)
    found = _EXCEPTION_LINE.fullmatch("\n".join(lines[shown:]).rstrip()) if shown is not None else None
    if found is None:
        return "", "", text
    return found.group(1), found.group(2) or "", text


def _until_members(lines: list[str]) -> list[str]:
    """A group's own lines, before the first of its members (`  +-+---- 1 ----`)."""
    return list(takewhile(lambda line: line.startswith(_GROUP_LINE), lines))


class StructlogEvent(NamedTuple):
    """A structlog event dict read as a record, by `OTelProcessor` or by the stdlib bridge."""

    body: str
    attributes: dict[str, object]
    exception: BaseException | None  # from `exc_info`
    # The traceback text structlog's `format_exc_info` leaves under `exception` (it takes
    # `exc_info` away): the record's stacktrace, not an attribute.
    rendered_exception: str | None


_CAUSED = "\nThe above exception was the direct cause of the following exception:\n\n"
_DURING = "\nDuring handling of the above exception, another exception occurred:\n\n"
# Where structlog's `EventRenamer` (for platforms that read `message` or `msg`) puts the event.
_RENAMED_EVENT_KEYS = ("message", "msg")


STACKTRACE_KEY = "code.stacktrace"  # the semantic conventions' name for a stack as the runtime prints it
_STACK_HEADER = "Stack (most recent call last):\n"
_STACK_KEPT = 3_900  # under the default attribute limit (4,096)


def innermost_frames(stack: str) -> str:
    """A server's or a test runner's stack runs past the attribute limit, which keeps a text's
    start: the outermost frames. The frames nearest the logging call are the ones kept here."""
    if len(stack) <= _STACK_KEPT:
        return stack
    tail = stack[-_STACK_KEPT:]
    tail = tail[tail.find("\n  File ") + 1 :]
    left_out = len(stack) - len(tail) - len(_STACK_HEADER)
    return f"{_STACK_HEADER}  …[{left_out} chars of outer frames left out]\n{tail}"


def take_stack(values: dict[str, Any], attributes: dict[str, Any]) -> None:
    """structlog's `StackInfoRenderer` puts where the call was made under `stack`: it is the
    record's `code.stacktrace`, innermost frames kept, as a stdlib `stack_info=True` gives it."""
    stack = values.get("stack")
    if isinstance(stack, str) and stack.startswith(_STACK_HEADER):
        del values["stack"]
        attributes[STACKTRACE_KEY] = innermost_frames(stack)


def read_structlog_event(event: Mapping[str, Any]) -> StructlogEvent:
    body_key = _body_key(event)
    attributes = attributes_of(event, (*_STRUCTLOG_FIELDS, body_key))
    attributes.pop("exception", None)
    take_stack(attributes, attributes)
    return StructlogEvent(
        text_of(event.get(body_key, "")),
        attributes,
        exception_of(event.get("exc_info")),
        _rendered_exception(event.get("exception")),
    )


def _body_key(event: Mapping[str, Any]) -> str:
    if "event" in event:
        return "event"
    return next((key for key in _RENAMED_EVENT_KEYS if key in event), "event")


def _rendered_exception(value: object) -> str | None:
    """The traceback structlog left under `exception`: text from `format_exc_info`, or the
    stacks `dict_tracebacks` makes (`ExceptionDictTransformer`), laid out as Python prints them.
    Their frames' locals stay out: the stream is no place for a function's variables."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(_is_stack(stack) for stack in value):
        return _traceback_text(value)
    return None if value is None else text_of(value)


def _is_stack(stack: object) -> bool:
    return (
        isinstance(stack, Mapping)
        and isinstance(stack.get("exc_type"), str)
        and isinstance(stack.get("frames", []), list)
        and all(isinstance(frame, Mapping) for frame in stack.get("frames", []))
    )


def _traceback_text(stacks: list[Mapping[str, Any]]) -> str:
    """Innermost cause first, as Python prints a chain: `stacks` starts with the exception raised."""
    parts: list[str] = []
    shown_was_cause = False
    for stack in reversed(stacks):
        if parts:
            parts.append(_CAUSED if shown_was_cause else _DURING)
        frames = "".join(
            f'  File "{text_of(frame.get("filename", "?"))}", line {text_of(frame.get("lineno", "?"))}, '
            f"in {text_of(frame.get('name', '?'))}\n"
            for frame in stack.get("frames", [])
        )
        value = text_of(stack.get("exc_value", ""))
        last_line = f"{stack['exc_type']}: {value}" if value else stack["exc_type"]
        parts.append(f"{TRACEBACK_HEADER}\n{frames}{last_line}\n")
        shown_was_cause = bool(stack.get("is_cause"))
    return "".join(parts)


def exception_of(value: object) -> BaseException | None:
    """`exc_info=True`, an exc_info tuple or an exception instance."""
    if value is True:
        return sys.exc_info()[1]
    if isinstance(value, BaseException):
        return value
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value[1]
    return None
