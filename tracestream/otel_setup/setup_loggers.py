"""Loggers that exist only because tracestream is set up stay out of the app's logging config.

Setting up imports redis-py (which imports asyncio) and the OpenTelemetry SDK (which imports
`concurrent.futures`), and importing a library makes its logger. An app that calls
`configure()`, then `fileConfig` or `dictConfig` with `disable_existing_loggers` (their
default), then imports asyncio, had asyncio's logger disabled, where without tracestream it
would have been made after the config, enabled: asyncio's "Task exception was never retrieved"
stopped printing. The config now passes over a logger whose library only tracestream, and what
it imported, holds: it is treated as the config would treat a logger made after it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from types import FunctionType, ModuleType
from typing import Any

import wrapt

__all__ = ["install"]

_OURS = "tracestream"
_installed = False


def install() -> None:
    """Once per process, when the app's code loads `logging.config` (at once if it has)."""
    global _installed
    if not _installed:
        _installed = True
        wrapt.register_post_import_hook(_wrap_existing_loggers_handling, "logging.config")


def _wrap_existing_loggers_handling(config: ModuleType) -> None:
    """`_handle_existing_loggers`: what both `dictConfig` and `fileConfig` call, on Python 3.10
    to 3.13, to disable the loggers the new config does not name."""
    original: Callable[[list[str], list[str], bool], None] | None = getattr(
        config, "_handle_existing_loggers", None
    )
    if original is None:
        return

    def handle_existing_loggers(
        existing: list[str], child_loggers: list[str], disable_existing: bool
    ) -> None:
        if disable_existing:
            only_ours = packages_only_tracestream_holds()
            existing = [name for name in existing if name.partition(".")[0] not in only_ours]
        original(existing, child_loggers, disable_existing)

    config._handle_existing_loggers = handle_existing_loggers  # type: ignore[attr-defined]


def packages_only_tracestream_holds() -> set[str]:
    """Top-level packages held, as a global of a module outside them (the package itself, one
    of its modules, classes or functions), only by tracestream and by packages only it holds:
    the app would not have imported them yet. A package nothing holds is the app's (its
    `__main__`, a module it imported inside a function)."""
    holders = _holders_by_package(list(sys.modules.items()))
    ours = {_OURS}
    grown = True
    while grown:
        grown = False
        for package, held_by in holders.items():
            if package not in ours and held_by and held_by <= ours:
                ours.add(package)
                grown = True
    return ours


def _holders_by_package(modules: Iterable[tuple[str, object]]) -> dict[str, set[str]]:
    """For each top-level package, the other top-level packages that hold it."""
    holders: dict[str, set[str]] = {}
    for name, module in modules:
        if not isinstance(module, ModuleType):
            continue
        holder = name.partition(".")[0]
        holders.setdefault(holder, set())
        for value in list(vars(module).values()):
            held = _package_of(value)
            if held is not None and held != holder:
                holders.setdefault(held, set()).add(holder)
    return holders


def _package_of(value: Any) -> str | None:
    """By the value's type alone: `isinstance` would read a lazy object's `__class__` (Django's
    settings set themselves up on any attribute read)."""
    kind = type(value)
    if issubclass(kind, ModuleType):
        name = vars(value).get("__name__")
    elif issubclass(kind, type) or kind is FunctionType:
        name = vars(value).get("__module__") if issubclass(kind, type) else value.__module__
    else:
        return None
    return name.partition(".")[0] if isinstance(name, str) else None
