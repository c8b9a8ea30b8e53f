"""A console mounted into an instrumented app keeps its own requests out of the stream it shows.

Real apps configured with `configure()`: FastAPI under uvicorn, Django through its own handler.
Each also serves a route of its own, whose span and request record prove the app is traced.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest

from tests.support import ROOT, RedisHandle, run_python, wait_for
from tracestream.embedded_redis import free_port

PREFIX = "/monitoring/realtime-logs"
# `configure()` before or after FastAPI is imported: the app class is then contrib's subclass, or ours.
FASTAPI_APP = """
import sys
import uvicorn
from tracestream import configure

if sys.argv[2] == "configure-first":
    configure(service_name="fastapi-host")
from fastapi import FastAPI
from tracestream.console.fastapi import mount

configure(service_name="fastapi-host")  # returns the first call's, if any
app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "world"}


mount(app)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
# The console's pages, assets and API (a record it does not have among them), as (path, status).
CONSOLE_REQUESTS = {
    "/": 200,
    "/search": 200,
    "/static/console.js": 200,
    "/api/search?text=x": 200,
    "/api/services": 200,
    "/api/record/1-0": 404,
}


def telemetry_of(stream: RedisHandle) -> str:
    """Every span and record in the stream, as one text to search."""
    spans = [f"{span.name} {span.attributes}" for span in stream.spans()]
    logs = [f"{entry.body} {entry.attributes}" for entry in stream.logs()]
    return "\n".join(spans + logs)


@pytest.mark.parametrize("order", ["configure-first", "fastapi-first"])
def test_fastapi_mounted_console_requests_leave_no_span_or_record(stream: RedisHandle, order: str) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", FASTAPI_APP, str(port), order],
        env=stream.env(),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            assert server.poll() is None, server.stderr and server.stderr.read()
            try:
                return httpx.get(base + "/hello").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, timeout=20, what="the FastAPI app")
        with httpx.Client(base_url=base + PREFIX) as client:
            assert {path: client.get(path).status_code for path in CONSOLE_REQUESTS} == CONSOLE_REQUESTS
            assert httpx.get(base + PREFIX).status_code == 308
            with client.stream("GET", "/api/live") as live:
                assert next(live.iter_text()).startswith("retry:")
    finally:
        server.send_signal(signal.SIGTERM)  # flushes what the app wrote, then ends by the signal
        server.wait(20)
    assert server.returncode in (0, -signal.SIGTERM), server.stderr and server.stderr.read()
    written = telemetry_of(stream)
    assert "GET /hello" in written and "/hello 200" in written, "the app's own request is traced"
    assert PREFIX not in written


DJANGO_APP = r"""
import os, tempfile
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
    TRACESTREAM={"service_name": "django-host"},
)
django.setup()
from django.http import HttpResponse
from django.urls import include, path

urlpatterns = [
    path("hello/", lambda request: HttpResponse("hello")),
    path("monitoring/realtime-logs/", include("tracestream.console.django")),
]

from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from tracestream.otel_setup.telemetry import installed

call_command("migrate", verbosity=0)
client = Client()
assert client.get("/monitoring/realtime-logs/").status_code == 302  # to the login page
client.force_login(User.objects.create_user("staff", password="pw", is_staff=True))
for path in ["", "search", "static/console.js", "api/search?text=x", "api/services", "api/record/1-0"]:
    client.get("/monitoring/realtime-logs/" + path)
assert client.get("/hello/").status_code == 200
installed().force_flush()
"""


def test_django_mounted_console_requests_leave_no_span_or_record(stream: RedisHandle) -> None:
    run_python(DJANGO_APP, stream.env())
    written = telemetry_of(stream)  # the app flushed before it ended
    assert "GET hello/" in written and "/hello/ 200" in written, "the app's own request is traced"
    assert "/monitoring/realtime-logs" not in written
