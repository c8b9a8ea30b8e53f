"""The console as one Starlette app: pages, the live SSE feed and read-only JSON endpoints.

Pages are fixed HTML (see pages.py) whose scripts render data with DOM APIs (never
innerHTML), so log content can only ever become text. Pages and endpoints use relative URLs, which is
what lets the same app run standalone or mounted under any prefix.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.cluster import RedisCluster
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracestream.connection import Client, Tls, client_for, refresh_topology
from tracestream.console import api, pages
from tracestream.console.auth import HostGuard, TokenAuth
from tracestream.console.health import RedisHealth
from tracestream.console.live import LiveFeed, LiveShard
from tracestream.query import QueryError
from tracestream.settings import Settings
from tracestream.shards import shards

STATIC = Path(__file__).parent / "static"
# Redis connections per server for viewers' replays: enough to serve many joining at once,
# bounded so a crowd of viewers never exhausts Redis or the pool.
REPLAY_CONNECTIONS = 16
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; object-src 'none'; "
     b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]  # fmt: skip


def create_app(
    settings: Settings, *, token: str | None = None, allowed_hosts: Iterable[str] | None = None
) -> Console:
    """The console for `settings.redis_url` / `settings.stream`; with `token`, every request needs it.

    With `allowed_hosts`, only those and loopback names are answered (the standalone server);
    mounted, the host app's own host checks apply.
    """
    query_client = client_for(settings, decode=True)
    nodes = _LiveClients(settings, query_client)
    health = RedisHealth()
    feed = LiveFeed(nodes.shards, health, cluster=settings.redis_cluster)

    async def live(request: Request) -> Response:
        after = request.headers.get("last-event-id") or request.query_params.get("after") or None
        try:
            query = api.query_from_params(request.query_params)
            if after is not None:
                feed.parse_position(after)
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
        await nodes.aclose()
        query_client.close()

    routes: list[BaseRoute] = [_page(path, pages.render(name)) for name, (path, _) in pages.PAGES.items()]
    routes += [
        *api.routes(query_client, settings.stream, health),
        Route("/api/live", live),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    guarded: ASGIApp = TokenAuth(app, token) if token else app
    if allowed_hosts is not None:
        guarded = HostGuard(guarded, allowed_hosts)
    return Console(SecurityHeaders(guarded), feed)


class Console:
    """The console as an ASGI app, and a way for its server to end the live streams."""

    def __init__(self, app: ASGIApp, feed: LiveFeed) -> None:
        self._app = app
        self._feed = feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    def end_streams(self) -> None:
        """Ends every open live stream, so a stopping server need not wait for them or cancel them."""
        self._feed.end_streams()


class _LiveClients:
    """The live feed's asyncio clients: a blocking reader and a replay client per server.

    On a single Redis that is one pair; on a cluster, one pair per master holding a shard,
    found through the (sync) cluster client's shard registry and slot map.
    """

    def __init__(self, settings: Settings, query_client: Client) -> None:
        self._settings = settings
        self._query_client = query_client
        self._pairs: dict[str, tuple[aioredis.Redis, aioredis.Redis]] = {}

    async def shards(self, after_error: bool) -> list[LiveShard]:
        if not isinstance(self._query_client, RedisCluster):
            return [LiveShard(self._settings.stream, *self._pair(self._settings.redis_url))]
        found = await run_in_threadpool(self._locate, after_error)
        return [LiveShard(name, *self._pair(url)) for name, url in found]

    def _locate(self, after_error: bool) -> list[tuple[str, str]]:
        if after_error:
            refresh_topology(self._query_client)
        return [
            (shard.name, _node_url(self._settings.redis_url, shard.client.get_connection_kwargs()))
            for shard in shards(self._query_client, self._settings.stream)
        ]

    def _pair(self, url: str) -> tuple[aioredis.Redis, aioredis.Redis]:
        if url not in self._pairs:
            # Named per stream in CLIENT LIST; its timeout outlasts the XREAD BLOCK.
            name = f"tracestream-console-live:{self._settings.stream}"
            reader = _async_client(self._settings, url, name, extra_timeout=10)
            # Every joining viewer replays through this client: they queue for its connections.
            replays = _async_client(
                self._settings, url, "tracestream-console", connections=REPLAY_CONNECTIONS
            )
            self._pairs[url] = (reader, replays)
        return self._pairs[url]

    async def aclose(self) -> None:
        for reader, replays in self._pairs.values():
            await reader.aclose()
            await replays.aclose()


def scope_under(prefix: str, scope: Scope) -> Scope:
    """`scope` as the console sees it when mounted at `prefix` of a host app.

    Starlette's own `Mount` lays it out, because how changed in 0.33 (`path` made relative
    before, `root_path` read by the router since).
    """
    _, child = Mount(prefix, routes=[]).matches(scope)
    return {**scope, **child}


def _node_url(url: str, address: dict[str, Any]) -> str:
    """`url` (credentials and scheme kept) pointing at the cluster node at `address`."""
    parts = urlsplit(url)
    credentials, at, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{credentials}{at}{address['host']}:{address['port']}").geturl()


def _async_client(
    settings: Settings, url: str, name: str, extra_timeout: float = 0, connections: int = 1
) -> aioredis.Redis:
    """A client of at most `connections` connections; a caller waits (up to the timeout) for a free one."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=connections,
        timeout=settings.redis_timeout,
        decode_responses=True,
        encoding_errors="backslashreplace",  # another writer's bytes that are not UTF-8 become escapes
        client_name=name,
        socket_connect_timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout + extra_timeout,
        **(Tls.of(settings).options() if url.startswith("rediss://") else {}),
    )
    return aioredis.Redis.from_pool(pool)


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
