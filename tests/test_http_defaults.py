"""The contrib settings configure() defaults, and what an excluded URL costs: nothing is written.

Each case runs a real app in a fresh interpreter (the contrib instrumentations read these
settings once per process) and reads back what reached Redis.
"""

from __future__ import annotations

import json

from tests.apps.http_checks import HTTP_SCOPE
from tests.support import ROOT, RedisHandle, run_python, wait_for
from tracestream.schema import SpanEntry

# The old conventions' names for what the stable ones call http.request.method and so on.
OLD_NAMES = {"http.method", "http.status_code", "http.target", "http.url", "net.peer.ip"}

FASTAPI_APP = """
import json, tracestream
from fastapi import FastAPI
from starlette.testclient import TestClient

telemetry = tracestream.configure()
app = FastAPI()

@app.get("/healthz")
async def healthz() -> str:
    return "ok"

@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}

client = TestClient(app)
answers = {path: dict(client.get(path).headers) for path in ("/healthz", "/items/3")}
telemetry.force_flush()
import sys
print(json.dumps(answers), file=sys.stderr)  # run_python returns stderr
"""

DJANGO_APP = """
import json, django
from django.test import Client
from django.test.utils import setup_test_environment

django.setup()  # the shop's AppConfig runs configure()
setup_test_environment()
client = Client()
answers = {path: dict(client.get(path).headers) for path in ("/orders/3/", "/")}
from tracestream.otel_setup.telemetry import installed
installed().force_flush()
import sys
print(json.dumps(answers), file=sys.stderr)  # run_python returns stderr
"""


def _run(code: str, stream: RedisHandle, **env: str) -> dict[str, dict[str, str]]:
    printed = run_python(code, stream.env(**env)).strip().splitlines()
    answers: dict[str, dict[str, str]] = json.loads(printed[-1])
    return answers


def _check(stream: RedisHandle, answers: dict[str, dict[str, str]], excluded: str, traced: str) -> SpanEntry:
    """The traced path has its span and record; the excluded one has neither, nor a trace header."""
    headers = {path: {name.lower(): value for name, value in h.items()} for path, h in answers.items()}
    assert "x-trace-id" not in headers[excluded]
    trace_id = headers[traced]["x-trace-id"]
    records = wait_for(lambda: [e for e in stream.logs() if e.scope == HTTP_SCOPE], what="the request record")
    spans = wait_for(lambda: [s for s in stream.spans() if s.kind == "SERVER"], what="the server span")
    assert [(e.trace_id, e.attributes["url.path"]) for e in records] == [(trace_id, traced)]
    assert [s.trace_id for s in spans] == [trace_id]
    return spans[0]


def test_fastapi_excluded_url_has_no_span_and_no_record(stream: RedisHandle) -> None:
    answers = _run(FASTAPI_APP, stream, OTEL_SERVICE_NAME="api", OTEL_PYTHON_FASTAPI_EXCLUDED_URLS="healthz")
    span = _check(stream, answers, "/healthz", "/items/3")
    # the stable HTTP conventions are the default: named as the request record's attributes
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["http.response.status_code"] == 200
    assert not OLD_NAMES & span.attributes.keys()


def test_other_span_readers_keep_contribs_names(stream: RedisHandle) -> None:
    """A console exporter beside the stream reads the names contrib sends by default."""
    _run(FASTAPI_APP, stream, OTEL_SERVICE_NAME="api", OTEL_TRACES_EXPORTER="redis_stream,console")
    spans = wait_for(lambda: [s for s in stream.spans() if s.kind == "SERVER"], what="the server spans")
    assert all(s.attributes["http.method"] == "GET" for s in spans), [s.attributes for s in spans]


def test_django_excluded_url_has_no_span_and_no_record(stream: RedisHandle) -> None:
    answers = _run(
        DJANGO_APP,
        stream,
        PYTHONPATH=str(ROOT / "examples"),
        DJANGO_SETTINGS_MODULE="shop.settings",
        OTEL_PYTHON_EXCLUDED_URLS="orders/",
    )
    span = _check(stream, answers, "/orders/3/", "/")
    assert span.attributes["http.request.method"] == "GET"
    assert not OLD_NAMES & span.attributes.keys()
