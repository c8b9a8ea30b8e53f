"""Setups where Redis refuses every write alike: one line says what to fix, the URL's password
is never printed, and the records wait in the spool rather than being dead-lettered."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import redis
from redis.exceptions import ReadOnlyError

from tests.apps.servers import LAUNCHER_ENV
from tests.faults import DurableRedis, FaultyProxy
from tests.support import ROOT, VENV_BIN, RedisHandle, run_python_process, wait_for
from tracestream.cli.common import describe_redis_error
from tracestream.disk_spool import DEAD_LETTERS
from tracestream.embedded_redis import EmbeddedRedis, free_cluster_port, free_port, redis_server_binary

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


def _cli_line(url: str, **env: str) -> str:
    """What `tracestream search` says of `url`: one line, and exit status 1."""
    done = subprocess.run(
        [str(VENV_BIN / "tracestream"), "search", "--redis-url", url],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    return done.stderr


def _every_line_printed(url: str, spool: Path) -> str:
    """What configure(), the launcher, the CLI and doctor print, stdout and stderr, for `url`."""
    env = {"PATH": "/usr/bin:/bin", "TRACESTREAM_SPOOL_DIR": str(spool), "COLUMNS": "500"}
    launched = {
        **env,
        "TRACESTREAM_REDIS_URL": url,
        "OTEL_PYTHON_DISTRO": "tracestream",
        "OTEL_LOGS_EXPORTER": "redis_stream",
        "OTEL_TRACES_EXPORTER": "redis_stream",
        "OTEL_METRICS_EXPORTER": "none",
        "TRACESTREAM_SHUTDOWN_TIMEOUT": "1s",
    }
    commands = [
        ([str(VENV_BIN / "opentelemetry-instrument"), sys.executable, "-c", APP], launched),
        ([str(VENV_BIN / "tracestream"), "search", "--redis-url", url], env),
        ([str(VENV_BIN / "tracestream"), "doctor", "--redis-url", url], env),
    ]
    outputs = [_app(url, spool)]
    for command, command_env in commands:
        outputs.append(subprocess.run(command, env=command_env, capture_output=True, text=True, timeout=60))
    return "\n".join(done.stdout + done.stderr for done in outputs)


@pytest.mark.parametrize(
    ("credentials", "shown"),
    [
        ("slash:Zx9/kQ+a7", "slash:***"),  # a base64 password: '/' ends urllib's host before the '@'
        (":Zx9/kQ+a7", ":***"),
        ("shop:Zx9@kQ+a7", "shop:***"),  # accepted: urllib and redis-py split at the last '@'
        ("shop:Zx9?kQ+a7", "shop:***"),
        ("shop:1234#kQ+a7", "shop:***"),  # urllib would read host 'shop', port 1234
    ],
)
def test_a_password_that_was_not_percent_encoded_is_printed_nowhere(
    guarded: EmbeddedRedis, tmp_path: Path, credentials: str, shown: str
) -> None:
    printed = _every_line_printed(f"redis://{credentials}@127.0.0.1:{guarded.port}/0", tmp_path)
    assert not any(secret in printed for secret in ("Zx9", "kQ", "1234")), printed
    assert f"redis://{shown}@127.0.0.1:{guarded.port}/0" in printed
    if "@" not in credentials.partition(":")[2]:
        assert printed.count("the password may need percent-encoding ('/' as %2F, '@' as %40") == 4, printed


def test_a_password_with_a_slash_percent_encoded_works(guarded: EmbeddedRedis, tmp_path: Path) -> None:
    """What the refusal above says to do."""
    with guarded.client() as client:
        client.execute_command("ACL", "SETUSER", "slash", "on", ">Zx9/kQ+a7", "~*", "+@all")
    assert _run(f"redis://slash:Zx9%2FkQ+a7@127.0.0.1:{guarded.port}/0", tmp_path) == []


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        ("?ssl_cert_reqs=none", "unexpected keyword argument 'ssl_cert_reqs'"),  # a rediss:// option
        ("?socket_timeout=soon", "socket_timeout would override TRACESTREAM_REDIS_TIMEOUT: set that instead"),
        ("?socket_timeout=30", "socket_timeout would override TRACESTREAM_REDIS_TIMEOUT: set that instead"),
        ("?protocol=4", "redis-py refuses its query (protocol must be either 2 or 3)"),
        ("?encoding=nope", "redis-py refuses its query (unknown encoding: nope)"),
    ],
)
def test_a_url_option_redis_py_refuses_is_a_bad_setting(
    guarded: EmbeddedRedis, tmp_path: Path, query: str, refused: str
) -> None:
    """redis-py reads the query when it first connects: every record was dead-lettered as if
    Redis had refused it, or the URL's timeout silently outlasted ours at exit. configure()
    refuses the setting instead, naming what was wrong."""
    done = _app(f"redis://shop:s3cret-shop@127.0.0.1:{guarded.port}/0{query}", tmp_path)
    assert done.returncode == 1 and "s3cret" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    shown = f"redis://shop:***@127.0.0.1:{guarded.port}/0{query}"
    assert last.startswith(f"tracestream.settings.ConfigError: TRACESTREAM_REDIS_URL={shown!r} is invalid: ")
    assert refused in last


@pytest.mark.parametrize("command", [["search"], ["errors"], ["alerts", "status"], ["console"]])
def test_a_url_option_redis_py_refuses_is_one_line_from_the_readers_too(
    guarded: EmbeddedRedis, command: list[str]
) -> None:
    """They never checked it: "unexpected TypeError", exit 1, or a console answering every call
    with a 500 and its traceback."""
    url = f"redis://shop:s3cret-shop@127.0.0.1:{guarded.port}/0?bogus=1"
    done = subprocess.run(
        [str(VENV_BIN / "tracestream"), *command],
        env={"PATH": "/usr/bin:/bin", "TRACESTREAM_REDIS_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    shown = f"redis://shop:***@127.0.0.1:{guarded.port}/0?bogus=1"
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [
            f"tracestream: TRACESTREAM_REDIS_URL={shown!r} is invalid: redis-py refuses its query "
            "(AbstractConnection.__init__() got an unexpected keyword argument 'bogus')"
        ],
    )


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


@contextlib.contextmanager
def sentinel_of(master: EmbeddedRedis, folder: Path) -> Iterator[str]:
    """A Sentinel watching `master`, as Redis's docs start one; yields its URL."""
    port = free_port()
    config = folder / "sentinel.conf"
    config.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor shop 127.0.0.1 {master.port} 1\n")
    process = subprocess.Popen([redis_server_binary(), str(config), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        probe = redis.Redis(port=port, socket_timeout=0.5)
        wait_for(lambda: _answers(probe), what="the Sentinel")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_a_sentinel_written_to_as_a_redis_is_said_to_be_one(tmp_path: Path) -> None:
    """It was told it lacked a command, renamed or disabled, and doctor gave the server a ✓."""
    with EmbeddedRedis() as master, sentinel_of(master, tmp_path) as url:
        lines = _run(url, tmp_path / "spool")
        doctor = subprocess.run(
            [str(VENV_BIN / "tracestream"), "doctor", "--redis-url", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert "or it is a Sentinel: point the URL at the master it names" in lines[0], lines
    [server] = [line for line in doctor.stdout.splitlines() if line[2:].startswith("server: ")]
    assert server.startswith("✗ server: ") and "is a Sentinel, not a Redis" in server, doctor.stdout


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
        told = _cli_line(f"redis://127.0.0.1:{server.server_address[1]}/0")
    finally:
        server.shutdown()
    not_redis = "it is not a Redis server: what answers at the URL does not speak Redis's protocol"
    assert not_redis in lines[0] and not_redis in told, (lines, told)
    # one line for the log and span writers alike
    assert len([line for line in lines if "cannot write" in line]) == 1, lines


def test_a_redis_that_takes_the_connection_but_does_not_reply(tmp_path: Path) -> None:
    """As one busy with a slow command (DEBUG SLEEP) or a large save does: frozen here, which its
    clients cannot tell from that, for as long as the test needs. Nothing is wrong with the address."""
    with DurableRedis() as server:
        server.freeze()
        try:
            lines = _run(server.url, tmp_path, TRACESTREAM_REDIS_TIMEOUT="500ms")
            told = _cli_line(server.url, TRACESTREAM_REDIS_TIMEOUT="500ms")
        finally:
            server.thaw()
    busy = "the connection was made but no reply came: a Redis busy with a slow command or a large save"
    assert busy in lines[0] and busy in told, (lines, told)
    assert "reachable" not in lines[0] + told


def _an_address_of_this_host_off_loopback() -> str:
    """The address this host reaches its own network from: Redis counts a client there as another host."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # a UDP connect sends nothing; it picks the route
        address: str = probe.getsockname()[0]
    assert not address.startswith("127."), "this host has no IPv4 address off loopback"
    return address


def test_a_redis_in_protected_mode_reached_from_another_host(tmp_path: Path) -> None:
    """Its default user has no password, so it refuses every client off loopback: each record was
    taken for one Redis refused, and set aside with the dead letters, which are never sent."""
    address = _an_address_of_this_host_off_loopback()
    with EmbeddedRedis(extra_args=["--bind", f"127.0.0.1 {address}", "--protected-mode", "yes"]) as server:
        lines = _run(f"redis://{address}:{server.port}/0", tmp_path)
    advice = "(protected mode): give it one and put it in the URL, or reach it from its own host"
    assert advice in lines[0] and "If you want to connect" not in lines[0], lines
    assert any("wait in the spool" in line for line in lines), lines


def test_a_read_only_replica(tmp_path: Path) -> None:
    with EmbeddedRedis() as primary, EmbeddedRedis() as replica, replica.client() as client:
        client.replicaof("127.0.0.1", primary.port)
        lines = _run(replica.url, tmp_path)
        with pytest.raises(ReadOnlyError) as refused:  # as `tracestream alerts run` or `forward` would be
            client.set("alerts:state", "firing")
    fix = "the URL names a read-only replica: point TRACESTREAM_REDIS_URL at the primary"
    assert "READONLY" in lines[0] and fix in lines[0], lines
    assert describe_redis_error(refused.value).endswith(f"({fix})")


def test_otel_sdk_disabled_exports_nothing(tmp_path: Path) -> None:
    """The SDK's providers record no span then; logs must not go out alone either."""
    with EmbeddedRedis() as server:
        env = {"OTEL_SDK_DISABLED": "true"}
        assert _run(server.url, tmp_path, **env) == []
        with server.client() as client:
            assert client.keys("*") == []


# What a process looks like to the app after setup: logging's and the interpreter's hooks, a
# quiet logger's answer, the frameworks' classes, and the OpenTelemetry globals.
PROCESS_STATE = """
import json, logging, os, signal, sys, threading
if os.environ.get("SETUP") == "configure":
    import tracestream
    tracestream.configure()
import django.core.handlers.base, fastapi, starlette.applications
from opentelemetry import trace
logging.getLogger("quiet").setLevel(logging.WARNING)
print(json.dumps({
    "isEnabledFor": logging.Logger.isEnabledFor.__module__,
    "filter": logging.Logger.filter.__module__,
    "quiet logger asked at INFO": logging.getLogger("quiet").isEnabledFor(logging.INFO),
    "SIGTERM": str(signal.getsignal(signal.SIGTERM)),
    "os._exit": os._exit.__module__,
    "excepthooks": [sys.excepthook.__module__, threading.excepthook.__module__],
    "FastAPI": fastapi.FastAPI.__module__,
    "Starlette.__call__": starlette.applications.Starlette.__call__.__module__,
    "Django's handler": django.core.handlers.base.BaseHandler.load_middleware.__module__,
    "tracer provider": type(trace.get_tracer_provider()).__name__,
}))
"""


@pytest.mark.parametrize("setup", ["configure", "launcher"])
def test_otel_sdk_disabled_installs_nothing(setup: str) -> None:
    """`OTEL_SDK_DISABLED=true`, as a test environment sets it, leaves the process as without
    tracestream: a logger at WARNING says no at INFO (a stateful filter then counts no record
    the app never made), and no hook, handler or framework class is ours. Settings nothing then
    reads stop nothing either, bad as they are: the app ran as without tracestream."""
    env = {"PATH": os.environ["PATH"], "SETUP": setup, **LAUNCHER_ENV}
    command = [sys.executable, "-c", PROCESS_STATE]
    bare = subprocess.run(command, env=env | {"SETUP": ""}, capture_output=True, text=True, cwd=ROOT)
    if setup == "launcher":
        command = [str(VENV_BIN / "opentelemetry-instrument"), *command]
    unread = {
        "TRACESTREAM_MAX_AGE": "a week",
        "OTEL_ATTRIBUTE_COUNT_LIMIT": "-1",
        "OTEL_CONFIG_FILE": "otel.yaml",
    }
    disabled = subprocess.run(
        command, env=env | unread | {"OTEL_SDK_DISABLED": "true"}, capture_output=True, text=True, cwd=ROOT
    )
    assert disabled.returncode == bare.returncode == 0, disabled.stderr
    assert json.loads(disabled.stdout) == json.loads(bare.stdout)
    said = [line for line in disabled.stderr.splitlines() if line.startswith(("tracestream:", "Traceback"))]
    assert said == [], disabled.stderr


@pytest.mark.parametrize("setup", ["configure", "launcher"])
def test_otel_sdk_disabled_set_to_another_word_for_true_is_said(stream: RedisHandle, setup: str) -> None:
    """`OTEL_SDK_DISABLED=1` is false, as the spec reads it: everything was set up and exported,
    to localhost's Redis where no URL was set, without a word."""
    code = "import logging\nlogging.getLogger('shop').warning('order paid')\n"
    env = stream.env(OTEL_SDK_DISABLED="1", **LAUNCHER_ENV)
    if setup == "configure":
        code = "import tracestream\ntracestream.configure()\n" + code
    done = run_python_process(code, env, launcher=setup == "launcher")
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert said == [
        "tracestream: WARNING OTEL_SDK_DISABLED='1' is read as false, as OpenTelemetry reads any value but "
        "true: tracestream is set up; OTEL_SDK_DISABLED=true turns it off"
    ], done.stderr
    wait_for(lambda: [entry for entry in stream.logs() if entry.body == "order paid"], what="the record")


@pytest.mark.parametrize("app_config", ["", "1"], ids=["as-set-up", "after-the-apps-dict-config"])
def test_records_left_in_the_spool_at_exit_are_said(tmp_path: Path, app_config: str) -> None:
    """Redis never came: the process ends, and one line says where its records wait, also after
    the app's `dictConfig` disabled the loggers that existed before it."""
    lines = _run(f"redis://127.0.0.1:{free_port()}/0", tmp_path, APP_DICT_CONFIG=app_config)
    assert len(lines) == 2 and "cannot write" in lines[0], lines  # that line, and why writes failed
    waiting = lines[1]
    assert "2 records wait in the spool for stream 'setup:" in waiting, waiting
    assert "(1 log record, 1 span)" in waiting and "tracestream spool replay" in waiting
    # why, in the same line: a test runner hides the one said while the app ran
    assert ", which failed: ConnectionError" in waiting and "Connection refused" in waiting


# Says which threads `threading` knows of once the export thread has said Redis cannot be written.
THREADS_AFTER_A_FAILED_WRITE = """
import io, logging, sys, threading, time
import tracestream
said = sys.stderr = io.StringIO()
tracestream.configure(service_name="threads")
logging.getLogger("app").warning("for a Redis that is not there")
deadline = time.monotonic() + 10
while "cannot write" not in said.getvalue() and time.monotonic() < deadline:
    time.sleep(0.01)
sys.stderr = sys.__stderr__
print("cannot write" in said.getvalue(), [thread.name for thread in threading.enumerate()])
"""


def test_what_the_export_thread_says_adds_no_thread_to_the_apps_list(tmp_path: Path) -> None:
    """Our export threads are not `threading`'s: a line said on one made it a dummy `Thread`
    that `threading.enumerate()` listed for good, and an app's check for leaked threads failed."""
    env = {
        "PATH": "/usr/bin:/bin",
        "TRACESTREAM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "TRACESTREAM_SPOOL_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", THREADS_AFTER_A_FAILED_WRITE],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert (done.returncode, done.stdout) == (0, "True ['MainThread']\n"), done.stderr


# An app that left `sys.stderr` on a file it closed, then logs a record a line it reads.
STDERR_CLOSED_BY_THE_APP = """
import logging, os, sys, tracestream
with open(os.devnull, "w") as sys.stderr:
    telemetry = tracestream.configure(service_name="shop")
logging.getLogger("shop").addHandler(logging.NullHandler())  # its own handlers print elsewhere
for line in sys.stdin:
    logging.getLogger("shop").warning(line.strip())
    telemetry.force_flush(5)
    print("logged", flush=True)
"""


def test_a_line_of_ours_the_apps_stderr_cannot_take_costs_no_record(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Saying "cannot write to Redis" on a closed file raised ValueError into the export, which
    took it for Redis refusing the record: the record went to the dead letters, never to be sent."""
    with FaultyProxy(redis_server.port) as proxy:
        stream = RedisHandle(url=proxy.url, stream=f"setup:{uuid.uuid4().hex[:8]}")
        env = stream.env(TRACESTREAM_SPOOL_DIR=str(tmp_path), TRACESTREAM_REDIS_TIMEOUT="1s")
        app = subprocess.Popen(
            [sys.executable, "-c", STDERR_CLOSED_BY_THE_APP], env=env, cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert app.stdin is not None and app.stdout is not None
        for body, redis_up in (("before", True), ("during", False), ("after", True)):
            (proxy.up if redis_up else proxy.down)()
            app.stdin.write(f"{body}\n")
            app.stdin.flush()
            assert app.stdout.readline() == "logged\n", app.communicate(timeout=30)
        app.stdin.close()
        assert app.wait(30) == 0, app.communicate()
        assert sorted(entry.body for entry in stream.logs()) == ["after", "before", "during"]
    assert not list(tmp_path.rglob(DEAD_LETTERS)), "records were dead-lettered"


# The app at DEBUG: redis-py logs a DEBUG line as each of its connections opens, ours included.
THREADS_OF_AN_APP_AT_DEBUG = """
import logging, threading, tracestream
logging.basicConfig(level=logging.DEBUG, format="%(threadName)s %(name)s %(message)s")
telemetry = tracestream.configure(service_name="threads")
for _ in range(3):
    worker = threading.Thread(target=logging.getLogger("app").info, args=("working",))
    worker.start()
    worker.join()
    assert telemetry.force_flush(10)
print([thread.name for thread in threading.enumerate()])
"""


def test_an_app_at_debug_keeps_its_thread_names_and_list(redis_server: EmbeddedRedis) -> None:
    """redis-py's lines from our export threads went nowhere, but making each registered the
    thread as a dummy `Thread`: the app's threads were named Thread-1, Thread-3, Thread-4."""
    env = {
        "PATH": "/usr/bin:/bin",
        "TRACESTREAM_REDIS_URL": redis_server.url,
        "TRACESTREAM_STREAM": "threads",
    }
    done = subprocess.run(
        [sys.executable, "-c", THREADS_OF_AN_APP_AT_DEBUG], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert (done.returncode, done.stdout) == (0, "['MainThread']\n"), done.stderr
    assert done.stderr.splitlines() == [f"Thread-{n} (info) app working" for n in (1, 2, 3)]


def test_spools_that_ended_processes_left_are_taken_over_and_counted_in_one_line(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    stream = "setup:orphans"
    for _ in range(2):
        _run(url, tmp_path, TRACESTREAM_STREAM=stream)
    lines = _run(url, tmp_path, TRACESTREAM_STREAM=stream)
    assert len(lines) == 3, lines
    taken, _, waiting = lines
    assert f"took over the spool that 2 ended processes left for stream '{stream}' on" in taken, taken
    # what the process took over waits with its own records: three runs' worth
    assert "6 records wait in the spool" in waiting and "(3 log records, 3 spans)" in waiting, waiting


@pytest.mark.parametrize("left_only", ["OTEL_TRACES_EXPORTER", "OTEL_LOGS_EXPORTER"], ids=["logs", "spans"])
def test_a_process_that_left_logs_or_spans_alone_is_counted_once(tmp_path: Path, left_only: str) -> None:
    """One line says what the stream's log and span spools took over, and it counted the
    processes of whichever spool took over first: a gunicorn master, whose records are logs
    alone, was missing from its workers' count."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    stream = "setup:halves"
    _run(url, tmp_path, TRACESTREAM_STREAM=stream, **{left_only: "none"})
    _run(url, tmp_path, TRACESTREAM_STREAM=stream)
    taken = _run(url, tmp_path, TRACESTREAM_STREAM=stream)[0]
    assert f"took over the spool that 2 ended processes left for stream '{stream}' on" in taken, taken


def test_an_embedded_redis_that_never_answers_is_not_left_running() -> None:
    """`make demo` and the tests start their own Redis: one whose ping never succeeds (here it
    wants a password) is stopped when `start()` gives up, not left holding its port."""
    server = EmbeddedRedis(extra_args=["--requirepass", "s3cret"])
    with pytest.raises(TimeoutError, match="not ready"):
        server.start(timeout=1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def _without_a_home(
    tmp_path: Path, read_only: Path | None = None, *also_read_only: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """The app, Redis unreachable, where the working directory is not the app's to write in,
    and `read_only` (if given) a read-only mount, as a container's root filesystem is."""
    cwd, temporary = tmp_path / "workdir", tmp_path / "tmp"
    cwd.mkdir()
    temporary.mkdir()
    command = [sys.executable, "-c", APP]
    if read_only is not None:
        read_only.mkdir(exist_ok=True)
        mounts = [
            f"mount --bind {path} {path} && mount -o remount,bind,ro {path}"
            for path in (read_only, *also_read_only)
        ]
        command = ["unshare", "--mount", "sh", "-c", " && ".join([*mounts, 'exec "$@"']), "sh", *command]
    environment = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "TMPDIR": str(temporary),
        "TRACESTREAM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "TRACESTREAM_SHUTDOWN_TIMEOUT": "1s",
        **env,
    }
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60, cwd=cwd)
    assert (done.returncode, done.stdout) == (0, "app done\n"), done.stderr
    assert list(cwd.iterdir()) == []  # no `~` directory where the app runs
    return done


@pytest.mark.parametrize("home", ["unset", "read-only"])
def test_without_a_home_to_write_in_the_spool_is_the_users_own_in_the_temporary_directory(
    tmp_path: Path, home: str
) -> None:
    """A container's arbitrary uid has no home: without HOME or a passwd entry `expanduser`
    leaves `~` as it is, a relative path (as a relative HOME does here, the test being root);
    or one it cannot write, as under a read-only root filesystem."""
    read_only = tmp_path / "home" if home == "read-only" else None
    done = _without_a_home(tmp_path, read_only, HOME=str(read_only or "app-home"))
    assert "records wait in the spool" in done.stderr and "cannot be written" not in done.stderr, done.stderr
    own = tmp_path / "tmp" / f"tracestream-{os.getuid()}"
    assert own.stat().st_mode & 0o777 == 0o700
    assert list((own / "spool").glob("*/*/*.seg")), done.stderr


def test_with_no_temporary_directory_to_write_in_the_spool_that_cannot_be_written_is_said_in_a_line(
    tmp_path: Path,
) -> None:
    """A read-only root filesystem with no volume mounted at /tmp (a hardened pod): the home and
    every temporary directory Python knows of are read-only. The app runs as bare, and one line
    names the spool and why, where `configure()` raised from `tempfile.gettempdir()`."""
    read_only = tmp_path / "home"
    done = _without_a_home(tmp_path, read_only, str(tmp_path), "/tmp", "/var/tmp", HOME=str(read_only))
    lines = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert lines[0] == (
        f"tracestream: WARNING the spool at {read_only}/.local/state/tracestream/spool cannot be written "
        f"({read_only} is read-only): while Redis is down, records wait in memory only, and are lost at "
        "exit; TRACESTREAM_SPOOL_DIR names a writable directory"
    )
    assert "Traceback" not in done.stderr, done.stderr


def test_a_spool_directory_that_cannot_be_written_is_said_at_start(tmp_path: Path) -> None:
    read_only = tmp_path / "volume"
    done = _without_a_home(tmp_path, read_only, TRACESTREAM_SPOOL_DIR=str(read_only / "spool"))
    lines = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert lines[0] == (
        f"tracestream: WARNING the spool at {read_only}/spool cannot be written ({read_only} is "
        "read-only): while Redis is down, records wait in memory only, and are lost at exit; "
        "TRACESTREAM_SPOOL_DIR names a writable directory"
    )
    assert "not exported or spooled at shutdown" in done.stderr
