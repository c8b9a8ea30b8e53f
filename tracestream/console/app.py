"""The console as one Starlette app: pages, the live SSE feed and read-only JSON endpoints.

Pages are fixed HTML (see pages.py) whose scripts render data with DOM APIs (never
innerHTML), so log content can only ever become text. Pages and endpoints use relative URLs, which is
what lets the same app run standalone or mounted under any prefix.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracestream.connection import Tls, client_for
from tracestream.console import api, pages
from tracestream.console.auth import TokenAuth
from tracestream.console.live import LiveFeed
from tracestream.otel_setup.settings import Settings
from tracestream.query import QueryError, parse_stream_id

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; object-src 'none'; "
     b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]  # fmt: skip


def create_app(settings: Settings, *, token: str | None = None) -> ASGIApp:
    """The console for `settings.redis_url` / `settings.stream`; with `token`, every request needs it."""
    # Named per stream in CLIENT LIST; its timeout outlasts the XREAD BLOCK.
    reader = _async_client(settings, f"tracestream-console-live:{settings.stream}", extra_timeout=10)
    replays = _async_client(settings, "tracestream-console")
    feed = LiveFeed(reader, replays, settings.stream)
    query_client = client_for(settings, decode=True)

    async def live(request: Request) -> Response:
        after = request.headers.get("last-event-id") or request.query_params.get("after") or None
        try:
            query = api.query_from_params(request.query_params)
            if after is not None:
                parse_stream_id(after)
        except QueryError as error:
            return api.bad_request(str(error))
        return StreamingResponse(
            _sse(feed.events(query, after)),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await feed.close()
        await reader.aclose()
        await replays.aclose()
        query_client.close()

    routes: list[BaseRoute] = [_page(path, pages.render(name)) for name, (path, _) in pages.PAGES.items()]
    routes += [
        *api.routes(query_client, settings.stream),
        Route("/api/live", live),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    guarded: ASGIApp = TokenAuth(app, token) if token else app
    return SecurityHeaders(guarded)


def _async_client(settings: Settings, name: str, extra_timeout: float = 0) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        client_name=name,
        socket_connect_timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout + extra_timeout,
        **(Tls.of(settings).options() if settings.redis_url.startswith("rediss://") else {}),
    )


def _page(path: str, html: str) -> Route:
    async def page(_request: Request) -> Response:
        return HTMLResponse(html)

    return Route(path, page)


async def _sse(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Reconnect after 1 s; the comment flushes headers so the browser sees `open` at once."""
    yield b"retry: 1000\n: connected\n\n"
    async for event in events:
        yield event


class SecurityHeaders:
    """A CSP without inline scripts: even a rendering bug could not run injected script."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)
