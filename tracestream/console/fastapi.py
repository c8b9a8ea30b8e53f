"""Mounting the console into a FastAPI app, behind the app's own auth dependencies.

`app.mount()` would skip FastAPI dependencies, so the console is reached through one
catch-all route instead: FastAPI runs `dependencies` (raising 401/403 as the app
decides), then the request is handed to the console's ASGI app under the prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tracestream.console.app import create_app, scope_under
from tracestream.settings import Settings

DEFAULT_PATH = "/monitoring/realtime-logs"


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
    dependencies: Sequence[Any] = (),
) -> ASGIApp:
    """Serve the console at `path`; every request first passes `dependencies` (e.g. `Depends(admin)`)."""
    prefix = "/" + path.strip("/")
    console = create_app(settings or Settings.load())
    router = APIRouter(dependencies=list(dependencies), include_in_schema=False)

    async def forward(_request: Request) -> Response:
        return _Forward(console, prefix)

    async def add_slash(_request: Request) -> Response:
        return RedirectResponse(prefix + "/", status_code=308)

    router.add_api_route(prefix + "/{rest:path}", forward, methods=["GET", "HEAD"])
    router.add_api_route(prefix, add_slash, methods=["GET", "HEAD"])
    app.include_router(router)
    return console
