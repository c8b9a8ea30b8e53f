"""What an operator reads and runs: `spool list` and the commands it prints, doctor on persistence,
`forward` after its receiver's outage, and `services` after a spool's replay."""

from __future__ import annotations

import json
import resource
import secrets
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from tests.faults import FaultyProxy
from tests.otlp_receiver import Attempt, OtlpReceiver, Reply
from tests.seeded_records import RecordWriter
from tests.support import ROOT, RedisHandle, wait_for
from tests.test_cli import run
from tests.test_forward import seed_logs
from tracestream import cli
from tracestream.cli.doctor import Finding, diagnose
from tracestream.embedded_redis import EmbeddedRedis, free_port, redis_server_binary
from tracestream.forwarder import Forwarder, ForwardSettings
from tracestream.summary import service_status

APP = """
import logging, sys, tracestream
from opentelemetry import trace
telemetry = tracestream.configure(service_name="ops")
logging.getLogger("ops").warning("while Redis is away")
with trace.get_tracer("ops").start_as_current_span("work"):
    pass
telemetry.force_flush()
print("spooled", flush=True)
sys.stdin.readline()
"""
SPOOL_IN_CHILD = """
import sys
from tests.seeded_records import RecordWriter
from tests.support import RedisHandle
from tracestream.settings import Settings
from tracestream.disk_spool import spool_for
url, stream, base, *services = sys.argv[1:]
row = RecordWriter(RedisHandle(url, stream)).row
spool = spool_for(Settings.load(environ={}, redis_url=url, spool_dir=base), stream)
assert spool.append([row(f"made before the replay by {service}", service=service) for service in services])
"""
READER_RIGHTS = (
    "resetkeys ~tracestream* resetchannels -@all +xrange +xrevrange +xread +xlen +lrange +evalsha_ro "
    "+evalsha +script|load +client|setname +ping +select +zrange +hmget +hgetall"
)  # docs/security.md


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The `tracestream` command run in this process: its exit status, stdout and stderr."""
    capsys.readouterr()
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _listed(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    status, out, _ = _cli(capsys, "spool", "list", "--json")
    assert status == 0
    return [json.loads(line) for line in out.splitlines()]


def _app_env(handle: RedisHandle, spool_dir: Path) -> dict[str, str]:
    return handle.env(TRACESTREAM_SPOOL_DIR=str(spool_dir), TRACESTREAM_REDIS_TIMEOUT="500ms")


def _run_app(handle: RedisHandle, spool_dir: Path) -> str:
    """APP, to its end, against a Redis that is away; its stderr."""
    command = [sys.executable, "-c", APP]
    env = _app_env(handle, spool_dir)
    done = subprocess.run(command, env=env, input="\n", capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout == "spooled\n", done.stderr
    return done.stderr


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The commands and the apps the test starts spool here."""
    monkeypatch.setenv("TRACESTREAM_SPOOL_DIR", str(tmp_path))
    for name in ("TRACESTREAM_REDIS_URL", "TRACESTREAM_STREAM"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_spool_list_prints_replay_commands_that_replay_takes(
    spool_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An app spooled its logs and spans while its Redis was away, and ended: each line `spool list`
    prints names the stream as `--stream` takes it, and its command sends the records."""
    server = EmbeddedRedis()  # not started: the app's Redis is away
    handle = RedisHandle(server.url, "ops:orphans")
    _run_app(handle, spool_dir)

    status, out, _ = _cli(capsys, "spool", "list")
    lines = out.splitlines()
    assert status == 0 and len(lines) == 2, out
    assert all("ops:orphans:spans" not in line for line in lines), out
    commands = {line.split("send them with `")[1].split("`")[0] for line in lines}
    assert commands == {f"tracestream spool replay --redis-url {server.url} --stream ops:orphans"}, out

    with server:
        status, out, err = _cli(capsys, *shlex.split(commands.pop())[1:])
        assert status == 0 and out.startswith("replayed 2 records"), (out, err)
        assert err == ""  # the count is its answer: no service's "took over" line
        assert [entry.body for entry in handle.logs()] == ["while Redis is away"]
        assert [span.name for span in handle.spans()] == ["work"]
        status, out, _ = _cli(capsys, "spool", "list")
        assert out == f"nothing spooled under {spool_dir}\n"


def test_replay_waits_for_a_slow_redis_within_its_timeout(
    spool_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A write Redis answers late is waited for, within the replay's timeout: the replay's
    queue holds one record, and an empty queue has nothing to spool by overtaking the call."""
    with EmbeddedRedis() as server, FaultyProxy(server.port) as proxy:
        handle = RedisHandle(proxy.url, "ops:slow")
        proxy.down()
        _run_app(handle, spool_dir)
        proxy.up()
        proxy.stall()
        threading.Timer(0.3, proxy.resume).start()
        status, out, err = _cli(capsys, "spool", "replay", "--redis-url", proxy.url, "--stream", "ops:slow")
        assert (status, err) == (0, ""), (out, err)
        assert out.startswith("replayed 2 records"), out
        assert [entry.body for entry in handle.logs()] == ["while Redis is away"]


def test_spool_list_and_doctor_leave_out_what_a_process_replayed(
    spool_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A process spools while its Redis is away and replays once Redis is back: its folders stay,
    empty, while it runs and after it ends; nothing lists them."""
    server = EmbeddedRedis()
    handle = RedisHandle(server.url, "ops:replayed")
    app = subprocess.Popen(
        [sys.executable, "-c", APP],
        env=_app_env(handle, spool_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert app.stdin is not None and app.stdout is not None
    try:
        assert app.stdout.readline() == "spooled\n"
        assert sorted((entry["records"], entry["live"]) for entry in _listed(capsys)) == [
            (1, True),
            (1, True),
        ]
        with server:
            wait_for(
                lambda: len(handle.logs()) == 1 and len(handle.spans()) == 1, timeout=30, what="the replay"
            )
            wait_for(lambda: _listed(capsys) == [], what="spool list without the emptied folders")
            app.stdin.close()
            assert app.wait(30) == 0
            assert _listed(capsys) == []
            assert not [f for f in diagnose(server.url, handle.stream) if f.check == "spool"]
    finally:
        app.kill()
        app.wait()


def _persistence(url: str) -> Finding:
    findings = diagnose(url, "ops:persistence")
    (found,) = (finding for finding in findings if finding.check == "persistence")
    return found


def test_doctor_warns_in_one_line_when_redis_keeps_nothing_on_disk(
    redis_server: EmbeddedRedis, spool_dir: Path
) -> None:
    """The tests' Redis runs with `--save '' --appendonly no`: a restart loses every record."""
    found = _persistence(redis_server.url)
    assert found.status == "warn" and "\n" not in found.detail
    assert found.detail.startswith(f"Redis at 127.0.0.1:{redis_server.port} keeps nothing on disk")
    assert "a restart loses every record" in found.detail


def test_doctor_on_persistence_says_what_it_can_tell_as_each_user(spool_dir: Path) -> None:
    """The administrator reads the settings; a user who may run INFO but not CONFIG reads what INFO
    says; the read-only reader of docs/security.md may run neither, and doctor says it cannot tell."""
    with EmbeddedRedis(extra_args=["--appendonly", "yes"]) as server, server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "reader", "on", ">CHANGE-ME", *READER_RIGHTS.split())
        admin.execute_command(
            "ACL", "SETUSER", "monitor", "on", ">CHANGE-ME", *READER_RIGHTS.split(), "+info"
        )
        as_user = server.url.replace("redis://", "redis://{}:CHANGE-ME@")

        found = _persistence(server.url)
        assert found.status == "ok" and "writes every record to its AOF (appendonly yes)" in found.detail

        found = _persistence(as_user.format("monitor"))
        assert found.status == "ok" and "(INFO aof_enabled:1)" in found.detail

        findings = diagnose(as_user.format("reader"), "ops:persistence")
        found = next(finding for finding in findings if finding.check == "persistence")
        assert found.status == "warn" and "\n" not in found.detail
        assert found.detail.startswith(f"cannot tell whether Redis at 127.0.0.1:{server.port} keeps records")
        assert "may run neither INFO nor CONFIG GET" in found.detail


def _disk_that_fills() -> None:
    """What a full disk does to a save: files past 64 KiB cannot be written (RLIMIT_FSIZE)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (65_536, 65_536))


def test_a_redis_whose_snapshot_failed_is_still_read_and_doctor_says_why(
    tmp_path: Path, spool_dir: Path
) -> None:
    """Its last RDB save failed (a full disk), and Redis refuses writes and PING (MISCONF) until
    one succeeds: every reader failed on the health-check PING before its first command, though
    Redis answers reads, and doctor said only `MISCONF`, its persistence check not run."""
    port = free_port()
    server = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "3600 1",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, preexec_fn=_disk_that_fills,
    )  # fmt: skip
    try:
        handle = RedisHandle(f"redis://127.0.0.1:{port}/0", "ops:misconf")
        wait_for(lambda: _answers(handle), what="redis-server to start")
        writer = RecordWriter(handle)
        writer.write(*(writer.row(f"order {n} paid {secrets.token_hex(100)}") for n in range(1000)))
        writer.close()
        with handle.client() as client:
            client.bgsave()
            wait_for(
                lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err", what="a failed save"
            )
            with pytest.raises(redis.ResponseError, match="MISCONF"):
                client.ping()
        found = run(handle, "search", "-g", "order 999 paid")
        assert (found.returncode, found.stdout.count("order 999 paid")) == (0, 1), found.stderr
        persistence = _persistence(handle.url)
        assert persistence.status == "fail" and "(INFO rdb_last_bgsave_status:err)" in persistence.detail
        assert "refuses every write (MISCONF)" in persistence.detail
    finally:
        server.kill()
        server.wait()


def test_doctor_names_a_master_short_of_the_replicas_it_wants_to_take_writes(spool_dir: Path) -> None:
    """`min-replicas-to-write` with no replica in sync: Redis refuses every write (NOREPLICAS), and
    doctor said the stream did not exist and no process reported, as for a wrong URL."""
    with EmbeddedRedis(extra_args=["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"]) as server:
        findings = diagnose(server.url, "ops:replicas")
        [replicas] = [finding for finding in findings if finding.check == "replicas"]
        assert replicas.status == "fail" and "\n" not in replicas.detail
        wanted = "takes a write only while 1 replicas are in sync (min-replicas-to-write) and has 0"
        assert wanted in replicas.detail
        assert "refuses every write (NOREPLICAS)" in replicas.detail


def _answers(handle: RedisHandle) -> bool:
    try:
        with handle.client() as client:
            return bool(client.ping())
    except redis.ConnectionError:
        return False


class Outage(OtlpReceiver):
    """Answers 503, as a proxy in front of a receiver that is down, for `down_s` from its first request."""

    def __init__(self, down_s: float) -> None:
        super().__init__()
        self.down_s = down_s
        self.back_at: float | None = None

    def _answer(self, path: str, body: bytes) -> Reply:
        now = time.monotonic()
        with self._lock:
            if self.back_at is None:
                self.back_at = now + self.down_s
            if now < self.back_at:
                self.attempts.append(Attempt(path, 503, now, 0))
                return Reply(503)
        return super()._answer(path, body)


def test_forward_resumes_within_seconds_of_the_receiver_coming_back(stream: RedisHandle) -> None:
    """Down for 9 s: the forwarder, as the command starts it, delivers within its 5 s longest backoff
    (and a little) of the receiver's return, having tried no more than 8 times meanwhile."""
    wanted = seed_logs(stream, 10)
    with Outage(down_s=9.0) as outage:
        settings = ForwardSettings(redis_url=stream.url, stream=stream.stream, endpoint=outage.url, block=0.1)
        forwarder = Forwarder(settings, report=lambda line: None)
        thread = threading.Thread(target=forwarder.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: set(wanted) <= set(outage.record_ids()), timeout=30, what="delivery")
        finally:
            forwarder.stop()
            thread.join(15)
    tried = [attempt for attempt in outage.attempts if attempt.path == "/v1/logs"]
    during = [attempt.at for attempt in tried if attempt.status == 503]
    delivered = next(attempt.at for attempt in tried if attempt.status == 200)
    assert outage.back_at is not None and delivered - outage.back_at < 5.5, (
        f"delivered {delivered - outage.back_at:.1f}s after the receiver came back"
    )
    assert len(during) <= 8, [round(at - during[0], 2) for at in during]


def test_services_last_seen_is_when_records_were_made_not_replayed(
    stream: RedisHandle, writer: RecordWriter, spool_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spool replayed after the fact: a service that ended looks as old as its records, and one
    that wrote a newer record meanwhile keeps that record's time."""
    command = [sys.executable, "-c", SPOOL_IN_CHILD, stream.url, stream.stream, str(spool_dir), "gone", "api"]
    subprocess.run(command, check=True, cwd=ROOT, timeout=30)
    made_by = time.time_ns() // 1_000_000
    fresh = writer.row("after the outage", service="api")
    writer.write(fresh)
    fresh_ms = int(fresh[2]) // 1_000_000  # LOG_FIELDS: v, rid, ts
    wait_for(lambda: time.time_ns() // 1_000_000 > fresh_ms + 1, what="a later millisecond")

    status, out, err = _cli(capsys, "spool", "replay", "--redis-url", stream.url, "--stream", stream.stream)
    assert status == 0 and out.startswith("replayed 2 records"), (out, err)
    with stream.client() as client:
        seen = {status.service: status.last_seen_ms for status in service_status(client, stream.stream)}
    assert seen["gone"] <= made_by, f"gone last seen {seen['gone'] - made_by} ms after its records were made"
    assert seen["api"] == fresh_ms


def test_records_of_an_app_that_cannot_reach_redis_are_said_to_wait(spool_dir: Path) -> None:
    """The line an app ends with names the stream as `spool list` and `--stream` name it, and the
    command that sends what waits."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    stderr = _run_app(RedisHandle(url, "ops:said"), spool_dir)
    said = [line for line in stderr.splitlines() if "in the spool for" in line]
    assert len(said) == 1 and "for stream 'ops:said' (" in said[0], stderr
    assert said[0].endswith(f"`tracestream spool replay --redis-url {url} --stream ops:said`")
