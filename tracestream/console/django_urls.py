"""Mounting the console into a Django project, behind Django's own login and permissions.

    # urls.py
    path("monitoring/realtime-logs/", include("tracestream.console.django_urls")),

It reads the same settings as the exporter: `settings.TRACESTREAM`, then the environment.
Each request passes Django's auth first (staff by default, or the permission named in
`TRACESTREAM_CONSOLE_PERMISSION`), then is handed to the console's ASGI app. The live
tail is an endless response, so it needs Django under ASGI (uvicorn, daphne); under
WSGI every page works but `api/live` answers 501 saying so. The console's own requests run
with OpenTelemetry instrumentation suppressed: no span, record or log line of theirs reaches
the stream it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth.views import redirect_to_login
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import re_path
from opentelemetry.instrumentation.utils import suppress_instrumentation
from starlette.types import ASGIApp, Message

from tracestream.console.app import create_app, scope_under
from tracestream.django_settings import CONSOLE_URL_NAME, configure_arguments
from tracestream.settings import ConfigError, Settings, configured

LIVE_PATH = "api/live"
_MISPLACED_SETTINGS = {"TRACESTREAM_REDIS_URL": "redis_url", "TRACESTREAM_STREAM": "stream"}
_console: ASGIApp | None = None


def _app() -> ASGIApp:
    """One console per process, so one shared live reader serves every viewer."""
    global _console
    if _console is None:
        _console = create_app(configured() or Settings.load(**configure_arguments()))
    return _console


def _refuse_misplaced_settings() -> None:
    """A console reading another Redis than the exporter writes to would look empty, silently."""
    for name, argument in _MISPLACED_SETTINGS.items():
        if hasattr(django_settings, name):
            raise ConfigError(
                f"settings.{name} is not read: put {argument!r} in settings.TRACESTREAM, "
                "which the exporter and the console share"
            )


async def _allowed(request: HttpRequest) -> bool | None:
    """True to serve, False for 403, None to send an anonymous visitor to the login page."""
    return await sync_to_async(_user_allowed)(request)


def _user_allowed(request: HttpRequest) -> bool | None:
    """`request.user` loads from the database on first use (`request.auser()` is Django 5 only)."""
    user = request.user
    if not user.is_authenticated:
        return None
    permission = getattr(django_settings, "TRACESTREAM_CONSOLE_PERMISSION", "")
    if permission:
        return bool(user.has_perm(permission))
    return bool(user.is_active and user.is_staff)


async def console_view(request: HttpRequest, rest: str) -> HttpResponseBase:
    allowed = await _allowed(request)
    if allowed is None:
        return redirect_to_login(request.get_full_path())
    if not allowed:
        return HttpResponse("403: the tracestream console needs staff or its permission\n", status=403)
    if rest == LIVE_PATH and not isinstance(request, ASGIRequest):
        return HttpResponse("501: the live tail needs Django under ASGI (uvicorn, daphne)\n", status=501)
    return await _forward(request, rest)


async def _forward(request: HttpRequest, rest: str) -> HttpResponseBase:
    """Run the console for this request; stream its body when it is the live feed."""
    messages: asyncio.Queue[Message] = asyncio.Queue()
    body_sent = asyncio.Event()

    async def receive() -> Message:
        if not body_sent.is_set():
            body_sent.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Future()  # the client stays until this request is cancelled
        return {"type": "http.disconnect"}

    async def run() -> None:
        prefix = request.path[: len(request.path) - len(rest)].rstrip("/")
        with suppress_instrumentation():  # the console's own work stays out of what it shows
            await _app()(scope_under(prefix, _scope(request)), receive, messages.put)

    task = asyncio.create_task(run())
    start = await messages.get()
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])]
    streaming = dict(headers).get("content-type", "").startswith("text/event-stream")

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                message = await messages.get()
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    response: HttpResponseBase
    if streaming:
        response = StreamingHttpResponse(body(), status=start["status"])
    else:
        response = HttpResponse(b"".join([chunk async for chunk in body()]), status=start["status"])
    for name, value in headers:
        if name != "content-length":
            response[name] = value
    return response


def _scope(request: HttpRequest) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method or "GET",
        "scheme": request.scheme or "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": request.META.get("QUERY_STRING", "").encode("latin-1"),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()],
        "client": (request.META.get("REMOTE_ADDR", ""), 0),
        "server": (request.get_host().rsplit(":", 1)[0], int(request.get_port() or 0)),
    }


_refuse_misplaced_settings()
urlpatterns = [re_path(r"^(?P<rest>.*)$", console_view, name=CONSOLE_URL_NAME)]
