"""Apps tracestream writes no request record for: a request record stands for a server's
access line only where one is written, so these apps' requests reach the stream as the lines
their servers log, once each, in the request's trace when the launcher traced it."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.apps.servers import assert_unrecorded_and_unsaid, bin_path, http_ready, launched, serve
from tests.support import RedisHandle, wait_for
from tracestream.embedded_redis import free_port


def test_a_flask_apps_requests_are_its_servers_access_lines(stream: RedisHandle) -> None:
    """Flask's quickstart app under gunicorn and the launcher, gunicorn's access log on: one line
    a request in the stream, printed as before, and one line saying why there are no records."""
    port = free_port()
    env = stream.env(
        OTEL_SERVICE_NAME="flask", OTEL_LOGS_EXPORTER="redis_stream", OTEL_TRACES_EXPORTER="redis_stream"
    )
    command = launched(
        bin_path("gunicorn"),
        "tests.apps.flask_docs:app",
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        "-",
    )
    with serve(command, env, http_ready(f"http://127.0.0.1:{port}/")) as running:
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "<p>Hello, World!</p>"
        assert httpx.get(f"http://127.0.0.1:{port}/missing").status_code == 404
        lines = wait_for(
            lambda: [e for e in stream.logs() if e.scope == "gunicorn.access" and "GET /missing" in e.body],
            what="the 404's access line in the stream",
        )
        running.stop()
        output = running.output()
    assert len(lines) == 1 and output.count("GET /missing") == 1
    assert [line for line in output.splitlines() if line.startswith("tracestream:")] == [
        _unintegrated_line("flask", "upstream's Flask instrumentation (opentelemetry-instrument loads it)")
    ]
    assert not [e for e in stream.logs() if e.attributes.get("event.name") == "http.server.request"]


LAUNCHED = {"OTEL_LOGS_EXPORTER": "redis_stream", "OTEL_TRACES_EXPORTER": "redis_stream"}
# The OpenTelemetry docs' environment, where upstream's distro may win: it loads upstream's
# Django instrumentation, which imports Django's request handlers in a process that serves none.
UPSTREAM_DISTRO = {
    **LAUNCHED,
    "OTEL_PYTHON_DISTRO": "distro",
    "OTEL_PYTHON_CONFIGURATOR": "configurator",
    "OTEL_METRICS_EXPORTER": "none",
}


@pytest.mark.parametrize("setup", ["configure", "launcher", "launcher-upstream-distro"])
def test_a_plain_asgi_apps_requests_are_said_to_get_no_records_once(stream: RedisHandle, setup: str) -> None:
    """uvicorn's Quickstart app is no framework's: nothing says so as it is made, so the first
    access line no record stood for says it, once; the lines reach the stream as logged."""
    port = free_port()
    env = stream.env(OTEL_SERVICE_NAME="plain", UVICORN_QUICKSTART_TRACESTREAM="1")
    command = [bin_path("uvicorn"), "tests.apps.uvicorn_quickstart:app", "--port", str(port)]
    if setup != "configure":
        env = stream.env(OTEL_SERVICE_NAME="plain", **(LAUNCHED if setup == "launcher" else UPSTREAM_DISTRO))
        command = launched(*command)
    with serve(command, env, http_ready(f"http://127.0.0.1:{port}/")) as running:
        for path in ("/", "/again"):
            assert httpx.get(f"http://127.0.0.1:{port}{path}").text == "Hello, world!"
        wait_for(
            lambda: [e for e in stream.logs() if e.scope == "uvicorn.access" and "GET /again" in e.body],
            what="the second request's access line in the stream",
        )
        running.stop()
        output = running.output()
    assert [line for line in output.splitlines() if line.startswith("tracestream:")] == [
        "tracestream: WARNING uvicorn.access logged a request that got no request record: tracestream "
        "records the requests of FastAPI, Starlette and Django apps, and this app is none of them; its "
        "log lines, access lines included, reach the stream"
    ]


def test_a_fastapi_app_whose_integration_is_turned_off_says_nothing_of_unrecorded_requests(
    stream: RedisHandle,
) -> None:
    """`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fastapi` is the user's choice: the line said this
    app was none of the frameworks tracestream records, which it is."""
    port = free_port()
    env = stream.env(OTEL_SERVICE_NAME="api", OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="fastapi", **LAUNCHED)
    command = launched(bin_path("uvicorn"), "tests.apps.zero_code_api:app", "--port", str(port))
    assert_unrecorded_and_unsaid(
        stream,
        command,
        env,
        f"http://127.0.0.1:{port}/",
        ready_url=f"http://127.0.0.1:{port}/missing",
        access_scope="uvicorn.access",
    )


def test_a_fastapi_apps_access_lines_stay_out_under_a_quieter_server(stream: RedisHandle) -> None:
    """The request record stands for the line the app's level skips: it is neither printed
    nor in the stream, and the record is."""
    port = free_port()
    env = stream.env(
        OTEL_SERVICE_NAME="api", OTEL_LOGS_EXPORTER="redis_stream", OTEL_TRACES_EXPORTER="redis_stream"
    )
    command = [
        bin_path("uvicorn"),
        "tests.apps.zero_code_api:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with serve(launched(*command), env, http_ready(f"http://127.0.0.1:{port}/missing")) as running:
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
        wait_for(
            lambda: [e for e in stream.logs() if e.body.startswith("GET / 200")], what="the request record"
        )
        running.stop()
        assert "GET / " not in running.output() and "Started server process" not in running.output()
    assert not [e for e in stream.logs() if e.scope == "uvicorn.access"]


# (command, path, its answer, upstream's instrumentation): each framework's own quickstart app
QUICKSTARTS = {
    "aiohttp.web": ("python -m tests.apps.aiohttp_docs", "/ada", "Hello, ada", "aiohttp-server"),
    "tornado.web": ("python -m tests.apps.tornado_docs", "/", "Hello, world", "Tornado"),
    "falcon": ("gunicorn tests.apps.falcon_docs:app -b 127.0.0.1:{port}", "/things", "Two things", "Falcon"),
}


@pytest.mark.parametrize("framework", sorted(QUICKSTARTS))
def test_a_web_framework_we_do_not_integrate_says_why_it_has_no_request_records(
    stream: RedisHandle, framework: str
) -> None:
    """Its quickstart app under the launcher: upstream's instrumentation traces each request,
    and one line says why there is no request record."""
    command, path, answer, instrumentation = QUICKSTARTS[framework]
    port = free_port()
    env = stream.env(
        OTEL_SERVICE_NAME=framework,
        OTEL_LOGS_EXPORTER="redis_stream",
        OTEL_TRACES_EXPORTER="redis_stream",
        OTEL_METRICS_EXPORTER="none",
        PORT=str(port),
    )
    program, *args = command.format(port=port).split()
    with serve(
        launched(bin_path(program), *args), env, http_ready(f"http://127.0.0.1:{port}{path}")
    ) as running:
        assert answer in httpx.get(f"http://127.0.0.1:{port}{path}").text
        wait_for(stream.spans, what="upstream's span of the request")
        running.stop()
        output = running.output()
    assert [line for line in output.splitlines() if line.startswith("tracestream:")] == [
        _unintegrated_line(
            framework, f"upstream's {instrumentation} instrumentation (opentelemetry-instrument loads it)"
        )
    ]
    assert not [e for e in stream.logs() if e.attributes.get("event.name") == "http.server.request"]


def _unintegrated_line(framework: str, spans_from: str) -> str:
    return (
        f"tracestream: WARNING {framework} is in use, which tracestream does not integrate: its requests "
        f"get no request records, and spans only from {spans_from}; the log lines of its apps reach the "
        "stream"
    )


LITESTAR_SPANS = "Litestar's OpenTelemetryPlugin, which the app adds"
QUART_SPANS = "upstream's OpenTelemetryMiddleware (ASGI), which the app adds"


@pytest.mark.parametrize(
    ("framework", "command", "answer", "spans_from"),
    [
        ("litestar", "uvicorn tests.apps.litestar_docs:app --port {port}", "Hello, world!", LITESTAR_SPANS),
        # Quart's deployment docs: hypercorn logs no access line unless asked
        ("quart", "hypercorn tests.apps.quart_docs:app --bind 127.0.0.1:{port}", "hello", QUART_SPANS),
    ],
)
def test_an_app_of_a_framework_with_no_access_line_to_say_it_at_says_why_it_has_no_records(
    stream: RedisHandle, framework: str, command: str, answer: str, spans_from: str
) -> None:
    """Each framework's docs app with configure(), served as its docs serve it: one line, as the
    app is made, whether or not the server logs an access line."""
    port = free_port()
    env = stream.env(OTEL_SERVICE_NAME=framework, **{f"{framework.upper()}_DOCS_TRACESTREAM": "1"})
    program, *args = command.format(port=port).split()
    with serve([bin_path(program), *args], env, http_ready(f"http://127.0.0.1:{port}/")) as running:
        assert httpx.get(f"http://127.0.0.1:{port}/").text == answer
        running.stop()
        output = running.output()
    assert [line for line in output.splitlines() if line.startswith("tracestream:")] == [
        _unintegrated_line(framework, spans_from)
    ]


def test_quart_run_under_the_launcher_is_no_span_its_requests_are_children_of(stream: RedisHandle) -> None:
    """`quart run` is a click command: the click instrumentation's span around it would hold
    every request's log lines (hypercorn's access lines, logged through the app's logger) in
    one trace that ends only with the server."""
    port = free_port()
    env = stream.env(OTEL_SERVICE_NAME="quart", **LAUNCHED)
    command = launched(bin_path("quart"), "--app", "tests.apps.quart_docs:app", "run", "--port", str(port))
    with serve(command, env, http_ready(f"http://127.0.0.1:{port}/")) as running:
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "hello"
        lines = wait_for(
            lambda: [e for e in stream.logs() if e.scope == "tests.apps.quart_docs" and " GET / " in e.body],
            what="the access lines in the stream",
        )
        running.stop()
        output = running.output()
    assert [(line.trace_id, line.span_id) for line in lines] == [("", "")] * len(lines)
    assert [line for line in output.splitlines() if line.startswith("tracestream:")] == [
        _unintegrated_line("quart", QUART_SPANS)
    ]


def test_werkzeugs_coloured_access_lines_are_stored_as_the_terminal_shows_them(stream: RedisHandle) -> None:
    """`flask run`, as Flask's quickstart starts the app: Werkzeug colours a 404's request line
    within the message. The terminal keeps its colours; the stream keeps the text, so a search
    for what the terminal shows finds the line."""
    port = free_port()
    command = launched(bin_path("flask"), "--app", "tests.apps.flask_docs", "run", "--port", str(port))
    env = stream.env(OTEL_SERVICE_NAME="flask", **LAUNCHED)
    with serve(command, env, http_ready(f"http://127.0.0.1:{port}/")) as running:
        assert httpx.get(f"http://127.0.0.1:{port}/missing").status_code == 404
        lines = wait_for(
            lambda: [e.body for e in stream.logs() if e.scope == "werkzeug" and "/missing" in e.body],
            what="the 404's access line in the stream",
        )
        running.stop()
        output = running.output()
    assert len(lines) == 1
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "GET /missing HTTP/1\.1" 404 -', lines[0]), lines
    assert '"\x1b[33mGET /missing HTTP/1.1\x1b[0m" 404 -' in output
