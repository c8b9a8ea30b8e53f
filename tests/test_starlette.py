"""Plain Starlette apps, shaped by Starlette's docs, under real servers: each request gets its
record in its trace, and the app answers and prints as it does without tracestream."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.apps.servers import bin_path, http_ready, launched, serve
from tests.support import RedisHandle, run_python_process, wait_for
from tracestream.embedded_redis import free_port

# Starlette's README app under the launcher, with each server's access log on.
SERVERS = {
    "uvicorn": (["uvicorn", "tests.apps.starlette_docs:app", "--port", "{port}"], "uvicorn.access"),
    "hypercorn": (
        ["hypercorn", "tests.apps.starlette_docs:app", "--bind", "127.0.0.1:{port}", "--access-logfile", "-"],
        "hypercorn.access",
    ),
}
GUIDE = ["uvicorn", "tests.apps.starlette_guide:app", "--port", "{port}"]
# What the guide app answers, with and without tracestream.
GUIDE_REQUESTS = ["/users/me", "/users/ann", "/checkout", "/numbers", "/missing"]
REQUEST = "http.server.request"  # a request record's event name


def _argv(command: list[str], port: int) -> list[str]:
    return [bin_path(command[0]), *(part.format(port=port) for part in command[1:])]


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_the_readme_app_under_the_launcher_gets_request_records(stream: RedisHandle, server: str) -> None:
    """The launcher leaves Starlette to configure(), as it does FastAPI: one server span a
    request, from contrib's ASGI middleware, around the request record."""
    command, access_logger = SERVERS[server]
    port = free_port()
    env = stream.env(
        OTEL_SERVICE_NAME="starlette", OTEL_LOGS_EXPORTER="redis_stream", OTEL_TRACES_EXPORTER="redis_stream"
    )
    with serve(launched(*_argv(command, port)), env, http_ready(f"http://127.0.0.1:{port}/")) as running:
        response = httpx.get(f"http://127.0.0.1:{port}/")
        assert response.json() == {"hello": "world"}
        assert httpx.get(f"http://127.0.0.1:{port}/missing").status_code == 404
        records = wait_for(
            lambda: [e for e in stream.logs() if e.body.startswith("GET /missing 404")],
            what="the 404's request record",
        )
        running.stop()
        assert "GET /missing" in running.output()  # the server's access line, printed as before
    [home] = [e for e in stream.logs() if e.trace_id == response.headers["x-trace-id"]]
    assert home.body.startswith("GET / 200")
    assert home.attributes["http.route"] == "/"
    servers = {s.trace_id: s for s in stream.spans() if s.kind == "SERVER"}
    assert home.trace_id in servers and records[0].trace_id in servers
    assert servers[home.trace_id].scope == "opentelemetry.instrumentation.asgi"
    assert [s.name for s in stream.spans() if s.trace_id == home.trace_id] == ["GET /"]
    assert not [e for e in stream.logs() if e.scope == access_logger]  # the records stand for them


def _guide_answers(port: int) -> tuple[list[tuple[int, str]], set[str]]:
    """What each request answered, and the trace ids their headers name."""
    answers, trace_ids = [], set()
    for path in GUIDE_REQUESTS:
        response = httpx.get(f"http://127.0.0.1:{port}{path}")
        answers.append((response.status_code, response.text))
        trace_ids.update(response.headers.get_list("x-trace-id"))
    return answers, trace_ids


def test_the_guide_app_answers_and_prints_as_without_tracestream(stream: RedisHandle) -> None:
    """configure() from the lifespan: the app had built its stack for the lifespan already."""
    port = free_port()
    bare_env = stream.env()
    with serve(_argv(GUIDE, port), bare_env, http_ready(f"http://127.0.0.1:{port}/users/me")) as bare:
        bare_answers, no_trace_ids = _guide_answers(port)
        wait_for(lambda: "payment service down" in bare.output(), what="the bare app's traceback")
        bare.stop()
        bare_output = bare.output()
    assert not stream.logs() and not no_trace_ids

    port = free_port()
    env = stream.env(OTEL_SERVICE_NAME="guide", STARLETTE_DOCS_TRACESTREAM="1")
    with serve(_argv(GUIDE, port), env, http_ready(f"http://127.0.0.1:{port}/users/me")) as running:
        answers, trace_ids = _guide_answers(port)
        wait_for(
            lambda: {e.trace_id for e in stream.logs() if e.trace_id in trace_ids} == trace_ids,
            what="the requests' records",
        )
        running.stop()
        output = running.output()

    assert answers == bare_answers
    assert answers[2] == (500, "<h1>Something broke</h1>") and answers[4] == (404, "<h1>Not here</h1>")
    for printed in (
        "Exception in ASGI application",
        "RuntimeError: payment service down",
        "Run on shutdown!",
    ):
        assert output.count(printed) == bare_output.count(printed) == 1, printed
    assert not [line for line in output.splitlines() if line.startswith("tracestream:")]

    assert len(trace_ids) == len(GUIDE_REQUESTS)
    logs = [e for e in stream.logs() if e.trace_id in trace_ids]
    records = {e.attributes.get("http.route"): e for e in logs if e.attributes.get("event.name") == REQUEST}
    assert set(records) == {"/users/me", "/users/{username}", "/checkout", "/numbers", None}
    failed = records["/checkout"]
    assert (failed.severity, failed.exception_type) == ("ERROR", "RuntimeError")
    assert records["/numbers"].attributes["http.response.body.size"] == len(answers[3][1])
    [looked_up] = [e for e in logs if e.body == "looked up ann"]
    assert looked_up.trace_id == records["/users/{username}"].trace_id
    assert not [e for e in stream.logs() if "Exception in ASGI application" in e.body]  # the record has it
    spans = [s for s in stream.spans() if s.trace_id in trace_ids]
    assert sorted(s.name for s in spans) == sorted(
        ["GET /users/me", "GET /users/{username}", "GET /checkout", "GET /numbers", "GET"]
    )
    [checkout] = [s for s in spans if s.name == "GET /checkout"]
    assert checkout.status == "ERROR" and [e["name"] for e in checkout.events] == ["exception"]
    assert {s.trace_id for s in spans} == {e.trace_id for e in records.values()}


# OpenTelemetry's Starlette instrumentation docs' example, then configure(), a request driven
# through the app in the process (httpx's ASGI transport).
INSTRUMENTED_FIRST = """
import asyncio, json
import httpx
from opentelemetry.instrumentation.starlette import StarletteInstrumentor
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

def home(request):
    return PlainTextResponse("hi")

def fail(request):
    raise RuntimeError("boom")

app = Starlette(routes=[Route("/", home), Route("/fail", fail)])
StarletteInstrumentor.instrument_app(app)

import tracestream
telemetry = tracestream.configure(service_name="instrumented")

async def main():
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        responses = [await client.get(path) for path in ("/", "/fail")]
    return [(response.status_code, response.headers.get("x-trace-id")) for response in responses]

answers = asyncio.run(main())
telemetry.force_flush()
print(json.dumps(answers))
"""


def test_an_app_instrumented_by_contrib_first_keeps_its_span_around_the_500(stream: RedisHandle) -> None:
    """Contrib's middleware sat inside the app's ServerErrorMiddleware: the 500 went out after
    its span ended, and there was no request record."""
    done = run_python_process(INSTRUMENTED_FIRST, stream.env())
    assert done.returncode == 0, done.stderr
    [(ok, home_trace), (failed, fail_trace)] = json.loads(done.stdout)
    assert (ok, failed) == (200, 500)
    spans = wait_for(lambda: len(stream.spans()) >= 2 and stream.spans(), what="both spans")
    assert sorted((s.trace_id, s.scope, s.status) for s in spans) == sorted(
        [
            (home_trace, "opentelemetry.instrumentation.starlette", "UNSET"),
            (fail_trace, "opentelemetry.instrumentation.starlette", "ERROR"),
        ]
    )
    records = {e.trace_id: e for e in stream.logs() if e.attributes.get("event.name") == REQUEST}
    assert (records[fail_trace].severity, records[fail_trace].exception_type) == ("ERROR", "RuntimeError")
    assert records[home_trace].body.startswith("GET / 200")
