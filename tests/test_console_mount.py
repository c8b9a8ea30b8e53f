"""The console mounted into host apps: FastAPI behind its dependencies, Django behind its auth."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urljoin

import orjson
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from tests.apps.servers import run_json
from tests.support import ROOT, RedisHandle
from tests.test_console_quiet import telemetry_of
from tracestream.console.fastapi_mount import mount
from tracestream.settings import ConfigError, Settings


def test_fastapi_mount_runs_the_host_dependencies_first(stream: RedisHandle) -> None:
    def admins_only(x_role: str = Header("")) -> None:
        if x_role != "admin":
            raise HTTPException(403, "admins only")

    app = FastAPI()
    mount(
        app,
        Settings.load(environ={}, redis_url=stream.url, stream=stream.stream),
        dependencies=[Depends(admins_only)],
    )
    with TestClient(app) as client:
        assert client.get("/monitoring/realtime-logs/").status_code == 403
        assert client.get("/monitoring/realtime-logs/static/live.js").status_code == 403
        admin = {"x-role": "admin"}
        page = client.get("/monitoring/realtime-logs/", headers=admin)
        assert page.status_code == 200 and "<title>Live tail" in page.text
        assert client.get("/monitoring/realtime-logs/static/live.js", headers=admin).status_code == 200
        bare = client.get("/monitoring/realtime-logs?text=x", headers=admin, follow_redirects=False)
        assert bare.status_code == 308 and bare.headers["location"] == "./realtime-logs/?text=x"


def _console_app(stream: RedisHandle) -> FastAPI:
    app = FastAPI()
    mount(app, Settings.load(environ={}, redis_url=stream.url, stream=stream.stream), dependencies=[])
    return app


def test_fastapi_mount_adds_its_slash_under_the_apps_root_path(stream: RedisHandle) -> None:
    """FastAPI's "Behind a Proxy": a proxy strips /api, `uvicorn --root-path /api` tells the app.
    The redirect went to /monitoring/realtime-logs/, outside /api."""
    with TestClient(_console_app(stream), root_path="/api") as client:
        bare = client.get("/monitoring/realtime-logs", follow_redirects=False)
    assert bare.status_code == 308
    seen_as = "https://example.test/api/monitoring/realtime-logs"  # what the browser asked the proxy for
    assert urljoin(seen_as, bare.headers["location"]) == seen_as + "/"


def test_fastapi_mount_adds_its_slash_in_a_sub_application(stream: RedisHandle) -> None:
    """FastAPI's "Sub Applications": the redirect left the sub-application for a 404 of the main app."""
    main = FastAPI()
    main.mount("/subapi", _console_app(stream))
    with TestClient(main) as client:
        page = client.get("/subapi/monitoring/realtime-logs")
    assert [answer.status_code for answer in page.history] == [308]
    assert page.status_code == 200 and page.url.path == "/subapi/monitoring/realtime-logs/"
    assert "<title>Live tail" in page.text


DJANGO_PROJECT = r"""
import asyncio, faulthandler, json, os, sys, tempfile, threading
faulthandler.dump_traceback_later(50, exit=True)  # a hang ends with every thread's stack on stderr


def print_tasks(loop):  # and, 5 s before, every asyncio task's (a task that never ends hangs `asyncio.run`)
    def each():
        for task in asyncio.all_tasks(loop):
            task.print_stack(file=sys.stderr)
    loop.call_soon_threadsafe(each)
from asgiref.sync import sync_to_async
import django
from django.conf import settings

settings.configure(
    SECRET_KEY="test", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, LOGIN_URL="/login/",
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
                    "tracestream.integrations.django.TracestreamConfig"],
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                           "NAME": os.path.join(tempfile.mkdtemp(), "db.sqlite3")}},
    # What the exporter reads, and so must the console: TRACESTREAM, then the environment.
    TRACESTREAM={"stream": os.environ["HOST_STREAM"], "service_name": "django-host",
                 "worker_service_name": "django-worker"},
)
django.setup()
from django.http import HttpResponse
from django.urls import include, path
urlpatterns = [path("monitoring/realtime-logs/", include("tracestream.console.django_urls")),
               path("hello/", lambda request: HttpResponse("hello"))]  # the host's own, traced

from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import AsyncClient, Client
import importlib, logging

call_command("migrate", verbosity=0)
staff = User.objects.create_user("staff", password="pw", is_staff=True)
plain = User.objects.create_user("plain", password="pw")
from tracestream.otel_setup.telemetry import installed
telemetry = installed()  # the AppConfig configured from TRACESTREAM
logging.getLogger("host").warning("seen <through> django")
telemetry.force_flush()

url = "/monitoring/realtime-logs/"
out = {}
client = Client()
response = client.get(url)
out["anonymous"] = [response.status_code, response["Location"]]
client.force_login(plain)
out["not_staff"] = client.get(url).status_code
client.force_login(staff)
response = client.get(url)
out["page"] = [response.status_code, "<title>Live tail" in response.content.decode()]
out["asset"] = client.get(url + "static/live.js").status_code
response = client.get(url + "api/live")
out["wsgi_live"] = [response.status_code, response.content.decode().strip()]

async def live():
    watchdog = threading.Timer(45, print_tasks, (asyncio.get_running_loop(),))
    watchdog.daemon = True
    watchdog.start()
    client = AsyncClient()
    await sync_to_async(client.force_login)(staff)  # aforce_login is Django 5 only
    response = await client.get(url + "api/live")
    received = []

    async def read():
        async for chunk in response.streaming_content:
            received.append(chunk)

    reading = asyncio.create_task(read())

    async def seen():
        while b"seen" not in b"".join(received):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(seen(), 10)
    reading.cancel()  # what Django's ASGI handler does when the browser goes away
    await asyncio.gather(reading, return_exceptions=True)
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me and "live-reader" not in t.get_name()]
    return [response.status_code, response["content-type"], b"".join(received).decode(), len(others)]

out["asgi_live"] = asyncio.run(live())
out["hello"] = client.get("/hello/").status_code

import tracestream.console.django_urls as mounted
settings.TRACESTREAM_REDIS_URL = os.environ["TRACESTREAM_REDIS_URL"]
try:
    importlib.reload(mounted)
except ValueError as error:
    out["misplaced"] = str(error)
print(json.dumps(out))
"""


def test_django_include_honours_login_and_staff_and_streams_under_asgi(stream: RedisHandle) -> None:
    """The console reads settings.TRACESTREAM's stream over the environment's (here a decoy)."""
    done = subprocess.run(
        [sys.executable, "-c", DJANGO_PROJECT],
        env=stream.env(HOST_STREAM=stream.stream, TRACESTREAM_STREAM=f"{stream.stream}:decoy"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "tracestream:" not in done.stderr, done.stderr
    out = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert out["anonymous"] == [302, "/login/?next=/monitoring/realtime-logs/"]
    assert out["not_staff"] == 403
    assert out["page"] == [200, True] and out["asset"] == 200
    assert out["wsgi_live"] == [501, "501: the live tail needs Django under ASGI (uvicorn, daphne)"]
    status, content_type, received, left_running = out["asgi_live"]
    assert status == 200 and content_type.startswith("text/event-stream")
    assert left_running == 0, "the console request ends when its client goes away"
    assert '"body":"seen <through> django"' in received and '"service":"django-host"' in received
    written = telemetry_of(stream)  # the console's own requests leave no span and no request record
    assert out["hello"] == 200 and "GET hello/" in written and "/hello/ 200" in written
    assert "/monitoring/realtime-logs" not in written
    assert out["misplaced"] == (
        "settings.TRACESTREAM_REDIS_URL is not read: put 'redis_url' in settings.TRACESTREAM, "
        "which the exporter and the console share"
    )


MOUNTED_AFTER_CONFIGURE = """
import json, logging, os, tracestream
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tracestream.console.fastapi_mount import mount
telemetry = tracestream.configure(redis_url=os.environ["APP_URL"], stream=os.environ["APP_STREAM"])
logging.getLogger("shop").warning("written where configure() said")
telemetry.force_flush()
app = FastAPI()
mount(app, dependencies=[])  # an app only its operators reach
with TestClient(app) as client:
    found = client.get("/monitoring/realtime-logs/api/search").json()["records"]
print(json.dumps([record["body"] for record in found]))
"""


def test_fastapi_mount_without_dependencies_says_what_it_needs() -> None:
    """The console shows every record: who may read them is the app's to say, out loud."""
    with pytest.raises(ConfigError, match=r"^mount\(\) needs dependencies= that guard the console"):
        mount(FastAPI())


def test_fastapi_mount_reads_where_configure_writes(stream: RedisHandle) -> None:
    """configure()'s arguments, not the environment's other stream, are where the records are."""
    env = stream.env(APP_URL=stream.url, APP_STREAM=stream.stream, TRACESTREAM_STREAM="somewhere-else")
    assert "written where configure() said" in run_json(MOUNTED_AFTER_CONFIGURE, env)
