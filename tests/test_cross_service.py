"""The demo stack end to end, through `tracestream demo`: Django (gunicorn -w 2) -> FastAPI (uvicorn)
-> Celery (prefork) + beat, all under the real launcher. One checkout is one trace across the
three services, and Ctrl-C stops every process."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests.support import ROOT, VENV_BIN, RedisHandle, interruptible, wait_for
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.query import TraceRecords, fetch_trace


@pytest.fixture(scope="module")
def users_redis() -> Iterator[EmbeddedRedis]:
    """The Redis the shell the demo runs in is set up for: an app's own."""
    with EmbeddedRedis() as server:
        yield server


DEMO_PASSWORD = "s3cret-demo-pw"


@pytest.fixture(scope="module")
def demo_run(
    redis_server: EmbeddedRedis, users_redis: EmbeddedRedis
) -> Iterator[tuple[str, RedisHandle, str]]:
    """Runs until the stack reports it keeps running, then gets Ctrl-C (SIGINT). The shell is set
    up for an app of the user's, whose Redis, broker and collector the demo must leave alone. The
    Redis it is given wants a password, which it must never print."""
    with redis_server.client() as client:
        client.execute_command("ACL", "SETUSER", "demo", "on", f">{DEMO_PASSWORD}", "~*", "&*", "+@all")
    url = f"redis://demo:{DEMO_PASSWORD}@127.0.0.1:{redis_server.port}/12"
    stream = RedisHandle(url=url, stream="test:demo")
    command = [str(VENV_BIN / "tracestream"), "demo", "--web-port", "0", "--api-port", "0"]
    command += ["--redis-url", stream.url, "--stream", stream.stream]
    env = {
        **os.environ,
        "COLUMNS": "200",
        "TRACESTREAM_REDIS_URL": users_redis.url,
        "TRACESTREAM_STREAM": "app",
        "CELERY_BROKER_URL": f"{users_redis.url.rsplit('/', 1)[0]}/1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9/",
        "OTEL_TRACES_EXPORTER": "otlp",
    }
    demo = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=interruptible,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or ()), daemon=True)
    reader.start()
    try:

        def running() -> bool:
            assert demo.poll() is None, "".join(lines)
            return any("Ctrl-C stops every process" in line for line in lines)

        wait_for(running, timeout=120, what="the demo stack to run")
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(60)
        reader.join(5)
    output = "".join(lines)
    assert demo.returncode == 0, output
    trace_ids = re.findall(r"^trace_id=([0-9a-f]{32})$", output, re.MULTILINE)
    assert trace_ids, output
    yield trace_ids[0], stream, output


def _trace(stream: RedisHandle, trace_id: str) -> TraceRecords:
    with stream.client() as client:
        return fetch_trace(client, stream.stream, trace_id)


def test_one_trace_spans_django_fastapi_and_celery(demo_run: tuple[str, RedisHandle, str]) -> None:
    trace_id, stream, _ = demo_run
    records = _trace(stream, trace_id)
    spans = {(s.service, s.kind): s for s in records.spans}
    web, client = spans[("shop-web", "SERVER")], spans[("shop-web", "CLIENT")]
    api, producer = spans[("inventory-api", "SERVER")], spans[("inventory-api", "PRODUCER")]
    task = spans[("shop-worker", "CONSUMER")]
    # one chain of parents: Django view -> requests call -> FastAPI route -> enqueue -> task run
    assert client.parent_span_id == web.span_id
    assert api.parent_span_id == client.span_id
    assert producer.parent_span_id == api.span_id
    assert task.parent_span_id == producer.span_id
    assert web.name == "GET checkout/<int:order_id>/" and api.name == "POST /reservations/{order_id}"
    assert task.name == "run/tasks.reserve_stock"

    bodies = {(e.service, e.body) for e in records.logs}
    assert ("shop-web", "checkout of order 1042 started") in bodies
    assert ("inventory-api", "reserving BOOK-1 for order 1042") in bodies
    assert ("shop-worker", "reserving BOOK-1 for order 1042 in the warehouse") in bodies
    requests_seen = [e for e in records.logs if e.scope == "tracestream.http"]
    assert sorted((e.service, e.attributes["http.response.status_code"]) for e in requests_seen) == [
        ("inventory-api", 200),
        ("shop-web", 200),
    ]
    states = [e.attributes["celery.task.state"] for e in records.logs if e.scope == "tracestream.celery"]
    assert states == ["received", "started", "succeeded"]


def test_the_demo_writes_nothing_where_the_shell_points(
    demo_run: tuple[str, RedisHandle, str], users_redis: EmbeddedRedis
) -> None:
    """It wrote to TRACESTREAM_REDIS_URL's Redis, and its worker took CELERY_BROKER_URL's tasks."""
    assert users_redis.client().info("keyspace") == {}


def test_demo_traffic_includes_a_404_and_a_500(demo_run: tuple[str, RedisHandle, str]) -> None:
    _, stream, _ = demo_run
    records = [e for e in stream.logs() if e.scope == "tracestream.http" and e.service == "shop-web"]
    levels = {
        e.attributes["url.path"]: (e.attributes["http.response.status_code"], e.severity) for e in records
    }
    assert levels["/no-such-page/"] == (404, "WARN")
    assert levels["/broken/"] == (500, "ERROR")
    assert [e for e in stream.logs() if e.service == "shop-beat"], "beat's own lines reach the stream"


def test_ctrl_c_stops_every_child_process(demo_run: tuple[str, RedisHandle, str]) -> None:
    _, _, output = demo_run
    pids = [int(pid) for pid in re.findall(r": pid (\d+), output in", output)]
    assert len(pids) == 5, output  # the four launched services and the console
    assert "all demo processes stopped" in output

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    assert all(gone(pid) for pid in pids)


def test_the_demo_prints_its_console_url_and_commands_that_find_its_data(
    demo_run: tuple[str, RedisHandle, str],
) -> None:
    """The console answered before the demo said it was running; the commands are copied from its
    output exactly, and run where `make demo` runs, with TRACESTREAM_REDIS_URL set as it says,
    since its URL holds a password, which nothing printed."""
    trace_id, stream, output = demo_run
    assert DEMO_PASSWORD not in output
    shown = stream.url.replace(DEMO_PASSWORD, "***")
    assert f"  with TRACESTREAM_REDIS_URL set to {shown}, its password as given:" in output
    assert re.search(r"^  console  http://127\.0\.0\.1:\d+/$", output, re.MULTILINE), output
    commands = [shlex.split(line) for line in re.findall(r"^  \$ (.+)$", output, re.MULTILINE)]
    assert [command[1] for command in commands] == ["trace", "search", "tail", "services"], output
    env = {name: value for name, value in os.environ.items() if not name.startswith("TRACESTREAM_")}
    env.update(COLUMNS="200", TRACESTREAM_REDIS_URL=stream.url)
    done = {
        command[1]: subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        for command in commands
        if command[1] != "tail"  # follows until Ctrl-C; it reads what search reads
    }
    assert all(result.returncode == 0 for result in done.values()), done
    assert trace_id in commands[0] and "run/tasks.reserve_stock" in done["trace"].stdout
    assert "IntegrityError" in done["search"].stdout  # the 500, with its stack trace under it
    assert "    Traceback (most recent call last):" in done["search"].stdout
    assert "shop-worker" in done["services"].stdout
