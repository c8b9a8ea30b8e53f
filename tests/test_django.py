"""Django end to end: the demo shop under gunicorn (2 workers, with and without --preload) and ASGI."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.apps.http_checks import HTTP_SCOPE, check_ok_record, request_record
from tests.apps.servers import LAUNCHER_ENV, bin_path, http_ready, launched, run_json, serve
from tests.support import ROOT, RedisHandle, run_python_process, wait_for
from tracestream.embedded_redis import EmbeddedRedis, free_port

SERVERS = {
    "gunicorn": ["gunicorn", "shop.wsgi", "-w", "2", "-b"],
    "gunicorn-preload": ["gunicorn", "shop.wsgi", "-w", "2", "--preload", "-b"],
    "asgi": ["uvicorn", "shop.asgi:application", "--port"],
}


@pytest.fixture(scope="module", params=list(SERVERS))
def shop(
    request: pytest.FixtureRequest, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, RedisHandle, str]]:
    """settings.TRACESTREAM names the service; the AppConfig calls configure(); env gives Redis."""
    stream = RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    port = free_port()
    program, *args = SERVERS[request.param]
    address = f"127.0.0.1:{port}" if program == "gunicorn" else str(port)
    env = stream.env(
        PYTHONPATH=str(ROOT / "examples"),
        DJANGO_SETTINGS_MODULE="shop.settings",
        SHOP_DB=str(tmp_path_factory.mktemp("shop") / "db.sqlite3"),
    )
    base = f"http://127.0.0.1:{port}"
    with serve([bin_path(program), *args, address], env, http_ready(f"{base}/")):
        yield base, stream, request.param


def test_request_record_and_header(shop: tuple[str, RedisHandle, str]) -> None:
    base, stream, _ = shop
    response = httpx.get(f"{base}/orders/12/", headers={"user-agent": "e2e/2"})
    assert response.status_code == 200
    record = request_record(stream, response)
    assert record.service == "shop-web"
    check_ok_record(stream, record, response, "/orders/<int:order_id>/", "e2e/2")
    lines = [e for e in stream.logs() if e.trace_id == record.trace_id and e.scope == "shop.views"]
    assert [e.body for e in lines] == ["showing order 12"]


def test_not_found_is_one_warn_record(shop: tuple[str, RedisHandle, str]) -> None:
    base, stream, _ = shop
    response = httpx.get(f"{base}/no/such/page")
    assert response.status_code == 404
    record = request_record(stream, response)
    assert record.severity == "WARN" and "http.route" not in record.attributes
    # Django's own "Not Found" line is replaced by the request record
    assert not [e for e in stream.logs() if e.trace_id == record.trace_id and e.scope == "django.request"]


def test_integrity_error_is_one_error_record_with_the_exception(shop: tuple[str, RedisHandle, str]) -> None:
    base, stream, _ = shop
    response = httpx.get(f"{base}/broken/")
    assert response.status_code == 500
    record = request_record(stream, response)
    assert record.severity == "ERROR"
    assert record.exception_type == "django.db.utils.IntegrityError"
    assert record.exception_message == "NOT NULL constraint failed: legacy_order.customer"
    assert "in broken" in record.exception_stacktrace
    errors = [e for e in stream.logs() if e.trace_id == record.trace_id and e.severity == "ERROR"]
    assert errors == [record]
    spans = wait_for(
        lambda: [s for s in stream.spans() if s.trace_id == record.trace_id and s.kind == "SERVER"],
        what="the server span",
    )
    events = [e["attributes"]["exception.type"] for e in spans[0].events if e["name"] == "exception"]
    assert events == ["django.db.utils.IntegrityError"]  # one event, as stock OTel records


def test_every_worker_reports(shop: tuple[str, RedisHandle, str]) -> None:
    base, stream, server = shop
    workers = 1 if server == "asgi" else 2

    def pids() -> set[object]:
        httpx.get(f"{base}/orders/1/")
        found = {e.resource.get("process.pid") for e in stream.logs() if e.scope == HTTP_SCOPE}
        return found if len(found) >= workers else set()

    wait_for(pids, timeout=15, what=f"request records from {workers} worker(s)")
    logs = stream.logs()
    assert len({e.record_id for e in logs}) == len(logs)


def test_runserver_noreload_under_the_launcher(stream: RedisHandle) -> None:
    """The documented launcher path: DJANGO_SETTINGS_MODULE in the environment, --noreload."""
    port = free_port()
    env = stream.env(
        PYTHONPATH=str(ROOT / "examples"),
        DJANGO_SETTINGS_MODULE="shop.settings",
        OTEL_SERVICE_NAME="shop-web",
        **LAUNCHER_ENV,
    )
    command = launched(bin_path("python"), "examples/manage.py", "runserver", "--noreload", str(port))
    base = f"http://127.0.0.1:{port}"
    with serve(command, env, http_ready(f"{base}/")):
        response = httpx.get(f"{base}/orders/3/", headers={"user-agent": "e2e/3"})
        record = request_record(stream, response)
        check_ok_record(stream, record, response, "/orders/<int:order_id>/", "e2e/3")
    # runserver's own access lines ("GET /orders/3/ 200") are not added without a trace id
    assert not [e for e in stream.logs() if e.scope == "django.server"]


CHANNELS_LINES = """
import logging, django, tracestream
from django.conf import settings
settings.configure()
django.setup()
telemetry = tracestream.configure(service_name="channels")
from django.core.asgi import get_asgi_application
application = get_asgi_application()  # what daphne's runserver serves
details = {"method": "GET", "path": "/orders/1/", "status": 500, "time_taken": 0.01, "client": "127.0.0.1:5"}
for message, args in [
    ("HTTP %(method)s %(path)s %(status)s [%(time_taken).2f, %(client)s]", details),
    ("WebSocket CONNECT %(path)s [%(client)s]", {"path": "/ws/", "client": "127.0.0.1:5"}),
]:
    record = logging.LogRecord("django.channels.server", logging.ERROR, "x.py", 1, message, (args,), None)
    telemetry.handler.handle(record)  # as the capture hands it over, whatever the logger's exclusions
telemetry.force_flush()
print("{}")
"""


def test_daphne_runserver_http_lines_are_replaced_and_websocket_lines_kept(stream: RedisHandle) -> None:
    """daphne's runserver (`django.channels.server`): the request record stands for an HTTP line only."""
    run_json(CHANNELS_LINES, stream.env())
    assert [e.body for e in stream.logs()] == ["WebSocket CONNECT /ws/ [127.0.0.1:5]"]


def test_bad_tracestream_settings_are_one_clear_error(stream: RedisHandle) -> None:
    code = """
import json
from django.conf import settings
from tracestream.django_settings import configure_arguments
settings.configure()
errors = []
for value in ({"worker_service_name": " "}, {"worker_service_name": 7}, ["service_name", "web"]):
    settings.TRACESTREAM = value
    try:
        configure_arguments()
    except ValueError as error:
        errors.append(str(error))
settings.TRACESTREAM = {"service_name": "web", "worker_service_name": "worker", "stream": "s"}
print(json.dumps([errors, configure_arguments()]))
"""
    errors, outside_celery = run_json(code, stream.env())
    assert errors == [
        "settings.TRACESTREAM['worker_service_name']=' ' is invalid: expected a service name",
        "settings.TRACESTREAM['worker_service_name']=7 is invalid: expected a service name",
        "settings.TRACESTREAM must be a dict of configure() arguments, not list",
    ]
    assert outside_celery == {"service_name": "web", "stream": "s"}


# Django's logging how-to: a root logger at DEBUG with a console handler.
DEBUG_LOGGING = """
import os, django
from django.conf import settings
apps = ["tracestream.integrations.django.TracestreamConfig"] if os.environ.get("WITH_TRACESTREAM") else []
settings.configure(
    SECRET_KEY="placeholder", ROOT_URLCONF=__name__, INSTALLED_APPS=apps,
    LOGGING={"version": 1, "disable_existing_loggers": False,
             "handlers": {"console": {"class": "logging.StreamHandler"}},
             "root": {"handlers": ["console"], "level": "DEBUG"}},
)
urlpatterns = []
django.setup()
from django.core.wsgi import get_wsgi_application
get_wsgi_application()
"""


def test_an_app_logging_at_debug_prints_nothing_more_as_its_handler_starts(stream: RedisHandle) -> None:
    """The contrib instrumentation set up at the first request handler, after the app's LOGGING."""
    without = run_python_process(DEBUG_LOGGING, stream.env())
    with_us = run_python_process(DEBUG_LOGGING, stream.env(WITH_TRACESTREAM="1"))
    assert with_us.returncode == without.returncode == 0, with_us.stderr
    assert (with_us.stdout, with_us.stderr) == (without.stdout, without.stderr)


# contrib's own switch for its Django instrumentation, set by the app.
UNTRACED = DEBUG_LOGGING.replace(
    "get_wsgi_application()",
    """from django.test import Client
print(Client().get("/missing/").status_code)""",
)


def test_contribs_django_switch_set_off_is_said_in_one_line(stream: RedisHandle) -> None:
    done = run_python_process(
        UNTRACED, stream.env(WITH_TRACESTREAM="1", OTEL_PYTHON_DJANGO_INSTRUMENT="False")
    )
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert said == [
        "tracestream: WARNING OTEL_PYTHON_DJANGO_INSTRUMENT=False turns the contrib Django instrumentation "
        "off: Django's requests get request records without trace or span ids, and no spans or trace headers"
    ]
    [record] = wait_for(lambda: [e for e in stream.logs() if e.body.startswith("GET /missing/")])
    assert record.trace_id == ""


# Django's logging how-to at DEBUG, under ASGI: an async view and a sync one that fails.
ASGI_DEBUG_LOGGING = """
import asyncio, logging, os, django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path
apps = ["tracestream.integrations.django.TracestreamConfig"] if os.environ.get("WITH_TRACESTREAM") else []
settings.configure(
    SECRET_KEY="placeholder", ROOT_URLCONF=__name__, INSTALLED_APPS=apps, ALLOWED_HOSTS=["*"], DEBUG=True,
    LOGGING={"version": 1, "disable_existing_loggers": False,
             "handlers": {"console": {"class": "logging.StreamHandler"}},
             "root": {"handlers": ["console"], "level": "DEBUG"},
             "loggers": {"django": {"handlers": ["console"], "level": "DEBUG", "propagate": False}}},
)


async def hello(request):
    logging.getLogger("views").warning("saying hello")
    return HttpResponse("hello")


def broken(request):
    raise RuntimeError("order 7 is unreadable")


urlpatterns = [path("hello/", hello), path("broken/", broken)]
django.setup()
from django.core.asgi import get_asgi_application
from django.test import AsyncClient
get_asgi_application()


async def main():
    client = AsyncClient(raise_request_exception=False)
    print((await client.get("/hello/")).status_code, (await client.get("/broken/")).status_code)


asyncio.run(main())
"""


def _printed_traceback(stderr: str) -> str:
    """Django's "Internal Server Error" line and the traceback after it."""
    lines = stderr.splitlines()
    start = lines.index("Internal Server Error: /broken/")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("RuntimeError"))
    return "\n".join(lines[start : end + 1])


def test_under_asgi_the_span_middleware_prints_nothing_more_and_keeps_the_trace(stream: RedisHandle) -> None:
    """Contrib's middleware is synchronous: Django ran it through `sync_to_async`, and said so
    at DEBUG ("Asynchronous handler adapted for middleware …_DjangoMiddleware")."""
    without = run_python_process(ASGI_DEBUG_LOGGING, stream.env())
    with_us = run_python_process(ASGI_DEBUG_LOGGING, stream.env(WITH_TRACESTREAM="1"))
    assert with_us.returncode == without.returncode == 0, with_us.stderr
    assert with_us.stdout == without.stdout == "200 500\n"
    assert "adapted" not in with_us.stderr and "saying hello" in with_us.stderr
    assert _printed_traceback(with_us.stderr) == _printed_traceback(without.stderr)
    assert _printed_traceback(without.stderr).endswith("RuntimeError: order 7 is unreadable")
    records = wait_for(lambda: len(stream.logs()) >= 3 and stream.logs(), what="two requests and a line")
    [hello] = [e for e in records if e.body.startswith("GET /hello/")]
    [line] = [e for e in records if e.body == "saying hello"]
    assert (line.trace_id, line.span_id) == (hello.trace_id, hello.span_id) != ("", "")
    spans = wait_for(lambda: len(stream.spans()) >= 2 and stream.spans(), what="both requests' spans")
    assert sorted(s.status for s in spans if s.kind == "SERVER") == ["ERROR", "UNSET"]
