"""Who may reach the standalone console: the Host it is asked for, and its token.

A page on any web site can rebind its own name to 127.0.0.1 and then read a tokenless
console as same-origin; the Host header still carries that site's name, so only loopback
names and the hosts the operator configured are answered.

The token is required off loopback, optional on it. Browsers sign in with a form that POSTs
the token, so it never sits in a URL (history, caches, proxy logs); a `?token=` link works
too, for shared links, and is swapped for the same cookie at once. Either way the browser
gets an HttpOnly cookie holding a value made from the token, not the token: what a browser
keeps opens the pages, and never serves as the token elsewhere. Scripts send
`Authorization: Bearer <token>`.

Every redirect is relative to the directory the browser is in, so a proxy's path prefix is
kept without the console knowing it.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import re
from collections.abc import Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, quote, unquote, urlencode

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tracestream.console.pages import PAGES_DIR
from tracestream.settings import CONSOLE_ALLOWED_HOSTS_ENV, CONSOLE_TOKEN_ENV


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


# Where the sign-in form POSTs: beside the page it was served for, which is where it returns to.
SIGN_IN = "sign-in"
FORM_TYPE = "application/x-www-form-urlencoded"
# A token and the page to return to fit in far less; a bigger body is no sign-in.
LARGEST_FORM = 4096
# Sign-in answers name or carry the token: no cache, disk or proxy may keep them.
NO_STORE = {"cache-control": "no-store"}
NEEDS_TOKEN = (
    f"401: the console needs its token ({CONSOLE_TOKEN_ENV}): sign in with it in a browser, "
    "or send 'Authorization: Bearer <token>'"
)
WRONG_TOKEN = f"401: the token given does not match the console's ({CONSOLE_TOKEN_ENV})"
_SEGMENT_CHARS = "-._~!$&'()*+,;=@"
_TARGET_CHARS = "A-Za-z0-9%" + re.escape(_SEGMENT_CHARS)
# `./`, one path segment of the characters `relative_target` leaves or encodes, then a query.
_RELATIVE_TARGET = re.compile(rf"\./([{_TARGET_CHARS}]*)(\?[{_TARGET_CHARS}:/?]*)?")
_SIGN_IN_PAGE = (PAGES_DIR / "sign-in.html").read_text()


def relative_target(path: str, query: Iterable[tuple[str, str]] = ()) -> str:
    """`./<last segment of path>?<query>`: the same page, resolved in the directory the browser is in.

    It keeps a proxy's path prefix, and names no other host, scheme or directory whatever `path`
    holds: the segment is percent-encoded (no `/`, `\\`, `:` or control character is left), and
    `.` or `..` becomes `./`.
    """
    segment = path.rpartition("/")[2]
    rest = urlencode(list(query))
    encoded = "" if segment in (".", "..") else quote(segment, safe=_SEGMENT_CHARS)
    return f"./{encoded}" + (f"?{rest}" if rest else "")


def safe_target(text: str) -> str:
    """`text` if it is a target `relative_target` could have made, else `./`: where a form may send back to.

    Browsers read `%2e` as a dot in a path, so an encoded `..` is refused too.
    """
    match = _RELATIVE_TARGET.fullmatch(text)
    return text if match and unquote(match[1]) not in (".", "..") else "./"


class TokenAuth:
    """ASGI middleware: every path needs the token, as a bearer header or the cookie signing in sets.

    The cookie's name is derived from the token too, so consoles with different tokens behind one
    host name keep a cookie each instead of replacing each other's.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()
        self._cookie = self._derived(b"tracestream console cookie")
        self._cookie_name = "tracestream_console_" + self._derived(b"tracestream console cookie name")[:12]

    def _derived(self, purpose: bytes) -> str:
        return hmac.new(self._token, purpose, hashlib.sha256).hexdigest()

    def _valid(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answer = await self._answer(scope, receive)
        if answer is None:
            await self.app(scope, receive, send)
        else:
            await answer(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive) -> Response | None:
        """None lets the request through to the console; anything else is the answer."""
        if scope["method"] == "POST" and scope["path"].rpartition("/")[2] == SIGN_IN:
            return await self._sign_in(scope, receive)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        back = relative_target(scope["path"], [(k, v) for k, v in query if k != "token"])
        offered = dict(query).get("token")
        if offered is not None and self._valid(offered):
            return self._signed_in(back, scope)
        if offered is not None:
            return _refusal(scope, WRONG_TOKEN, back)
        headers = Headers(scope=scope)
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return None if self._valid(bearer) else _refusal(scope, WRONG_TOKEN, back)
        cookie = SimpleCookie(headers.get("cookie", "")).get(self._cookie_name)
        if cookie is not None and hmac.compare_digest(cookie.value.encode(), self._cookie.encode()):
            return None
        return _refusal(scope, NEEDS_TOKEN, back)

    async def _sign_in(self, scope: Scope, receive: Receive) -> Response:
        """The sign-in form's POST: the token arrives in the body, so no URL ever holds it."""
        content_type = Headers(scope=scope).get("content-type", "").partition(";")[0].strip().lower()
        if content_type != FORM_TYPE:
            return PlainTextResponse(f"415: sign in with a form sent as {FORM_TYPE}\n", 415, NO_STORE)
        body = await _body(receive, LARGEST_FORM)
        if body is None:
            return PlainTextResponse(f"413: a sign-in form is {LARGEST_FORM} bytes at most\n", 413, NO_STORE)
        fields = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        back = safe_target(fields.get("next", ""))
        if self._valid(fields.get("token", "")):
            return self._signed_in(back, scope)
        return _sign_in_page(WRONG_TOKEN, back)

    def _signed_in(self, target: str, scope: Scope) -> Response:
        """The cookie, and a redirect to `target`."""
        response = RedirectResponse(target, status_code=303, headers=NO_STORE)
        response.set_cookie(
            self._cookie_name,
            self._cookie,
            path=scope.get("root_path", "") + "/",
            httponly=True,
            samesite="strict",
            secure=scope.get("scheme") == "https",
        )
        return response


async def _body(receive: Receive, limit: int) -> bytes | None:
    """The request's body, or None once it passes `limit` bytes (the rest is never read)."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        more = message.get("more_body", False)
    return body


def _refusal(scope: Scope, line: str, back: str) -> Response:
    """401 saying `line`: a browser opening a page gets the sign-in form, which returns to `back`."""
    accepts = Headers(scope=scope).get("accept", "")
    if scope["method"] in ("GET", "HEAD") and "text/html" in accepts:
        return _sign_in_page(line, back)
    return PlainTextResponse(line + "\n", 401, {"www-authenticate": "Bearer", **NO_STORE})


def _sign_in_page(line: str, back: str) -> Response:
    """The form: it POSTs the token to `sign-in` beside the page, where the answer sends it back to `back`."""
    page = _SIGN_IN_PAGE.replace("<!-- line -->", html.escape(line))
    page = page.replace("<!-- next -->", html.escape(back))
    return HTMLResponse(page, 401, {"www-authenticate": "Bearer", **NO_STORE})
