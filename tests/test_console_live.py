"""The console's live feed and auth, against a real `tracestream console` process and redis-server."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.support import ROOT, VENV_BIN, RedisHandle, wait_for
from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.exporters import RedisStreamLogExporter, RedisStreamSpanExporter
from tracestream.settings import Settings

TOKEN = "console-test-token"


class ConsoleProcess:
    """`tracestream console` in a child process; restartable on the same port."""

    def __init__(
        self,
        handle: RedisHandle,
        token: str | None = TOKEN,
        host: str = "127.0.0.1",
        args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.handle = handle
        self.args = args
        self.token = token
        self.host = host
        self.extra_env = env
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        binary = str(VENV_BIN / "tracestream")
        return [binary, "console", "--host", self.host, "--port", str(self.port), *self.args]

    def env(self) -> dict[str, str]:
        env = self.handle.env(**self.extra_env)
        env.pop("TRACESTREAM_CONSOLE_TOKEN", None)
        if self.token:
            env["TRACESTREAM_CONSOLE_TOKEN"] = self.token
        return env

    @classmethod
    @contextlib.contextmanager
    def on_fresh_stream(cls, redis_server: EmbeddedRedis) -> Iterator[ConsoleProcess]:
        """A console of its own over a stream of its own, for one test module."""
        process = cls(RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")).start()
        try:
            yield process
        finally:
            process.stop()

    def start(self, stderr: IO[str] | int = subprocess.PIPE) -> ConsoleProcess:
        """`stderr`: a file to keep what the console logs, when a test reads it."""
        self.process = subprocess.Popen(self.command(), env=self.env(), cwd=ROOT, stderr=stderr, text=True)
        try:
            wait_for(self._answers, timeout=15, what=f"console on port {self.port}")
        except BaseException:  # a console slow to start must not outlive the test
            self.stop(kill=True)
            raise
        return self

    def _answers(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.process and self.process.stderr
        try:
            httpx.get(self.url, timeout=0.5)
        except httpx.TransportError:
            return False
        return True

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(10)
        self.process = None

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}


class Emitter:
    """Writes through the real exporters as the service `service` would, one export per call."""

    def __init__(self, handle: RedisHandle, service: str, redis_timeout: float = 2.0) -> None:
        settings = Settings.load(
            environ={}, redis_url=handle.url, stream=handle.stream, redis_timeout=redis_timeout
        )
        self.resource = Resource({"service.name": service})
        self.exporter = RedisStreamLogExporter(settings)
        self.tracer_provider = TracerProvider(resource=self.resource, shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(RedisStreamSpanExporter(settings)))
        self.tracer = self.tracer_provider.get_tracer("tests.console")

    def log(
        self,
        body: str,
        severity: SeverityNumber = SeverityNumber.INFO,
        attributes: dict[str, Any] | None = None,
        span: Span | None = None,
        timestamp_ns: int | None = None,
    ) -> None:
        context = span.get_span_context() if span else None
        record = LogRecord(
            timestamp=timestamp_ns or time.time_ns(),
            observed_timestamp=time.time_ns(),
            severity_text=severity.name,
            severity_number=severity,
            body=body,
            attributes=attributes or {},
            trace_id=context.trace_id if context else 0,
            span_id=context.span_id if context else 0,
        )
        result = self.exporter.export([ReadableLogRecord(log_record=record, resource=self.resource)])
        assert result is LogRecordExportResult.SUCCESS


class Viewer:
    """An SSE client on a thread, collecting (stream id, record) pairs and `status` events."""

    def __init__(self, console: ConsoleProcess, headers: dict[str, str] | None = None, **params: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.statuses: list[dict[str, str]] = []
        self.connected = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        self._request = self._client.build_request(
            "GET", console.url + "api/live", params=params, headers={**console.headers(), **(headers or {})}
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.connected.wait(10), "viewer never connected"

    def _run(self) -> None:
        event_id, event_type = "", ""
        try:
            response = self._client.send(self._request, stream=True)
            self.status = response.status_code
            self.connected.set()
            for line in response.iter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("event: "):
                    event_type = line[7:]
                elif line.startswith("data: ") and event_type == "status":
                    self.statuses.append(orjson.loads(line[6:]))
                elif line.startswith("data: "):
                    self.events.append((event_id, orjson.loads(line[6:])))
                elif not line:
                    event_type = ""
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test

    def bodies(self) -> list[str]:
        return [record["body"] for _, record in self.events]

    def close(self) -> None:
        self._client.close()


@pytest.fixture(scope="module")
def console(redis_server: EmbeddedRedis) -> Iterator[ConsoleProcess]:
    with ConsoleProcess.on_fresh_stream(redis_server) as process:
        yield process


@dataclass
class Watch:
    """A viewer following one test's records (those carrying `marker`), and a service writing them."""

    marker: str
    viewer: Viewer
    emitter: Emitter


@pytest.fixture
def watch(console: ConsoleProcess) -> Iterator[Watch]:
    marker = uuid.uuid4().hex[:8]
    viewer = Viewer(console, text=marker)
    yield Watch(marker, viewer, Emitter(console.handle, "orders"))
    viewer.close()


def _live_readers(handle: RedisHandle) -> list[dict[str, Any]]:
    with handle.client() as client:
        return [c for c in client.client_list() if c["name"] == f"tracestream-console-live:{handle.stream}"]


def test_every_viewer_gets_every_record_once_through_one_shared_reader(console: ConsoleProcess) -> None:
    viewers = [Viewer(console) for _ in range(5)]
    emitter = Emitter(console.handle, "orders")
    marker = uuid.uuid4().hex[:8]
    try:
        for i in range(20):
            emitter.log(f"{marker} {i}")
        expected = [f"{marker} {i}" for i in range(20)]
        for viewer in viewers:
            wait_for(lambda v=viewer: expected[-1] in v.bodies(), timeout=5, what="all records at a viewer")
            assert [b for b in viewer.bodies() if b.startswith(marker)] == expected
        assert len(_live_readers(console.handle)) == 1, "one Redis reader for all viewers"
    finally:
        for viewer in viewers:
            viewer.close()


def test_reconnect_after_last_event_id_replays_the_gap_without_duplicates(console: ConsoleProcess) -> None:
    emitter = Emitter(console.handle, "orders")
    marker = uuid.uuid4().hex[:8]
    first = Viewer(console, text=marker)
    emitter.log(f"{marker} before")
    wait_for(lambda: first.bodies() == [f"{marker} before"], timeout=5, what="the first record")
    last_id = first.events[-1][0]
    first.close()
    for i in range(3):
        emitter.log(f"{marker} while away {i}")
    again = Viewer(console, headers={"last-event-id": last_id}, text=marker)
    emitter.log(f"{marker} after")
    try:
        wait_for(lambda: f"{marker} after" in again.bodies(), timeout=5, what="the live record")
        assert again.bodies() == [f"{marker} while away {i}" for i in range(3)] + [f"{marker} after"]
    finally:
        again.close()


def test_filters_apply_on_the_server(console: ConsoleProcess) -> None:
    marker = uuid.uuid4().hex[:8]
    viewer = Viewer(console, service="billing", severity="WARN", attr="tenant=acme", text=marker)
    billing, orders = Emitter(console.handle, "billing"), Emitter(console.handle, "orders")
    try:
        orders.log(f"{marker} other service", SeverityNumber.ERROR, {"tenant": "acme"})
        billing.log(f"{marker} too quiet", SeverityNumber.INFO, {"tenant": "acme"})
        billing.log(f"{marker} other tenant", SeverityNumber.ERROR, {"tenant": "zeta"})
        billing.log("unrelated text", SeverityNumber.ERROR, {"tenant": "acme"})
        billing.log(f"{marker} shown", SeverityNumber.ERROR, {"tenant": "acme"})
        wait_for(lambda: viewer.bodies(), timeout=5, what="the matching record")
        assert viewer.bodies() == [f"{marker} shown"]
    finally:
        viewer.close()


def test_shared_reader_survives_a_killed_redis_connection(watch: Watch, console: ConsoleProcess) -> None:
    watch.emitter.log(f"{watch.marker} 1")
    wait_for(lambda: watch.viewer.bodies() == [f"{watch.marker} 1"], timeout=5, what="the first record")
    with console.handle.client() as client:
        (reader,) = _live_readers(console.handle)
        client.client_kill_filter(_id=reader["id"])
    watch.emitter.log(f"{watch.marker} 2")
    watch.emitter.log(f"{watch.marker} 3")
    wait_for(lambda: len(watch.viewer.bodies()) == 3, timeout=8, what="records after the reader reconnected")
    assert watch.viewer.bodies() == [f"{watch.marker} {i}" for i in (1, 2, 3)]


def test_bad_filters_and_ids_get_a_clear_400(console: ConsoleProcess) -> None:
    response = httpx.get(console.url + "api/live", params={"severity": "LOUD"}, headers=console.headers())
    assert response.status_code == 400 and "unknown severity 'LOUD'" in response.text
    response = httpx.get(console.url + "api/live", headers={**console.headers(), "last-event-id": "x"})
    assert response.status_code == 400 and "invalid stream id 'x'" in response.text


def test_console_is_read_only(console: ConsoleProcess) -> None:
    paths = ("", "search", "api/live", "api/search", "api/services", "api/stats", "api/trace/" + "a" * 32)
    for path in paths:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            response = httpx.request(method, console.url + path, headers=console.headers())
            assert response.status_code == 405, (method, path)


def test_token_is_required_by_header_or_cookie(console: ConsoleProcess) -> None:
    assert httpx.get(console.url).status_code == 401
    assert httpx.get(console.url, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(console.url, headers=console.headers()).status_code == 200
    with httpx.Client(follow_redirects=True) as client:
        assert client.get(console.url, params={"token": "wrong"}).status_code == 401
        swap = client.get(console.url, params={"token": TOKEN})
        assert swap.status_code == 200 and swap.url.query == b"", "the token leaves the address bar"
        assert "httponly" in swap.history[0].headers["set-cookie"].lower()
        assert client.get(console.url + "static/live.js").status_code == 200
        ((name, kept),) = client.cookies.items()
    assert TOKEN not in kept + name, "a browser keeps a value made from the token, not the token"
    assert httpx.get(console.url, headers={"authorization": f"Bearer {kept}"}).status_code == 401
    assert httpx.get(console.url, cookies={name: TOKEN}).status_code == 401
    assert httpx.get(console.url, cookies={name: kept}).status_code == 200


def test_refuses_to_listen_beyond_loopback_without_a_token(stream: RedisHandle) -> None:
    process = ConsoleProcess(stream, token=None, host="0.0.0.0")
    done = subprocess.run(process.command(), env=process.env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "tracestream: refusing to serve the console on 0.0.0.0 without a token: "
        "set TRACESTREAM_CONSOLE_TOKEN or bind 127.0.0.1"
    ]


def test_refuses_to_listen_beyond_loopback_with_a_short_token(stream: RedisHandle) -> None:
    """Nothing slows a guesser down: `x` as the token was served to the network."""
    process = ConsoleProcess(stream, token="x" * 15, host="0.0.0.0")
    done = subprocess.run(process.command(), env=process.env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "tracestream: refusing to serve the console on 0.0.0.0 with a token of 15 characters: "
        "TRACESTREAM_CONSOLE_TOKEN needs 16 or more (openssl rand -hex 16 makes one)"
    ]


@pytest.mark.parametrize("names", [(), ("--allowed-host", "logs.internal")], ids=["no name", "a name"])
def test_binding_every_address_without_a_name_to_answer_by_says_so(
    stream: RedisHandle, tmp_path: Path, names: tuple[str, ...]
) -> None:
    """`--host 0.0.0.0` with a token, as docs/console.md showed it, answered 421 to every other
    machine until `--allowed-host` named how they open it, and nothing said so."""
    with (tmp_path / "stderr").open("w") as stderr:
        ConsoleProcess(stream, host="0.0.0.0", args=names).start(stderr=stderr).stop()
    said = (tmp_path / "stderr").read_text().splitlines()
    assert said == ([] if names else [
        "tracestream: the console binds 0.0.0.0 and answers other machines only by the names "
        "--allowed-host gives (none given): add the name or address they open it by"
    ])  # fmt: skip


def test_loopback_without_a_token_is_open(stream: RedisHandle) -> None:
    process = ConsoleProcess(stream, token=None).start()
    try:
        assert httpx.get(process.url).status_code == 200
    finally:
        process.stop()


def test_search_pages_newest_first_with_every_filter(console: ConsoleProcess) -> None:
    marker = uuid.uuid4().hex[:8]
    emitter = Emitter(console.handle, "search")
    for i in range(5):
        emitter.log(f"{marker} {i}", SeverityNumber.ERROR, {"tenant": "acme"})
    emitter.log(f"{marker} quiet", SeverityNumber.INFO, {"tenant": "acme"})
    params = {"text": marker, "service": "search", "severity": "ERROR", "attr": "tenant=acme", "since": "1h"}
    bodies: list[str] = []
    cursor = ""
    for _ in range(3):
        response = httpx.get(
            console.url + "api/search",
            params={**params, "limit": "2", "cursor": cursor},
            headers=console.headers(),
        )
        assert response.status_code == 200, response.text
        page = response.json()
        bodies += [record["body"] for record in page["records"]]
        cursor = page["next_cursor"] or ""
    assert bodies == [f"{marker} {i}" for i in (4, 3, 2, 1, 0)] and cursor == ""
    response = httpx.get(console.url + "api/search", params={"limit": "0"}, headers=console.headers())
    assert response.status_code == 400 and "limit='0' is invalid" in response.text


def test_a_record_a_retried_export_wrote_twice_shows_once(watch: Watch, console: ConsoleProcess) -> None:
    watch.emitter.log(f"{watch.marker} once")
    with console.handle.client() as client:
        ((_, fields),) = client.xrevrange(console.handle.stream, count=1)
        client.xadd(console.handle.stream, fields)  # what a retry after a lost reply leaves behind
    watch.emitter.log(f"{watch.marker} next")
    expected = [f"{watch.marker} once", f"{watch.marker} next"]
    wait_for(lambda: expected[-1] in watch.viewer.bodies(), timeout=5, what="the record after the copy")
    assert watch.viewer.bodies() == expected
    replay = Viewer(console, headers={"last-event-id": "0-0"}, text=watch.marker)
    try:
        wait_for(lambda: expected[-1] in replay.bodies(), timeout=5, what="the replay")
        assert replay.bodies() == expected
    finally:
        replay.close()
