"""`tracestream spool list|replay|discard` and doctor on spools that dead processes left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, RedisHandle
from tracestream.cli import spool as spool_command
from tracestream.cli.common import ArgumentParser, UsageError
from tracestream.cli.doctor import diagnose
from tracestream.disk_spool import spool_for
from tracestream.settings import Settings

NOBODY = "redis://127.0.0.1:1/0"  # a destination nobody writes to any more
SPOOL_IN_CHILD = """
import sys
from tests.seeded_records import RecordWriter
from tests.support import RedisHandle
from tracestream.settings import Settings
from tracestream.disk_spool import spool_for
url, stream, base, count = sys.argv[1:]
rows = RecordWriter(RedisHandle(url, stream)).row
spool = spool_for(Settings.load(environ={}, redis_url=url, spool_dir=base), stream)
assert spool.append([rows(f"orphan {i}") for i in range(int(count))])
"""


def _orphan(url: str, stream: str, base: Path, count: int) -> None:
    """Rows spooled by a process that has ended."""
    command = [sys.executable, "-c", SPOOL_IN_CHILD, url, stream, str(base), str(count)]
    subprocess.run(command, check=True, cwd=ROOT, timeout=30)


def _spool(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command's exit status, stdout and stderr."""
    parser = ArgumentParser(prog="tracestream")
    spool_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["spool", *argv])
    status = args.run(args)
    out, err = capsys.readouterr()
    return status, out, err


def _listed(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    status, out, _ = _spool(capsys, "list", "--json")
    assert status == 0
    return [json.loads(line) for line in out.splitlines()]


def test_orphans_are_listed_replayed_into_their_redis_or_discarded(
    stream: RedisHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACESTREAM_SPOOL_DIR", str(tmp_path))
    _orphan(stream.url, stream.stream, tmp_path, 20)
    _orphan(NOBODY, stream.stream, tmp_path, 5)
    listed = {entry["records"]: entry for entry in _listed(capsys)}
    assert set(listed) == {20, 5} and not any(entry["live"] for entry in listed.values())
    assert str(listed[5]["destination"]).endswith("on redis://127.0.0.1:1/0")

    doctor = [f for f in diagnose(stream.url, stream.stream) if f.check == "spool"]
    assert len(doctor) == 2 and all(f.status == "warn" for f in doctor)
    assert any(f"spool discard --id {listed[5]['id']}" in f.detail for f in doctor)

    status, out, _ = _spool(capsys, "replay", "--redis-url", stream.url, "--stream", stream.stream)
    assert status == 0 and out.startswith("replayed 20 records")
    assert [entry.body for entry in stream.logs()] == [f"orphan {i}" for i in range(20)]
    assert [entry["records"] for entry in _listed(capsys)] == [5]  # the other destination's stay

    status, out, _ = _spool(capsys, "discard", "--id", str(listed[5]["id"]))
    assert status == 0 and out.startswith("discarded 5 spooled records")
    assert _listed(capsys) == []


def test_a_backlog_spooled_for_a_wrong_url_is_sent_where_the_operator_says(
    stream: RedisHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spooled while the URL named a replica (READONLY), `redis://` at a TLS port or a host by
    another name: the fixed URL is another destination, so the backlog waited for the wrong
    one for ever. `replay --id` sends it to the Redis and stream the command names, only when
    it names them: records never go to another Redis by default."""
    monkeypatch.setenv("TRACESTREAM_SPOOL_DIR", str(tmp_path))
    _orphan(NOBODY, "old-name", tmp_path, 4)
    [backlog] = _listed(capsys)
    with pytest.raises(UsageError, match="--redis-url"):
        _spool(capsys, "replay", "--id", str(backlog["id"]))
    with pytest.raises(UsageError, match="no backlog left by an ended process has the id 'nope'"):
        _spool(capsys, "replay", "--id", "nope", "--redis-url", stream.url, "--stream", stream.stream)
    argv = ["replay", "--id", str(backlog["id"]), "--redis-url", stream.url, "--stream", stream.stream]
    status, out, _ = _spool(capsys, *argv)
    assert status == 0 and out.startswith(f"replayed 4 records to {stream.url}")
    assert [entry.body for entry in stream.logs()] == [f"orphan {i}" for i in range(4)]
    assert _listed(capsys) == []


def test_dead_letters_are_listed_with_their_reason_and_discarded(
    stream: RedisHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACESTREAM_SPOOL_DIR", str(tmp_path))
    spool = spool_for(Settings.load(environ={}, redis_url=stream.url, spool_dir=str(tmp_path)), stream.stream)
    assert spool is not None and spool.dead_letter([["a"], ["b"]], "WRONGTYPE Operation against a key")
    (letters,) = _listed(capsys)
    assert letters["kind"] == "dead-letters" and letters["reasons"] == {
        "WRONGTYPE Operation against a key": 2
    }
    status, out, _ = _spool(capsys, "list")
    assert status == 0 and "2 records Redis refused" in out and "WRONGTYPE" in out

    args = ("--redis-url", stream.url, "--stream", stream.stream)
    _spool(capsys, "discard", *args)
    assert len(_listed(capsys)) == 1  # dead letters go only when asked for
    status, out, _ = _spool(capsys, "discard", "--dead-letters", *args)
    assert out.startswith("discarded 0 spooled records and 2 dead-lettered records")
    assert _listed(capsys) == []


def test_replay_with_redis_down_keeps_the_rows_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACESTREAM_SPOOL_DIR", str(tmp_path))
    monkeypatch.setenv("TRACESTREAM_REDIS_TIMEOUT", "200ms")
    _orphan(NOBODY, "down", tmp_path, 3)
    status, _, err = _spool(capsys, "replay", "--redis-url", NOBODY, "--stream", "down")
    assert status == 1
    # at the first failure, not after the replay's 60 s: the line says why
    assert err.endswith(
        f"tracestream: Redis at {NOBODY} did not take everything (its writes failed, as said above); "
        "the rest stays spooled\n"
    ), err
    assert [entry["records"] for entry in _listed(capsys)] == [3]
