"""Mounting the console into a FastAPI app, behind the app's own auth dependencies.

`app.mount()` would skip FastAPI dependencies, so the console is reached through one
catch-all route instead: FastAPI runs `dependencies` (raising 401/403 as the app
decides), then the request is handed to the console's ASGI app under the prefix.

The console's own requests stay out of the stream it shows: they run with OpenTelemetry
instrumentation suppressed from before the app's first middleware, so the contrib ASGI
middleware opens no server span, no request record is written and no log line is captured.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.applications import FastAPI
from opentelemetry.instrumentation.utils import suppress_instrumentation
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tracestream.console.app import create_app, scope_under
from tracestream.console.auth import relative_target
from tracestream.settings import ConfigError, Settings, configured

DEFAULT_PATH = "/monitoring/realtime-logs"
# The console prefixes of each app that mounted one.
_QUIET: weakref.WeakKeyDictionary[FastAPI, tuple[str, ...]] = weakref.WeakKeyDictionary()
_wrapped = False


class _Forward(Response):
    """A response that is the console itself, answering under `prefix`."""

    def __init__(self, console: ASGIApp, prefix: str) -> None:
        super().__init__()  # FastAPI merges dependency headers and background tasks into it
        self._console = console
        self._prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._console(scope_under(self._prefix, scope), receive, send)


def mount(
    app: FastAPI,
    settings: Settings | None = None,
    *,
    path: str = DEFAULT_PATH,
    dependencies: Sequence[Any] | None = None,
) -> ASGIApp:
    """Serve the console at `path`; every request first passes `dependencies` (e.g. `Depends(admin)`).

    They are required: the console shows every record, and an app is often reached by more
    people than should read them. `dependencies=[]` says so for an app only its operators reach.
    """
    if dependencies is None:
        raise ConfigError(
            "mount() needs dependencies= that guard the console, e.g. [Depends(require_admin)]; "
            "dependencies=[] serves it to everyone who reaches the app"
        )
    prefix = "/" + path.strip("/")
    console = create_app(settings or configured() or Settings.load())
    router = APIRouter(dependencies=list(dependencies), include_in_schema=False)

    async def forward(_request: Request) -> Response:
        return _Forward(console, prefix)

    async def add_slash(request: Request) -> Response:
        """Relative, so it keeps what comes before the app's paths: a root path, a mount, a proxy's prefix."""
        query = request.url.query
        target = relative_target(prefix) + "/" + (f"?{query}" if query else "")
        return RedirectResponse(target, status_code=308)

    router.add_api_route(prefix + "/{rest:path}", forward, methods=["GET", "HEAD"])
    router.add_api_route(prefix, add_slash, methods=["GET", "HEAD"])
    app.include_router(router)
    _keep_quiet(app, prefix)
    return console


def _keep_quiet(app: FastAPI, prefix: str) -> None:
    """Requests to `app` under `prefix` run with instrumentation suppressed.

    The server span starts in the outermost middleware, before any route or dependency
    runs, so only the app's own entry point is early enough. Starlette looks `__call__` up
    on the class: it is wrapped once, and apps without a console pass straight through.
    """
    global _wrapped
    _QUIET[app] = (*_QUIET.get(app, ()), prefix)
    if _wrapped:
        return
    _wrapped = True
    original = FastAPI.__call__

    async def call(self: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
        prefixes = _QUIET.get(self, ())
        if prefixes and scope["type"] == "http" and _under(_app_path(scope), prefixes):
            with suppress_instrumentation():
                await original(self, scope, receive, send)
        else:
            await original(self, scope, receive, send)

    FastAPI.__call__ = call  # type: ignore[method-assign]


def _app_path(scope: Scope) -> str:
    """The request's path inside the app, as its routes see it (without the server's root path)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)
