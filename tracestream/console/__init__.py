"""The web console: live tail, search, trace view, services and stats, read-only.

Standalone with `tracestream console`; mountable into FastAPI (`tracestream.console.fastapi_mount`)
and Django (`tracestream.console.django_urls`). See docs/console.md. Starlette is loaded on first
use, so the CLI's other commands run without the `console` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracestream.console.app import create_app
    from tracestream.console.auth import ConsoleAuthError

__all__ = ["ConsoleAuthError", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from tracestream.console.app import create_app

        return create_app
    if name == "ConsoleAuthError":
        from tracestream.console.auth import ConsoleAuthError

        return ConsoleAuthError
    raise AttributeError(f"module 'tracestream.console' has no attribute {name!r}")
