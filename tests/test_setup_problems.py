"""Setups where Redis refuses every write alike: one line says what to fix, the URL's password
is never printed, and the records wait in the spool rather than being dead-lettered."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.support import ROOT, wait_for
from tracestream.disk_spool import DEAD_LETTERS
from tracestream.embedded_redis import EmbeddedRedis, free_cluster_port, free_port

APP = """
import logging, logging.config, os, tracestream
from opentelemetry import trace
tracestream.configure()
if os.environ.get("APP_DICT_CONFIG"):  # set up after ours, as Django's LOGGING is under the launcher
    logging.config.dictConfig({"version": 1, "handlers": {"console": {"class": "logging.StreamHandler"}},
                               "root": {"handlers": ["console"], "level": "WARNING"}})
logging.getLogger("shop").setLevel(logging.INFO)
with trace.get_tracer("t").start_as_current_span("checkout"):
    logging.getLogger("shop").warning("order paid")
print("app done")
"""


def _app(url: str, spool: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", APP],
        env={
            "PATH": "/usr/bin:/bin",
            "TRACESTREAM_REDIS_URL": url,
            "TRACESTREAM_SPOOL_DIR": str(spool),
            "TRACESTREAM_SHUTDOWN_TIMEOUT": "1s",
            "OTEL_SERVICE_NAME": "shop",
            **{"TRACESTREAM_STREAM": f"setup:{uuid.uuid4().hex[:8]}", **env},
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def _run(url: str, spool: Path, **env: str) -> list[str]:
    """The app's stderr lines from tracestream, once the app has printed what it prints."""
    done = _app(url, spool, **env)
    assert (done.returncode, done.stdout) == (0, "app done\n"), done.stderr
    assert not (spool / DEAD_LETTERS).exists(), "records were dead-lettered"
    return [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]


@pytest.fixture(scope="module")
def guarded() -> Iterator[EmbeddedRedis]:
    """Users `shop` (every command) and `reader` (reads only), each with a password."""
    with EmbeddedRedis() as server, server.client() as client:
        client.execute_command("ACL", "SETUSER", "shop", "on", ">s3cret-shop", "~*", "+@all")
        client.execute_command("ACL", "SETUSER", "reader", "on", ">s3cret-reader", "~*", "+@read")
        yield server


def test_a_wrong_password_is_said_without_printing_it(guarded: EmbeddedRedis, tmp_path: Path) -> None:
    lines = _run(f"redis://shop:wrong-s3cret@127.0.0.1:{guarded.port}/0", tmp_path)
    assert lines and all("wrong-s3cret" not in line for line in lines), lines
    assert f"redis://shop:***@127.0.0.1:{guarded.port}/0" in lines[0]


def test_a_password_in_the_query_is_not_printed_either(guarded: EmbeddedRedis, tmp_path: Path) -> None:
    """redis-py takes `?password=` as well as `user:password@`."""
    lines = _run(f"redis://127.0.0.1:{guarded.port}/0?username=shop&password=wrong-s3cret", tmp_path)
    assert lines and all("wrong-s3cret" not in line for line in lines), lines
    assert f"redis://127.0.0.1:{guarded.port}/0?username=shop&password=***" in lines[0]


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        ("?ssl_cert_reqs=none", "unexpected keyword argument 'ssl_cert_reqs'"),  # a rediss:// option
        ("?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
    ],
)
def test_a_url_option_redis_py_refuses_is_a_bad_setting(
    guarded: EmbeddedRedis, tmp_path: Path, query: str, refused: str
) -> None:
    """redis-py reads the query when it first connects: every record was dead-lettered as if
    Redis had refused it. configure() refuses the setting instead, naming what was wrong."""
    done = _app(f"redis://shop:s3cret-shop@127.0.0.1:{guarded.port}/0{query}", tmp_path)
    assert done.returncode == 1 and "s3cret" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    shown = f"redis://shop:***@127.0.0.1:{guarded.port}/0{query}"
    assert last.startswith(f"tracestream.settings.ConfigError: TRACESTREAM_REDIS_URL={shown!r} is invalid: ")
    assert refused in last


def test_a_database_redis_lacks(guarded: EmbeddedRedis, tmp_path: Path) -> None:
    lines = _run(f"redis://shop:s3cret-shop@127.0.0.1:{guarded.port}/99", tmp_path)
    assert "pick a lower number in the URL" in lines[0], lines
    assert all("s3cret-shop" not in line for line in lines)


def test_a_user_whose_acl_lacks_a_command(guarded: EmbeddedRedis, tmp_path: Path) -> None:
    lines = _run(f"redis://reader:s3cret-reader@127.0.0.1:{guarded.port}/0", tmp_path)
    assert "lacks a permission tracestream needs: docs/security.md lists them" in lines[0], lines
    assert all("WRONGTYPE" not in line and "s3cret-reader" not in line for line in lines)


@pytest.mark.parametrize("command", ["EVALSHA", "XADD"])
def test_a_command_renamed_in_the_servers_configuration(command: str, tmp_path: Path) -> None:
    """`rename-command` refuses every write alike, outside the script (EVALSHA) or inside it."""
    with EmbeddedRedis(extra_args=["--rename-command", command, f"{command}-hidden"]) as server:
        lines = _run(server.url, tmp_path)
    assert "renamed or disabled in its configuration" in lines[0] and "nknown" in lines[0], lines


def test_a_cluster_node_written_to_as_a_single_redis(tmp_path: Path) -> None:
    node = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    with EmbeddedRedis(free_cluster_port(), node) as server, server.client() as client:
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        wait_for(lambda: client.cluster("info")["cluster_state"] == "ok", what="the node to own every slot")
        lines = _run(f"redis://127.0.0.1:{server.port}/0", tmp_path)
    assert any("set TRACESTREAM_REDIS_CLUSTER=true" in line for line in lines), lines


def test_an_address_that_is_not_redis(tmp_path: Path) -> None:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lines = _run(f"redis://127.0.0.1:{server.server_address[1]}/0", tmp_path)
    finally:
        server.shutdown()
    assert "does not speak Redis's protocol" in lines[0], lines
    # one line per signal, each naming its signal
    failing = [line.split(" ", 3)[2] for line in lines if "cannot write" in line]
    assert sorted(failing) == ["logs:", "spans:"], lines


def test_otel_sdk_disabled_exports_nothing(tmp_path: Path) -> None:
    """The SDK's providers record no span then; logs must not go out alone either."""
    with EmbeddedRedis() as server:
        env = {"OTEL_SDK_DISABLED": "true"}
        assert _run(server.url, tmp_path, **env) == []
        with server.client() as client:
            assert client.keys("*") == []


@pytest.mark.parametrize("app_config", ["", "1"], ids=["as-set-up", "after-the-apps-dict-config"])
def test_records_left_in_the_spool_at_exit_are_said(tmp_path: Path, app_config: str) -> None:
    """Redis never came: the process ends, and one line per signal says where its records wait,
    also after the app's `dictConfig` disabled the loggers that existed before it."""
    lines = _run(f"redis://127.0.0.1:{free_port()}/0", tmp_path, APP_DICT_CONFIG=app_config)
    waiting = [line for line in lines if "in the spool for" in line]
    assert len(waiting) == 2, lines
    assert all("1 record waits" in line and "tracestream spool replay" in line for line in waiting)


def test_spools_that_ended_processes_left_are_taken_over_in_one_line_a_signal(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    stream = "setup:orphans"
    for _ in range(2):
        _run(url, tmp_path, TRACESTREAM_STREAM=stream)
    lines = _run(url, tmp_path, TRACESTREAM_STREAM=stream)
    taken = [line for line in lines if "took over" in line]
    assert len(taken) == 2, lines  # logs and spans
    assert all("that 2 ended process(es) left for stream" in line for line in taken), taken


def test_an_embedded_redis_that_never_answers_is_not_left_running() -> None:
    """`make demo` and the tests start their own Redis: one whose ping never succeeds (here it
    wants a password) is stopped when `start()` gives up, not left holding its port."""
    server = EmbeddedRedis(extra_args=["--requirepass", "s3cret"])
    with pytest.raises(TimeoutError, match="not ready"):
        server.start(timeout=1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
