"""The console under attack and under trouble, against real console processes and redis-servers:
foreign Host names, redirects off-site, catastrophic regexes, 200 viewers, Redis going away, odd ids."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from opentelemetry._logs import SeverityNumber

from tests.support import RedisHandle, wait_for
from tests.test_console_live import TOKEN, ConsoleProcess, Emitter, Viewer
from tracestream.console.server import allowed_hosts
from tracestream.embedded_redis import EmbeddedRedis

PATHOLOGICAL = "a" * 24 + "!"  # `(a+)+$` backtracks for seconds on it in Python's re


@pytest.fixture(scope="module")
def console(redis_server: EmbeddedRedis) -> Iterator[ConsoleProcess]:
    with ConsoleProcess.on_fresh_stream(redis_server) as process:
        yield process


def raw_get(port: int, target: str, host: str | None) -> tuple[int, dict[str, str], str]:
    """One request exactly as written (target and Host untouched); status, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        version = "HTTP/1.1" if host is not None else "HTTP/1.0"  # 1.1 requires a Host: the server says 400
        head = f"GET {target} {version}\r\n" + (f"Host: {host}\r\n" if host is not None else "")
        connection.sendall(f"{head}Connection: close\r\n\r\n".encode())
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    header_text, _, body = reply.decode("latin-1").partition("\r\n\r\n")
    status_line, *lines = header_text.split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_only_loopback_names_and_allowed_hosts_are_answered(stream: RedisHandle) -> None:
    """DNS rebinding: a foreign page reaching 127.0.0.1 still sends its own name as Host."""
    process = ConsoleProcess(
        stream,
        token=None,
        args=("--allowed-host", "flag.example.test"),
        TRACESTREAM_CONSOLE_ALLOWED_HOSTS="logs.example.test",
    ).start()
    port = process.port
    try:
        for host in (
            f"localhost:{port}",
            f"127.0.0.1:{port}",
            f"[::1]:{port}",
            "LOCALHOST",
            "logs.example.test",
            "flag.example.test",
        ):
            assert raw_get(port, "/", host)[0] == 200, host
        for host in (
            "evil.example",
            f"evil.example:{port}",
            "127.0.0.1.evil.example",
            "localhost.evil",
            None,
        ):
            for path in ("/", "/api/search", "/api/live", "/static/live.js"):
                status, _, body = raw_get(port, path, host)
                assert status == 421, (host, path)
                assert body.count("\n") == 1 and f"does not answer to host {host or ''!r}" in body
                assert "--allowed-host or TRACESTREAM_CONSOLE_ALLOWED_HOSTS" in body
    finally:
        process.stop()


def test_allowed_hosts_come_from_the_flag_the_environment_and_a_concrete_bind_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACESTREAM_CONSOLE_ALLOWED_HOSTS", " logs.example.test, ,ops.example.test:8686")
    assert allowed_hosts("0.0.0.0", ["flag.example.test"]) == [
        "flag.example.test",
        "logs.example.test",
        "ops.example.test:8686",
    ]
    assert allowed_hosts("192.0.2.7")[-1] == "192.0.2.7" and allowed_hosts("fe80::1")[-1] == "[fe80::1]"
    assert allowed_hosts("::") == allowed_hosts("0.0.0.0")


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "/\\evil.example",
        "/%2F%2Fevil.example",
        "/%5C%5Cevil.example",
        "/%5C/evil.example",
        "///evil.example",
        "/https:evil.example",
        "/%09/evil.example",
        "/%0D%0ALocation:%20//evil.example",
    ],
)
def test_the_token_exchange_redirects_only_within_the_console(console: ConsoleProcess, target: str) -> None:
    """Within the directory the browser is in: under a proxy's prefix (/logs/ here) too."""
    status, headers, _ = raw_get(console.port, f"{target}?token={TOKEN}&text=x", f"127.0.0.1:{console.port}")
    location = headers["location"]
    assert status == 303 and "tracestream_console_" in headers["set-cookie"]
    assert location.startswith("./") and "/" not in location[2:].partition("?")[0], location
    assert not any(char in location for char in "\t\r\n\\:"), location
    resolved = urlsplit(urljoin(f"http://127.0.0.1:{console.port}/logs{target}", location))
    assert resolved.netloc == f"127.0.0.1:{console.port}" and resolved.path.startswith("/logs/"), location
    assert location.endswith("?text=x")


def test_the_token_exchange_keeps_the_page_and_its_query(console: ConsoleProcess) -> None:
    _, headers, _ = raw_get(console.port, f"/search?text=a%20b&token={TOKEN}", f"localhost:{console.port}")
    assert headers["location"] == "./search?text=a+b"


def test_a_catastrophic_regex_never_stalls_the_console(console: ConsoleProcess) -> None:
    """`(a+)+$` on a search and on a live filter, while another viewer follows the live tail."""
    marker = uuid.uuid4().hex[:8]
    follower = Viewer(console, text=marker)
    regex_viewer = Viewer(console, regex="(a+)+$")
    emitter = Emitter(console.handle, "regex")
    try:
        for _ in range(3):
            emitter.log(PATHOLOGICAL)
        emitter.log("aaaa")
        answers: list[tuple[float, httpx.Response]] = []

        def search() -> None:
            started = time.monotonic()
            params = {"regex": "(a+)+$", "limit": "10"}
            response = httpx.get(console.url + "api/search", params=params, headers=console.headers())
            answers.append((time.monotonic() - started, response))

        searching = threading.Thread(target=search)
        searching.start()
        sent = time.monotonic()
        emitter.log(f"{marker} still live")
        wait_for(lambda: follower.bodies() == [f"{marker} still live"], timeout=1, what="the live record")
        assert time.monotonic() - sent < 1.0
        searching.join(10)
        ((elapsed, response),) = answers
        assert response.status_code == 200 and elapsed < 1.0, (elapsed, response.text)
        assert [record["body"] for record in response.json()["records"]] == ["aaaa"]
        wait_for(lambda: regex_viewer.bodies() == ["aaaa"], timeout=1, what="the regex viewer's match")
        bad = httpx.get(console.url + "api/search", params={"regex": "(?=x)"}, headers=console.headers())
        assert bad.status_code == 400 and "invalid regex '(?=x)'" in bad.text
    finally:
        follower.close()
        regex_viewer.close()


async def _crowd(port: int, count: int, marker: str, body: str, emit: Callable[[], None]) -> list[bool]:
    """`count` raw SSE clients following `marker` connect at once; once all are connected, `emit`
    writes the record `body`. Returns, per client, whether that record arrived."""
    connected = [asyncio.Event() for _ in range(count)]

    async def view(index: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /api/live?text={marker} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        try:
            while line := await reader.readline():
                if line.startswith(b": connected"):
                    connected[index].set()
                if line.startswith(b"data: ") and body.encode() in line:
                    return True
            return False
        finally:
            writer.close()

    viewers = [asyncio.create_task(view(index)) for index in range(count)]
    try:
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in connected)), 30)
    except TimeoutError:
        raise AssertionError(f"{sum(e.is_set() for e in connected)} connected") from None
    await asyncio.to_thread(emit)
    done, pending = await asyncio.wait(viewers, timeout=20)
    for task in pending:
        task.cancel()
    return [task in done and not task.exception() and task.result() for task in viewers]


def test_two_hundred_viewers_at_once(console: ConsoleProcess) -> None:
    """200 viewers join while Redis holds every command for a moment (as a busy Redis would), so
    all their replays are in flight together; each still gets the next record."""
    marker = uuid.uuid4().hex[:8]
    emitter = Emitter(console.handle, "crowd", redis_timeout=10.0)  # its write may wait out the pause
    first = Viewer(console, text=marker)  # the shared reader runs from the first viewer on
    emitter.log(f"{marker} first")
    wait_for(lambda: first.bodies(), timeout=5, what="the first viewer's record")
    first.close()
    with console.handle.client() as admin:
        admin.client_pause(2000)
    body = f"{marker} for everyone"
    arrived = asyncio.run(_crowd(console.port, 200, marker, body, lambda: emitter.log(body)))
    assert sum(arrived) == 200


def test_a_redis_outage_is_reported_once_and_the_console_recovers(tmp_path: Path) -> None:
    """Viewers stay connected and are told; the API answers 503 JSON; the log has one line."""
    server = EmbeddedRedis().start()
    log = (tmp_path / "console.log").open("w")
    process = ConsoleProcess(RedisHandle(server.url, "outage"), token=None).start(stderr=log)
    emitter = Emitter(process.handle, "orders")
    viewers = [Viewer(process, text="outage") for _ in range(3)]
    try:
        emitter.log("outage before")
        for viewer in viewers:
            wait_for(lambda v=viewer: v.bodies() == ["outage before"], timeout=5, what="the first record")
        server.stop()
        for viewer in viewers:
            wait_for(lambda v=viewer: v.statuses, timeout=5, what="a status event")
            assert viewer.statuses[0]["redis"] == "unreachable"
            assert viewer.statuses[0]["message"].startswith("Redis unreachable, retrying")
        for path in ("api/search", "api/services", "api/stats", "api/trace/" + "ab" * 16):
            response = httpx.get(process.url + path)
            assert response.status_code == 503, path
            assert response.json()["error"].startswith("Redis unreachable, retrying")
        late = Viewer(process, text="outage")  # joins while Redis is down: told every second
        viewers.append(late)
        wait_for(lambda: len(late.statuses) >= 3, timeout=10, what="three seconds of a waiting viewer")
        assert late.status == 200 and {status["redis"] for status in late.statuses} == {"unreachable"}
        server.start()
        emitter.log("outage after")
        for viewer in viewers:
            # A viewer that joined during the outage is told Redis is back once its replay is sent.
            wait_for(
                lambda v=viewer: "outage after" in v.bodies() and v.statuses[-1]["redis"] == "ok",
                timeout=10,
                what="the record after, and the news that Redis is back",
            )
            assert viewer.bodies()[-1] == "outage after"
        assert httpx.get(process.url + "api/search").status_code == 200
        log.flush()
        logged = (tmp_path / "console.log").read_text()
    finally:
        for viewer in viewers:
            viewer.close()
        process.stop()
        server.close()
        log.close()
    assert "Traceback" not in logged
    assert logged.count("Redis unreachable, retrying") == 1, logged
    assert logged.count("Redis answers again") == 1, logged


def test_open_viewers_hear_that_redis_answers_as_soon_as_it_does() -> None:
    """The reader told them only once its first blocking XREAD after the outage returned: up to
    5 s later, while a viewer joining then heard it at once."""
    server = EmbeddedRedis().start()
    process = ConsoleProcess(RedisHandle(server.url, "recovery"), token=None).start()
    viewer = Viewer(process, text="recovery")
    try:
        Emitter(process.handle, "orders").log("recovery before")
        wait_for(lambda: viewer.bodies() == ["recovery before"], timeout=5, what="the shared reader's record")
        server.stop()
        wait_for(lambda: viewer.statuses, timeout=5, what="the news that Redis is gone")
        late = Viewer(process, text="recovery")  # told every second; by then the reader retries its slowest
        wait_for(lambda: len(late.statuses) >= 3, timeout=10, what="three seconds of outage")
        late.close()
        server.start()
        answered = time.monotonic()
        wait_for(lambda: viewer.statuses[-1]["redis"] == "ok", timeout=10, what="the news that Redis is back")
        assert time.monotonic() - answered < 1.5
    finally:
        viewer.close()
        process.stop()
        server.close()


@pytest.mark.parametrize(
    "position",
    ["-", "+", "$", "garbage", "²", "1-", "1-2-3", "99999999999999999999999", "0-18446744073709551616"],
)
def test_live_positions_redis_cannot_hold_are_a_clear_400(console: ConsoleProcess, position: str) -> None:
    for header, after in ((position, None), ("", position)):  # browsers send the header, pages `after`
        headers = {**console.headers(), "last-event-id": header.encode()}
        response = httpx.get(console.url + "api/live", params={"after": after}, headers=headers)
        assert response.status_code == 400 and "invalid stream id" in response.text, response.text


@pytest.mark.parametrize("position", ["0", "0-0", "99999999999999-0", f"{2**64 - 1}-{2**64 - 1}"])
def test_live_positions_at_either_end_resume_at_the_real_end(console: ConsoleProcess, position: str) -> None:
    """From the start everything is replayed; past the end (Redis emptied, an old tab) the
    viewer follows from the stream's real end instead of waiting for ids that never come."""
    marker = uuid.uuid4().hex[:8]
    emitter = Emitter(console.handle, "positions")
    emitter.log(f"{marker} earlier", SeverityNumber.WARN)
    viewer = Viewer(console, headers={"last-event-id": position}, text=marker)
    try:
        emitter.log(f"{marker} next")
        wait_for(lambda: f"{marker} next" in viewer.bodies(), timeout=5, what="the next record")
        replayed = [f"{marker} earlier"] if position in ("0", "0-0") else []
        assert viewer.status == 200 and viewer.bodies() == [*replayed, f"{marker} next"]
    finally:
        viewer.close()


def test_stopping_with_viewers_connected_is_quick_and_quiet(stream: RedisHandle, tmp_path: Path) -> None:
    """The live streams end as shutdown begins, rather than being cancelled after its timeout."""
    with (tmp_path / "console.log").open("w") as log:
        process = ConsoleProcess(stream, token=None).start(stderr=log)
        viewers = [Viewer(process, text="stopping") for _ in range(3)]
        Emitter(stream, "orders").log("stopping soon")
        for viewer in viewers:
            wait_for(lambda v=viewer: v.bodies() == ["stopping soon"], timeout=5, what="a live viewer")
        started = time.monotonic()
        process.stop()
        stopped_in = time.monotonic() - started
        for viewer in viewers:
            viewer.close()
    logged = (tmp_path / "console.log").read_text()
    assert stopped_in < 1.5 and "Traceback" not in logged and "Cancel" not in logged, (stopped_in, logged)


def test_a_viewer_that_leaves_during_the_replay_costs_the_log_nothing(tmp_path: Path) -> None:
    """The replay wrote one event at a time without giving the loop a turn: a viewer gone
    mid-replay was noticed only at the end of a 500-entry page, and asyncio logged
    `socket.send() raised exception.` for each write after the fifth, hundreds of lines."""
    server = EmbeddedRedis().start()
    log_path = tmp_path / "console.log"
    log = log_path.open("w")
    process = ConsoleProcess(RedisHandle(server.url, "replay"), token=None).start(stderr=log)
    try:
        emitter = Emitter(process.handle, "orders")
        for number in range(1500):
            emitter.log(f"backlog {number} " + "x" * 1000)
        # `curl -N …/api/live?after=0 | head -c 300`: it reads a little, and closes with the rest unread.
        with socket.create_connection(("127.0.0.1", process.port)) as client:
            client.sendall(b"GET /api/live?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            received = b""
            while b"backlog 5 " not in received:  # the replay has begun
                chunk = client.recv(65536)
                assert chunk, received[:300]
                received += chunk
        for _ in range(3):  # each needs the loop, which the replay held until its page's end
            assert httpx.get(process.url + "api/services").status_code == 200
        log.flush()
        assert "socket.send() raised exception" not in log_path.read_text()
    finally:
        process.stop()
        log.close()
        server.stop()
