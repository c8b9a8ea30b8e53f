"""Who may reach the standalone console: the Host it is asked for, and its token.

A page on any web site can rebind its own name to 127.0.0.1 and then read a tokenless
console as same-origin; the Host header still carries that site's name, so only loopback
names and the hosts the operator configured are answered.

The token is required off loopback, optional on it. Browsers cannot put headers on an
EventSource, so the token arrives once as `?token=`, is swapped for an HttpOnly cookie,
and the address bar loses it. Scripts send `Authorization: Bearer <token>`. The cookie holds a
value made from the token, not the token: what a browser keeps of it opens the pages, and
never serves as the token elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, quote, urlencode

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tracestream.settings import CONSOLE_ALLOWED_HOSTS_ENV, CONSOLE_TOKEN_ENV

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


# Off loopback the token is all that stands between the network and every record; nothing
# slows a guesser down, so a short one could be found by trying.
SHORTEST_TOKEN = 16


def require_token_off_loopback(host: str, token: str | None) -> None:
    if is_loopback(host):
        return
    if not token:
        raise ConsoleAuthError(
            f"refusing to serve the console on {host} without a token: "
            f"set {CONSOLE_TOKEN_ENV} or bind 127.0.0.1"
        )
    if len(token) < SHORTEST_TOKEN:
        raise ConsoleAuthError(
            f"refusing to serve the console on {host} with a token of {len(token)} characters: "
            f"{CONSOLE_TOKEN_ENV} needs {SHORTEST_TOKEN} or more (openssl rand -hex 16 makes one)"
        )


def host_name(host: str) -> str:
    """`Example.COM:8686` -> `example.com`, `[::1]:8686` -> `[::1]`: the name a Host header asks for."""
    name = host.strip().lower()
    bare, colon, port = name.rpartition(":")
    if colon and port.isdigit() and not bare.endswith(":"):  # not the last group of a bare IPv6 address
        name = bare
    return name.rstrip(".")


class HostGuard:
    """ASGI middleware: answers only requests whose Host is a loopback name or an allowed host.

    Anything else, a missing Host included, gets 421 and one plain line saying how to allow it.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self._allowed = {host_name(host) for host in allowed if host.strip()}

    def allows(self, host: str) -> bool:
        name = host_name(host)
        return bool(name) and (is_loopback(name) or name in self._allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host", "")
            if not self.allows(host):
                await _misdirected(host)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _misdirected(host: str) -> Response:
    return PlainTextResponse(
        f"421: the console does not answer to host {host!r}: open it as localhost or 127.0.0.1, "
        f"or allow the name with --allowed-host or {CONSOLE_ALLOWED_HOSTS_ENV}\n",
        status_code=421,
    )


def same_origin_path(path: str) -> str:
    """`path` as a redirect target that stays on this origin, whatever it holds.

    Leading slashes and backslashes go (`//evil.example` and `/\\evil.example` name another
    host to a browser), and everything but path characters is percent-encoded, so tabs,
    newlines or `:` cannot turn it into a scheme or authority either.
    """
    return "/" + quote(path.lstrip("/\\"), safe="/-._~!$&'()*+,;=@")


class TokenAuth:
    """ASGI middleware: every path needs the token, as a bearer header or the cookie it sets."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()
        self._cookie = hmac.new(self._token, b"tracestream console cookie", hashlib.sha256).hexdigest()

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
        if scheme.lower() == "bearer":
            allowed = bool(bearer) and self._valid(bearer)
        else:
            allowed = cookie is not None and hmac.compare_digest(cookie.value.encode(), self._cookie.encode())
        if allowed:
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
        response = RedirectResponse(same_origin_path(path) + (f"?{rest}" if rest else ""), status_code=303)
        secure = scope.get("scheme") == "https"
        response.set_cookie(
            COOKIE, self._cookie, path=root + "/", httponly=True, samesite="strict", secure=secure
        )
        return response


def _denied() -> Response:
    return PlainTextResponse(
        f"401: the console needs its token: open it once with ?token=<{CONSOLE_TOKEN_ENV}> "
        "or send 'Authorization: Bearer <token>'\n",
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )
