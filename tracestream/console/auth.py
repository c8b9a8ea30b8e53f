"""Token auth for the standalone console: required off loopback, optional on it.

Browsers cannot put headers on an EventSource, so the token arrives once as `?token=`,
is swapped for an HttpOnly cookie, and the address bar loses it. Scripts send
`Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import ipaddress
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "TRACESTREAM_CONSOLE_TOKEN"
COOKIE = "tracestream_console"


class ConsoleAuthError(ValueError):
    """The console would be reachable by others without a token."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_token_off_loopback(host: str, token: str | None) -> None:
    if not token and not is_loopback(host):
        raise ConsoleAuthError(
            f"refusing to serve the console on {host} without a token: set {TOKEN_ENV} or bind 127.0.0.1"
        )


class TokenAuth:
    """ASGI middleware: every path needs the token, as a bearer header or the cookie it sets."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    def _valid(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        offered = dict(query).get("token")
        if offered is not None:
            await self._exchange(offered, query, scope)(scope, receive, send)
            return
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        cookie = SimpleCookie(headers.get("cookie", "")).get(COOKIE)
        presented = bearer if scheme.lower() == "bearer" else (cookie.value if cookie else "")
        if presented and self._valid(presented):
            await self.app(scope, receive, send)
            return
        await _denied()(scope, receive, send)

    def _exchange(self, offered: str, query: list[tuple[str, str]], scope: Scope) -> Response:
        """A valid `?token=` becomes a cookie and a redirect to the same URL without it."""
        if not self._valid(offered):
            return _denied()
        root = scope.get("root_path", "")
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        path = scope["path"] if scope["path"].startswith(root) else root + scope["path"]
        response = RedirectResponse(path + (f"?{rest}" if rest else ""), status_code=303)
        secure = scope.get("scheme") == "https"
        response.set_cookie(COOKIE, offered, path=root + "/", httponly=True, samesite="strict", secure=secure)
        return response


def _denied() -> Response:
    return PlainTextResponse(
        f"401: the console needs its token: open it once with ?token=<{TOKEN_ENV}> "
        "or send 'Authorization: Bearer <token>'\n",
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )
