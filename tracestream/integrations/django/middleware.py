"""Django: the contrib middleware for spans, plus our request records and trace headers.

Both middlewares must be in `settings.MIDDLEWARE` before the WSGI/ASGI handler loads its
middleware chain. We hook `BaseHandler.load_middleware` itself, which every handler runs
exactly then (runserver, gunicorn with or without --preload, any ASGI server), by which
time settings are configured: so it works whether `configure()` ran from the launcher,
`wsgi.py`, `manage.py` or our AppConfig, and never configures settings too early.

The mounted console's own requests (`tracestream.console.django_urls`) get no span and no record.

Django's own "Internal Server Error"/"Not Found" lines (`django.request`) and the access
lines of the servers, runserver's (`django.server`) among them, and of daphne's runserver
(`django.channels.server`), written after the span ended, are kept out of the stream: the
request record replaces them, so an unhandled exception is one ERROR record. A request our
middleware never saw keeps its access line. A streaming response's record goes out when
its body ends, with what the body raised; the server's line for that exception is kept out too.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import sys
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

import django
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestAborted, SuspiciousOperation
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.core.signals import got_request_exception
from django.http import Http404, HttpRequest, HttpResponseBase, StreamingHttpResponse
from django.urls import NoReverseMatch, resolve, reverse
from opentelemetry.context import attach, detach, get_current
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.django.middleware.otel_middleware import _DjangoMiddleware
from opentelemetry.util.http import ExcludeList

from tracestream._internal_log import internal_logger
from tracestream.django_settings import CONSOLE_URL_NAME
from tracestream.integrations.django import answered
from tracestream.integrations.http_records import (
    HttpExchange,
    RequestNote,
    emit_request_record,
    end_abandoned_span,
    excluded_urls,
    failed_status,
    forget_request,
    keep_server_lines_out,
    note_logged_errors,
    note_request,
    requests_accounted_for,
    served,
    serving,
    trace_headers,
)
from tracestream.integrations.record_writer import replace_lines
from tracestream.otel_setup.log_capture import replace_access_line, take_access_line_mark
from tracestream.otel_setup.telemetry import Telemetry
from tracestream.schema import rooted_route

MIDDLEWARE = "tracestream.integrations.django.middleware.RequestRecordMiddleware"
SPAN_MIDDLEWARE = "tracestream.integrations.django.middleware.SpanMiddleware"
_CONTRIBS: Any = _DjangoMiddleware  # untyped
_OTEL_MIDDLEWARE = "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"
_SEEN = "_tracestream_request"
_ERROR = "_tracestream_error"
_REASON = "_tracestream_reason"  # the exception a 4xx answered
_CLIENT_LEFT = "_tracestream_client_left"
# On an exception that passed Django unanswered, once the request record carrying it is written.
_CARRIED = "_tracestream_carried"
_CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client left before the answer
_installed = False


class SpanMiddleware:
    """Contrib's middleware, which opens and ends each request's span, run in the handler's own
    mode. Contrib's is synchronous only: under ASGI Django ran it through `sync_to_async`, a
    thread hop each request (its `process_view` another), which showed in sync views'
    tracebacks and, at DEBUG, in a line of Django's about adapting the handler."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.contrib: Any = _CONTRIBS(get_response)
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        self.process_exception = self.contrib.process_exception
        self.process_view: Callable[..., Any] = self.contrib.process_view
        if self.is_async:
            markcoroutinefunction(self)
            self.process_view = self._process_view

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        try:
            return self.contrib(request)
        except DisallowedHost:
            pass  # see `_acall`
        except BaseException as error:
            _end_contribs_span(request, error)
            raise
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        contrib = self.contrib
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        try:
            contrib.process_request(request)
        except DisallowedHost:
            # Contrib asks for the host before it opens the span, ahead of the app's middleware:
            # a Host not allowed was refused there, and the 400 lost what the app's middleware
            # adds to it (SecurityMiddleware's headers, a CORS header). It goes on without a span,
            # to be refused where it is without us, outside this handler: the app's refusal
            # chained to contrib's printed and stored two tracebacks.
            refused = True
        else:
            refused = False
        if refused:
            return await get_response(request)
        try:
            response = await get_response(request)
        except BaseException as error:
            _end_contribs_span(request, error)
            raise
        return contrib.process_response(request, response)  # type: ignore[no-any-return]

    async def _process_view(self, request: HttpRequest, view: Any, *args: Any, **kwargs: Any) -> Any:
        return self.contrib.process_view(request, view, *args, **kwargs)


class RequestRecordMiddleware:
    """Writes one request record per request, inside the span, and adds the trace headers.

    A URL the contrib instrumentation excludes (OTEL_PYTHON_DJANGO_EXCLUDED_URLS) gets neither,
    and its access line stays out of the stream as well.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        self.excluded = excluded_urls("DJANGO")

    def __call__(self, request: HttpRequest) -> Any:
        replace_access_line()  # excluded URLs' and the console's too: they stay out of the stream
        if self.excluded is not None and self.excluded.url_disabled(request.build_absolute_uri("?")):
            return self.get_response(request)
        if self.is_async:
            return self._acall(request)
        setattr(request, _SEEN, True)
        answering = _Answering(request)
        noted = note_request(_route_of, request)
        try:
            response: HttpResponseBase = self.get_response(request)
        except BaseException as error:
            answering.unanswered(error)
            raise
        finally:
            forget_request(noted)
        return answering.answered(response, noted)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        setattr(request, _SEEN, True)
        answering = _Answering(request)
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        noted = note_request(_route_of, request)
        try:
            response = await get_response(request)
        except BaseException as error:
            if _client_left(request, error):
                answering.client_left()
            else:
                answering.unanswered(error)
            raise
        finally:
            forget_request(noted)
        return answering.answered(response, noted)


class _Answering:
    """A request until its record is written, in flight (`serving`): a server that ends its
    process without waiting for the request (gunicorn's gevent workers at Ctrl-C, waitress at
    SIGTERM) left no record of it and contrib's span open, its log lines orphans in a trace of
    nothing. It is recorded as the queues close, with `UnfinishedAtExit`, and its span ended;
    so is one whose record an exit interrupted (gunicorn's SIGQUIT handler's `sys.exit`, raised
    in the middle of it at Ctrl-C)."""

    __slots__ = ("context", "recorded", "request", "started")

    def __init__(self, request: HttpRequest) -> None:
        self.request = request
        self.started = perf_counter()
        self.context = get_current()  # the span's, for a record written from elsewhere
        self.recorded = False
        serving(self)

    def answered(self, response: HttpResponseBase, note: RequestNote) -> HttpResponseBase:
        if not self.recorded:
            response = _finish(self.request, response, self.started, note)
            self.recorded = True
        served(self)
        return response

    def unanswered(self, error: BaseException) -> None:
        """Django answers what a view raises; what passes it (a worker timeout's SystemExit from
        gunicorn's SIGABRT, a cancelled ASGI request) ends the request with no answer of
        Django's: its record says 500, which the server answers if it answers at all, with that
        exception."""
        self._record_unanswered(500, error)

    def client_left(self) -> None:
        """Django cancelled the view as its client disconnected: nobody is answered, which is no
        error of the app's."""
        self._record_unanswered(_CLIENT_CLOSED_REQUEST)

    def _record_unanswered(self, status: int, error: BaseException | None = None) -> None:
        if not self.recorded:
            if not _is_console(self.request.path):
                exchange = _exchange(self.request, status, None, self.started)
                emit_request_record(exchange, error, context=self.context)
                if error is not None:
                    setattr(error, _CARRIED, True)
            self.recorded = True
        served(self)

    def record_unfinished(self, error: BaseException) -> None:
        if not self.recorded:
            self.unanswered(error)
            end_abandoned_span(self.request.META.get(_DjangoMiddleware._environ_span_key), error)


def _client_left(request: HttpRequest, error: BaseException) -> bool:
    """Whether `error` is Django's cancelling the request as its client disconnected, asked once
    a request: the span's middleware and the record's both end with it."""
    if not isinstance(error, asyncio.CancelledError):
        return False
    left = getattr(request, _CLIENT_LEFT, None)
    if left is None:
        left = _cancelled_by_djangos_disconnect_listener()
        setattr(request, _CLIENT_LEFT, left)
    return bool(left)


def _cancelled_by_djangos_disconnect_listener() -> bool:
    """From 5.0 Django's ASGI handler listens for the client's disconnect beside the view's task,
    and when it comes cancels that task and awaits it, which Django's docs tell views to expect.
    From 6.0 the view runs in the handler's own task, which the listener's task group cancels.
    A server that stops cancels the handler itself instead (uvicorn's graceful shutdown running
    out), and no listener raised: that stays a 500."""
    try:
        view = asyncio.current_task()
    except RuntimeError:  # a sync middleware's thread: no loop, no view task
        return False
    if view in _left_by_their_client:
        return True
    for task in asyncio.all_tasks():
        awaiting: Any = task.get_coro()
        while inspect.iscoroutine(awaiting):
            if awaiting.cr_code is ASGIHandler.handle.__code__ and awaiting.cr_frame is not None:
                listener, *views = awaiting.cr_frame.f_locals.get("tasks") or [None]
                if view in views and _raised(listener, RequestAborted):
                    return True
            awaiting = awaiting.cr_await
    return False


# Django 6's handler tasks whose disconnect listener raised: the view, in that task, is cancelled.
_left_by_their_client: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def _note_disconnects_in_the_handlers_task() -> None:
    """Django 6 makes the listener in the handler's task, where the view then runs; the task is
    taken as the listener is made, as its own task cannot tell which it listens for."""
    listen = ASGIHandler.listen_for_disconnect

    def listen_for_disconnect(self: ASGIHandler, receive: Callable[[], Awaitable[Any]]) -> Awaitable[None]:
        return _noting_a_disconnect(listen(self, receive), asyncio.current_task())

    ASGIHandler.listen_for_disconnect = markcoroutinefunction(listen_for_disconnect)  # type: ignore[method-assign]


async def _noting_a_disconnect(listening: Awaitable[None], handler: asyncio.Task[Any] | None) -> None:
    try:
        await listening
    except RequestAborted:
        if handler is not None:
            _left_by_their_client.add(handler)
        raise


def _raised(task: asyncio.Task[Any] | None, error: type[BaseException]) -> bool:
    return task is not None and task.done() and not task.cancelled() and isinstance(task.exception(), error)


def _end_contribs_span(request: HttpRequest, error: BaseException) -> None:
    """Contrib ends its span, and detaches its context, in `process_response`, which an exception
    passing Django never reaches (gunicorn's worker timeout's SystemExit, a cancelled ASGI
    request): the span was lost, and what the worker logged next (gunicorn's "Worker exiting")
    was in its trace. Ended here, an error as its request record is (OTel records no
    BaseException on a span itself)."""
    meta = request.META
    activation = meta.pop(_DjangoMiddleware._environ_activation_key, None)
    span = meta.pop(_DjangoMiddleware._environ_span_key, None)
    if span is not None and activation is not None:
        if not _client_left(request, error):
            span.set_status(failed_status(error))
        activation.__exit__(type(error), error, error.__traceback__)
    token = meta.pop(_DjangoMiddleware._environ_token, None)
    if token is not None:
        detach(token)


def _route_of(request: HttpRequest, status: int | None = None) -> str | None:
    """The route Django resolved; for a request answered before that (django-cors-headers'
    preflight), the route its path matches, as contrib names the span. A 404 has none."""
    match = request.resolver_match
    if match is None and status is not None and status != 404:
        try:
            match = resolve(request.path_info, getattr(request, "urlconf", None))
        except Http404:
            return None
    return getattr(match, "route", None) if match is not None else None


def _exchange(request: HttpRequest, status: int, size: int | None, started: float) -> HttpExchange:
    return HttpExchange(
        method=request.method or "",
        path=request.path,
        route=rooted_route(_route_of(request, status)),
        status=status,
        duration_ms=(perf_counter() - started) * 1000,
        client=request.META.get("REMOTE_ADDR"),
        user_agent=request.META.get("HTTP_USER_AGENT"),
        response_size=size,
    )


def _finish(
    request: HttpRequest, response: HttpResponseBase, started: float, note: RequestNote
) -> HttpResponseBase:
    if _is_console(request.path):
        return response
    for name, value in trace_headers():
        response.setdefault(name, value)  # a header the app set itself stays its own
    size = None if getattr(response, "streaming", False) else len(getattr(response, "content", b""))
    exchange = _exchange(request, response.status_code, size, started)
    error = getattr(request, _ERROR, None)
    if isinstance(response, StreamingHttpResponse) and getattr(response, "file_to_stream", None) is None:
        body = _StreamedBody(exchange, started, error)
        if response.is_async:
            response.streaming_content = _AsyncChunks(response.streaming_content, body)
        else:
            response.streaming_content = _SyncChunks(response.streaming_content, body)
    else:
        emit_request_record(exchange, error, reason=getattr(request, _REASON, None), note=note)
    return response


class _StreamedBody:
    """A streaming response's body as the server sends it: its request record goes out when
    the body ends, so it carries the size sent, the time the client waited, and an exception
    raised on the way (the server span has ended by then; the record keeps its context, as
    what the body logs does).

    A `FileResponse` of a file is left alone: servers send the file themselves (sendfile).
    """

    __slots__ = ("context", "error", "exchange", "recorded", "sending", "size", "started")

    def __init__(self, exchange: HttpExchange, started: float, error: BaseException | None) -> None:
        self.exchange = exchange
        self.started = started
        self.error = error
        self.context = get_current()
        self.size = 0
        self.recorded = False
        self.sending = False

    def first_chunk(self) -> None:
        """In flight once the server reads it: a body it never reads is dropped with its response."""
        self.sending = True
        serving(self)

    def ended(self, error: BaseException | None = None, *, cancelled: BaseException | None = None) -> None:
        """`cancelled`: Django cancels a body whose client left, and a server stopping may cancel
        it too, the same way; the record keeps the cancellation, its status says how it went."""
        if not self.recorded:
            self.recorded = True
            served(self)
            exchange = self.exchange._replace(
                duration_ms=(perf_counter() - self.started) * 1000, response_size=self.size
            )
            emit_request_record(exchange, error or self.error, context=self.context, reason=cancelled)

    def record_unfinished(self, error: BaseException) -> None:
        self.ended(error)


class _SyncChunks:
    """The body's chunks, passed through; Django closes this with the response (a client gone)."""

    def __init__(self, chunks: Iterable[bytes], body: _StreamedBody) -> None:
        self.chunks = iter(chunks)
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if not self.body.sending:
            self.body.first_chunk()
        token = attach(self.body.context)  # what the body logs is in the request's trace
        try:
            chunk = next(self.chunks)
        except StopIteration:
            self.body.ended()
            raise
        except Exception as error:
            self.body.ended(error)
            raise
        finally:
            detach(token)
        self.body.size += len(chunk)
        return chunk

    def close(self) -> None:
        self.body.ended()


class _AsyncChunks:
    """The same for an async body, which Django's ASGI handler cancels when the client goes."""

    def __init__(self, chunks: AsyncIterable[bytes], body: _StreamedBody) -> None:
        self.chunks = aiter(chunks)
        self.body = body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self.body.sending:
            self.body.first_chunk()
        token = attach(self.body.context)
        try:
            chunk = await anext(self.chunks)
        except StopAsyncIteration:
            self.body.ended()
            raise
        except Exception as error:
            self.body.ended(error)
            raise
        except BaseException as cancelled:
            self.body.ended(cancelled=cancelled)
            raise
        finally:
            detach(token)
        self.body.size += len(chunk)
        return chunk


# Frames an exception that a request record carries came up through: our chunk iterators'.
_RECORDING = (_SyncChunks.__next__.__code__, _AsyncChunks.__anext__.__code__)


def _recorded_by_a_request_record(record: logging.LogRecord) -> bool:
    """A server's line about an exception a request record carries: one a streaming body raised
    (its traceback holds the frame of our chunk iterator), or one that passed Django unanswered
    (gunicorn's worker timeout's SystemExit), marked as its record was written. Or about the
    server cancelling a request it stopped waiting for: the request's record says so, in its
    trace (the cancellation, or that the process ended first)."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, asyncio.CancelledError) or getattr(error, _CARRIED, False):
        return True
    frames = error.__traceback__ if isinstance(error, BaseException) else None
    while frames is not None:
        if frames.tb_frame.f_code in _RECORDING:
            return True
        frames = frames.tb_next
    return False


def _remember_exception(sender: Any, request: HttpRequest | None = None, **_: Any) -> None:
    """Sent by Django while the exception is being handled, before it logs it."""
    if request is not None:
        setattr(request, _ERROR, sys.exc_info()[1])


def _replaced_by_request_record(record: logging.LogRecord) -> bool:
    request = getattr(record, "request", None)
    if getattr(request, _SEEN, False) is not True:
        return False
    _keep_the_reason(request, record)
    return True


def _keep_the_reason(request: HttpRequest, line: logging.LogRecord) -> None:
    """Django's line for a 4xx it answered (PermissionDenied, SuspiciousOperation, BadRequest)
    carries the exception and its message: the request record takes them over. A 404 says all
    its status does, and its resolver's exception lists every URL pattern tried."""
    error = line.exc_info[1] if line.exc_info else None
    if error is not None and not isinstance(error, Http404):
        setattr(request, _REASON, error)


def _suspicious_operations() -> set[str]:
    """The names Django logs a request's `SuspiciousOperation` under (`django.security.<class>`),
    where from 5.0 it logs no `django.request` line for it: a bad `Host`, a request body too big."""
    found, classes = set(), [SuspiciousOperation]
    while classes:
        kind = classes.pop()
        found.add(kind.__name__)
        classes += kind.__subclasses__()
    return found


def _is_replaced_access_line(record: logging.LogRecord) -> bool:
    return hasattr(record, "status_code") and take_access_line_mark()


def _is_channels_access_line(record: logging.LogRecord) -> bool:
    """daphne's runserver logs an HTTP exchange with its details (status included) as the argument."""
    return isinstance(record.args, Mapping) and "status" in record.args


@functools.cache
def _console_prefix() -> str | None:
    """Where the project's URLconf includes the console, if it does (looked up on first use)."""
    try:
        return str(reverse(CONSOLE_URL_NAME, kwargs={"rest": ""}))
    except NoReverseMatch:
        return None


def _is_console(path: str) -> bool:
    prefix = _console_prefix()
    return prefix is not None and path.startswith(prefix)


class _ExcludingConsole(ExcludeList):
    """The contrib middleware's excluded URLs, and the console's: it opens no span for them."""

    def __init__(self, excluded: ExcludeList) -> None:
        super().__init__([])
        self.excluded = excluded

    def url_disabled(self, url: str) -> bool:
        prefix = _console_prefix()
        holds_prefix = prefix is not None and prefix in url  # only such a URL is parsed: twice a request
        return (holds_prefix and _is_console(urlsplit(url).path)) or self.excluded.url_disabled(url)


def _add_middleware() -> None:
    """Contrib's middleware first (it opens the span), run by `SpanMiddleware`, and ours right
    inside it."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    instrumentor = DjangoInstrumentor()
    if _OTEL_MIDDLEWARE not in middleware and SPAN_MIDDLEWARE not in middleware:
        if os.environ.get(_DJANGO_SWITCH) == "False":
            _say_requests_go_untraced()
        else:
            if instrumentor.is_instrumented_by_opentelemetry:  # by a launcher run that left settings alone
                instrumentor.uninstrument()
            _instrument_quietly(instrumentor)
            middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    added = list(middleware)
    if _OTEL_MIDDLEWARE in added:  # as contrib's instrument(), or the app, put it
        added[added.index(_OTEL_MIDDLEWARE)] = SPAN_MIDDLEWARE
    if MIDDLEWARE not in added:
        added.insert(added.index(SPAN_MIDDLEWARE) + 1 if SPAN_MIDDLEWARE in added else 0, MIDDLEWARE)
    if added != middleware:
        settings.MIDDLEWARE = added
    if not isinstance(_DjangoMiddleware._excluded_urls, _ExcludingConsole):  # set by each instrument()
        _DjangoMiddleware._excluded_urls = _ExcludingConsole(_DjangoMiddleware._excluded_urls)


_POSITION = "OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION"
_DJANGO_SWITCH = "OTEL_PYTHON_DJANGO_INSTRUMENT"
_said_untraced = False


def _say_requests_go_untraced() -> None:
    """Contrib's switch keeps its middleware out: requests still get records, without a trace."""
    global _said_untraced
    if not _said_untraced:
        _said_untraced = True
        internal_logger.warning(
            "%s=False turns the contrib Django instrumentation off: Django's requests get request "
            "records without trace or span ids, and no spans or trace headers",
            _DJANGO_SWITCH,
        )


def _instrument_quietly(instrumentor: DjangoInstrumentor) -> None:
    """Without a middleware position set, contrib says at DEBUG that it takes its default, 0.
    Upstream's launcher instruments before the app configures logging; we do it after, where the
    app's DEBUG handlers would print that line: the default is given for the call instead."""
    if _POSITION in os.environ:
        instrumentor.instrument()
        return
    os.environ[_POSITION] = "0"
    try:
        instrumentor.instrument()
    finally:
        os.environ.pop(_POSITION, None)


def install(telemetry: Telemetry, name: str = "django") -> None:
    """The handler hook and signal once per process; the line filters on each configured handler."""
    global _installed
    if not _installed:
        _installed = True
        original = BaseHandler.load_middleware

        def load_middleware(self: BaseHandler, is_async: bool = False) -> None:
            _add_middleware()
            answered.wrap_unfinished()
            original(self, is_async)
            # an access line without a record is no sign of an app we do not record
            requests_accounted_for()

        BaseHandler.load_middleware = load_middleware  # type: ignore[method-assign]
        got_request_exception.connect(_remember_exception, weak=False)
        if django.VERSION >= (6, 0):
            _note_disconnects_in_the_handlers_task()
        answered.install()
        _reload_handlers_built_before()
    replace_lines(telemetry.handler, "django.request", _replaced_by_request_record)
    for name in _suspicious_operations():
        replace_lines(telemetry.handler, f"django.security.{name}", _replaced_by_request_record)
    replace_lines(telemetry.handler, "django.server", _is_replaced_access_line)
    replace_lines(telemetry.handler, "django.channels.server", _is_channels_access_line)
    keep_server_lines_out(telemetry.handler, _recorded_by_a_request_record)
    note_logged_errors(telemetry.handler)


def _reload_handlers_built_before() -> None:
    """A handler built before configure() loaded its middleware without contrib's and ours: no
    span, no record. gunicorn `--preload` with configure() in `post_fork` (the OpenTelemetry
    docs' recipe for fork models) builds it in the master, and Channels' `asgi.py` builds it
    first of all, as `django_asgi_app`, with configure() after. Found where servers and routers
    take it from, a module's global or the ASGI router it routes HTTP to, it loads its
    middleware again, before it serves a request."""
    if not settings.configured or MIDDLEWARE in (getattr(settings, "MIDDLEWARE", None) or ()):
        return
    for handler in _handlers_in_modules():
        if handler._middleware_chain is not None:
            handler.load_middleware(is_async=isinstance(handler, ASGIHandler))


def _handlers_in_modules() -> list[BaseHandler]:
    """Each handler a module's global is, or routes HTTP to, once. By type, not `isinstance`:
    that asks a lazy global (Django admin's `site`) its `__class__`, which builds it, and
    before the app registry is ready that fails."""
    found: dict[int, BaseHandler] = {}
    for module in list(sys.modules.values()):
        for value in list(getattr(module, "__dict__", {}).values()):  # no module __getattr__ runs
            if issubclass(type(value), BaseHandler):
                found[id(value)] = value
            elif type(value).__module__ == "channels.routing":
                for routed in _routed_to(value):
                    if isinstance(routed, BaseHandler):
                        found[id(routed)] = routed
    return list(found.values())


def _routed_to(router: object) -> list[object]:
    """The apps a Channels `ProtocolTypeRouter` routes to (`"http": get_asgi_application()`)."""
    mapping = getattr(router, "application_mapping", None)
    return list(mapping.values()) if isinstance(mapping, dict) else []
