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
_OTEL = "opentelemetry"
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
            existing = [name for name in existing if _package(name) not in only_ours]
        original(existing, child_loggers, disable_existing)

    config._handle_existing_loggers = handle_existing_loggers  # type: ignore[attr-defined]


def packages_only_tracestream_holds() -> set[str]:
    """Top-level packages held, as a global of a module outside them (the package itself, one
    of its modules, classes or functions), only by tracestream and by packages only it holds:
    the app would not have imported them yet. A package nothing holds is the app's (its
    `__main__`, a module it imported inside a function).

    OpenTelemetry's distributions share one namespace: each of its packages (`opentelemetry.sdk`,
    `opentelemetry.trace`, `opentelemetry.instrumentation`) counts apart, so an app that uses the
    API holds no package the SDK imported. The launcher's `sitecustomize` counts as tracestream,
    a module of the standard library holds nothing: what it refers to was put there (the record
    factory OpenTelemetry's logging instrumentation gives `logging`), and nor does a class an
    instrumentation put in the module of the library it instruments."""
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
    renamed: dict[str, set[str]] = {}  # held only as classes or functions under another name
    for name, module in modules:
        if not isinstance(module, ModuleType):
            continue
        holder = _package(name)
        holders.setdefault(holder, set())
        if holder in sys.stdlib_module_names:
            continue
        if holder == "sitecustomize" and _is_the_launchers(module):
            holder = _OURS
        below = f"{name}."  # a package holds its own modules: importing them set them there
        for attribute, value in list(vars(module).items()):
            held = _package_of(value)
            if held is not None and held != holder and not _module_name(value).startswith(below):
                (renamed if _renamed(attribute, value) else holders).setdefault(held, set()).add(holder)
    for held, by in renamed.items():
        for holder in by:
            if not _patched(held, holder, holders, renamed):
                holders.setdefault(held, set()).add(holder)
    return holders


def _renamed(attribute: str, value: Any) -> bool:
    return not issubclass(type(value), ModuleType) and getattr(value, "__name__", attribute) != attribute


def _patched(held: str, holder: str, holders: dict[str, set[str]], renamed: dict[str, set[str]]) -> bool:
    """`held`'s class or function under another name, in a package `held` holds itself: it was
    put there by `held`, patching it (an instrumentation's `flask.Flask = _InstrumentedFlask`),
    and is no hold. One way only, it is an import under another name (redis-py's `from
    async_timeout import timeout as async_timeout`)."""
    return held in holders.get(holder, ()) or held in renamed.get(holder, ())


def _package(module_name: str) -> str:
    """The top-level package, or for OpenTelemetry's namespace the package below it."""
    parts = module_name.split(".", 2)
    return ".".join(parts[:2]) if parts[0] == _OTEL else parts[0]


def _is_the_launchers(module: ModuleType) -> bool:
    path = vars(module).get("__file__")
    return isinstance(path, str) and "auto_instrumentation" in path.replace("\\", "/").split("/")


def _package_of(value: Any) -> str | None:
    name = _module_name(value)
    return _package(name) if name else None


def _module_name(value: Any) -> str:
    """A module's name, or the module a class or function is defined in; "" for anything else.
    By the value's type alone: `isinstance` would read a lazy object's `__class__` (Django's
    settings set themselves up on any attribute read). A function whose `__module__` is not the
    module its code runs in was relabelled (attrs on Python 3.13 gives its `evolve` the module of
    each class it makes) or wrapped: it tells nothing."""
    kind = type(value)
    if issubclass(kind, ModuleType):
        name = vars(value).get("__name__")
    elif issubclass(kind, type):
        name = vars(value).get("__module__")
    elif kind is FunctionType:
        name = value.__module__
        if name != value.__globals__.get("__name__"):
            return ""
    else:
        return ""
    return name if isinstance(name, str) else ""
