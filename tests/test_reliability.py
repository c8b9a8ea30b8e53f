"""Fault injection against real redis-server processes: nothing logged is lost beyond counted drops.

Each writer is a real process (tests/apps/reliability_writer.py) logging numbered records;
the checks count, by number and record id, what reached the stream.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from functools import partial
from itertools import islice
from pathlib import Path

import httpx
import pytest
import redis

from tests.apps.servers import LAUNCHER_ENV, Server, bin_path, http_ready, launched, printed, run_json, serve
from tests.faults import DurableRedis, FaultyProxy
from tests.pipelines import PrivatePipeline
from tests.support import ROOT, RedisHandle, interruptible, run_python, wait_for
from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.export_status import read_statuses
from tracestream.exporters import RedisStreamLogExporter
from tracestream.exporters.write_health import WriteHealth
from tracestream.otel_setup import pipeline
from tracestream.otel_setup.processors import StreamLogProcessor
from tracestream.schema import LogEntry
from tracestream.settings import BatchSettings, Settings


@pytest.fixture(scope="module")
def durable() -> Iterator[DurableRedis]:
    with DurableRedis() as server:
        yield server


@pytest.fixture
def handle(durable: DurableRedis) -> RedisHandle:
    return RedisHandle(url=durable.url, stream=f"rel:{uuid.uuid4().hex[:10]}")


class Writer:
    """A reliability_writer process whose output lines can be awaited."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.apps.reliability_writer", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.logged = 0
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line.strip())

    def wait_line(self, predicate: str, timeout: float = 20) -> str:
        """The first output line starting with `predicate`, keeping track of the `logged` count."""

        def found() -> str | None:
            while not self.lines.empty():
                line = self.lines.get()
                if line.startswith("logged "):
                    self.logged = int(line.split()[1])
                if line.startswith(predicate):
                    return line
            return None

        return wait_for(found, timeout, what=f"writer output {predicate!r}")

    def wait_logged(self, count: int) -> None:
        wait_for(lambda: self._drain_logged() >= count, 20, what=f"{count} records logged")

    def _drain_logged(self) -> int:
        if self.process.poll() not in (None, 0):
            raise AssertionError(
                f"writer exited with {self.process.returncode}: {self.process.stderr.read()}"
            )  # type: ignore[union-attr]
        while not self.lines.empty():
            line = self.lines.get()
            if line.startswith("logged "):
                self.logged = int(line.split()[1])
        return self.logged

    def result(self, timeout: float = 30) -> dict[str, float]:
        self.process.wait(timeout)
        stderr = self.process.stderr.read() if self.process.stderr else ""
        assert self.process.returncode == 0, stderr
        return json.loads(self.wait_line("{", 5))  # type: ignore[no-any-return]


def _env(handle: RedisHandle, spool: Path, url: str | None = None, **extra: str) -> dict[str, str]:
    return handle.env(
        TRACESTREAM_REDIS_URL=url or handle.url,
        TRACESTREAM_SPOOL_DIR=str(spool),
        TRACESTREAM_REDIS_TIMEOUT="300ms",
        OTEL_SERVICE_NAME="writer",
        **extra,
    )


def delivered(handle: RedisHandle, label: str = "rec") -> list[int]:
    """Record numbers in stream order, duplicates (same record id) dropped as readers do."""
    seen: set[str] = set()
    numbers = []
    for entry in handle.logs():
        if entry.record_id in seen:
            continue
        seen.add(entry.record_id)
        name, number = entry.body.split()
        if name == label:
            numbers.append(int(number))
    return numbers


def test_records_survive_kill_9_and_restart_of_redis(
    durable: DurableRedis, handle: RedisHandle, tmp_path: Path
) -> None:
    writer = Writer(_env(handle, tmp_path), "--count", "3000", "--rate", "3000")
    writer.wait_logged(600)
    durable.kill()
    writer.wait_logged(1800)
    durable.start()
    status = writer.result()
    assert delivered(handle) == list(range(3000))
    assert status["spooled"] > 0 and status["replayed"] == status["spooled"] and status["dropped"] == 0


def test_frozen_redis_never_blocks_the_app(
    durable: DurableRedis, handle: RedisHandle, tmp_path: Path
) -> None:
    writer = Writer(_env(handle, tmp_path), "--count", "3000", "--rate", "2000")
    writer.wait_logged(400)
    durable.freeze()
    try:
        writer.wait_logged(2000)  # a second and more with Redis answering nothing
    finally:
        durable.thaw()
    status = writer.result()
    assert delivered(handle) == list(range(3000))
    assert status["failed_attempts"] > 0 and status["dropped"] == 0
    assert status["slowest_info_s"] < 0.1  # the 300 ms Redis timeout never reached the app thread


# A pool whose tasks log while Redis answers nothing; the test freezes Redis once it is ready.
FROZEN_POOL = """
import logging, multiprocessing, sys, time
import tracestream

tracestream.configure()
log = logging.getLogger("pooled")


def f(x):
    log.warning("rec %d", x)
    return x


if __name__ == "__main__":
    with multiprocessing.get_context("fork").Pool(2) as pool:
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.monotonic()
        assert pool.map(f, range(20), chunksize=1) == list(range(20))
        print(f"{time.monotonic() - started:.2f}", flush=True)
"""


def test_a_pools_tasks_do_not_each_wait_on_a_frozen_redis(
    durable: DurableRedis, handle: RedisHandle, tmp_path: Path
) -> None:
    """A worker writes its records before each result; while Redis is failing they go straight
    to the spool, rather than each task waiting out the Redis timeout (1 s here: 10 s a worker)."""
    env = {**_env(handle, tmp_path), "TRACESTREAM_REDIS_TIMEOUT": "1s"}
    command = [sys.executable, "-c", FROZEN_POOL]
    with subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as pool:
        assert pool.stdin is not None and pool.stdout is not None
        assert pool.stdout.readline() == "ready\n"
        durable.freeze()
        try:
            pool.stdin.write("go\n")
            pool.stdin.flush()
            elapsed = float(pool.stdout.readline())
        finally:
            durable.thaw()
        pool.communicate(timeout=30)
    assert pool.returncode == 0
    assert elapsed < 5
    replay = ["spool", "replay", "--redis-url", handle.url, "--stream", handle.stream]
    subprocess.run([bin_path("tracestream"), *replay], env=env, check=True, capture_output=True, timeout=60)
    assert sorted(delivered(handle)) == list(range(20))


def test_a_proxy_that_cuts_and_stalls_loses_nothing(
    durable: DurableRedis, handle: RedisHandle, tmp_path: Path
) -> None:
    with FaultyProxy(durable.port) as proxy:
        writer = Writer(_env(handle, tmp_path, proxy.url), "--count", "3000", "--rate", "3000")
        writer.wait_logged(500)
        proxy.cut()
        writer.wait_logged(1000)
        proxy.stall()
        writer.wait_logged(2200)  # 0.4 s at 3,000/s: longer than the 300 ms Redis timeout
        proxy.resume()
        proxy.cut()  # the stalled connections are dead weight now
        writer.wait_logged(2600)
        proxy.cut()
        status = writer.result()
    assert delivered(handle) == list(range(3000))
    assert status["failed_attempts"] > 0 and status["dropped"] == 0


def test_a_stall_longer_than_the_queue_lasts_spools_instead_of_dropping(
    durable: DurableRedis, handle: RedisHandle, tmp_path: Path
) -> None:
    """Redis takes connections and answers nothing for a second: each call waits out the Redis
    timeout (300 ms) while the app logs 1,500 records, more than the queue holds (1,000). The
    queue goes to the spool behind the batch in flight, and every record arrives, once, in order."""
    small_queue = {"OTEL_BLRP_MAX_QUEUE_SIZE": "1000", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "100"}
    with FaultyProxy(durable.port) as proxy:
        env = _env(handle, tmp_path, proxy.url, **small_queue)
        writer = Writer(env, "--count", "12000", "--rate", "5000")
        writer.wait_logged(1000)
        proxy.stall()
        writer.wait_logged(6000)
        proxy.resume()
        proxy.cut()  # the stalled connections are dead weight now
        status = writer.result()
    assert status["dropped"] == 0 and status["spooled"] > 1000, status
    assert delivered(handle) == list(range(12000))


LOG_AND_SPAN_THEN_EXIT = """
import logging, sys, tracestream
from opentelemetry import trace
tracestream.configure()
logging.getLogger("shop").warning("rec 0")
with trace.get_tracer("shop").start_as_current_span("checkout"):
    pass
print("logged", flush=True)
sys.stdin.readline()
"""


def test_at_exit_a_redis_one_writer_found_not_answering_is_not_waited_for_again(
    durable: DurableRedis, handle: RedisHandle, tmp_path: Path
) -> None:
    """Redis froze: the log writer's flush waited out the Redis timeout, then the span writer's
    waited it out again on a connection of its own, and the exit overran the shutdown timeout."""
    with FaultyProxy(durable.port) as proxy:
        env = {**_env(handle, tmp_path, proxy.url), "TRACESTREAM_REDIS_TIMEOUT": "2s"}
        env["TRACESTREAM_BATCH_DELAY_MS"] = "60000"
        app = subprocess.Popen(
            [sys.executable, "-c", LOG_AND_SPAN_THEN_EXIT], env=env, cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert app.stdout is not None and app.stdout.readline() == "logged\n"
        proxy.stall()
        started = time.monotonic()
        _, stderr = app.communicate("exit\n", timeout=30)
        took = time.monotonic() - started
        proxy.resume()
        proxy.cut()
        assert "2 records wait in the spool" in stderr and "(1 log record, 1 span)" in stderr, stderr
        assert took < 3.5, f"the exit took {took:.1f} s with a 2 s Redis timeout"
        replay = ["spool", "replay", "--redis-url", proxy.url, "--stream", handle.stream]
        subprocess.run(
            [bin_path("tracestream"), *replay], env=env, check=True, capture_output=True, timeout=60
        )
    assert delivered(handle) == [0] and len(handle.spans()) == 1


def test_a_full_spool_and_queue_drop_only_what_they_count(
    durable: DurableRedis, handle: RedisHandle, tmp_path: Path
) -> None:
    with FaultyProxy(durable.port) as proxy:
        settings = Settings.load(
            environ={},
            redis_url=proxy.url,
            stream=handle.stream,
            redis_timeout="300ms",
            spool_dir=str(tmp_path),
            spool_max_bytes="48KiB",
        )
        batch = BatchSettings(schedule_delay=0.02, max_queue_size=500, max_export_batch_size=100)
        private = PrivatePipeline(settings, batch, service="full")
        processor, logger = private.logs, private.logger
        queue_ = processor.queue

        proxy.down()
        spool_at_first_drop = 0
        for chunk in range(0, 20_000, 200):  # paced, so the worker keeps up until the spool is full
            for i in range(chunk, chunk + 200):
                logger.info("rec %d %s", i, "padding " * 8)
            if not spool_at_first_drop:
                wait_for(lambda: len(queue_) == 0 or queue_._held is not None, what="the worker to catch up")
                if queue_.counters.dropped_queue_full:
                    spool_at_first_drop = queue_.status()["spool_bytes"]
        assert spool_at_first_drop > 40 * 1024  # of 48 KiB: drops began only once the spool was full
        proxy.up()
        assert processor.force_flush(10_000)

    counters = queue_.counters
    numbers = [int(entry.body.split()[1]) for entry in handle.logs()]
    assert counters.exported + counters.dropped == 20_000
    assert len(set(numbers)) == counters.exported > 0
    assert numbers == sorted(numbers)  # what survived kept its order
    private.close()


QUEUE_FILLS = """
import logging, tracestream
tracestream.configure(service_name="burst")
for number in range(5000):
    logging.getLogger("burst").warning("record %d", number)
"""


def test_a_full_queue_says_so_as_it_starts_dropping_and_counts_them_at_exit(tmp_path: Path) -> None:
    """Redis is unreachable and the spool is off, so the queue fills: one line as the drops
    begin, naming the setting that raises the limit, and their count as the process ends."""
    unreachable = RedisHandle(url=f"redis://127.0.0.1:{free_port()}/0", stream="burst")
    env = unreachable.env(
        TRACESTREAM_SPOOL_MAX_BYTES="0",
        TRACESTREAM_SHUTDOWN_TIMEOUT="200ms",
        OTEL_BLRP_MAX_QUEUE_SIZE="300",
        OTEL_BLRP_MAX_EXPORT_BATCH_SIZE="100",
    )
    said = [line for line in run_python(QUEUE_FILLS, env).splitlines() if "queue" in line]
    assert said[0] == (
        "tracestream: WARNING logs: the queue is full (300 records): new records are dropped until it "
        "drains, as the app logs faster than they reach Redis or the spool; OTEL_BLRP_MAX_QUEUE_SIZE "
        "raises the limit"
    )
    [count] = [int(n) for line in said[1:] for n in re.findall(r"logs: (\d+) records were dropped", line)]
    assert 4000 < count < 5000 and len(said) == 2, said


def test_sigterm_during_load_flushes_everything_logged(handle: RedisHandle, tmp_path: Path) -> None:
    writer = Writer(_env(handle, tmp_path), "--count", "-1", "--rate", "3000")
    writer.wait_logged(1000)
    writer.process.send_signal(signal.SIGTERM)
    assert writer.process.wait(10) == -signal.SIGTERM  # still dies of the signal, as without us
    numbers = delivered(handle)
    assert len(numbers) >= 1000 and numbers == list(range(len(numbers)))


def test_sigterm_with_redis_down_spools_and_the_next_process_replays(
    durable: DurableRedis, handle: RedisHandle, tmp_path: Path
) -> None:
    with FaultyProxy(durable.port) as proxy:
        proxy.down()
        writer = Writer(_env(handle, tmp_path, proxy.url), "--count", "-1", "--rate", "3000")
        writer.wait_logged(600)
        writer.process.send_signal(signal.SIGTERM)
        assert writer.process.wait(10) == -signal.SIGTERM
        assert handle.logs() == [] and list(tmp_path.glob("*/*/*.seg"))

        proxy.up()
        Writer(_env(handle, tmp_path, proxy.url), "--count", "0").result()  # the same destination
    numbers = delivered(handle)
    assert len(numbers) >= 600 and numbers == list(range(len(numbers)))
    assert list(tmp_path.iterdir()) == []  # the replayed orphan is gone


def test_after_an_outage_and_a_restart_every_record_is_stored_once(
    durable: DurableRedis, handle: RedisHandle, tmp_path: Path
) -> None:
    """The segment written during the outage is replayed by its process; the next process on
    the same destination must find nothing left to replay again."""
    with FaultyProxy(durable.port) as proxy:
        writer = Writer(_env(handle, tmp_path, proxy.url), "--count", "2000", "--rate", "4000")
        writer.wait_logged(300)
        proxy.down()
        writer.wait_logged(1200)
        wait_for(lambda: list(tmp_path.rglob("*.seg")), what="records in the spool")  # a busy worker is late
        proxy.up()
        status = writer.result()
        assert status["spooled"] > 0 and status["replayed"] == status["spooled"]
        Writer(_env(handle, tmp_path, proxy.url), "--count", "10", "--label", "next").result()
    ids = [entry.record_id for entry in handle.logs()]
    assert len(ids) == len(set(ids)) == 2010  # no entry twice, none missing
    assert delivered(handle) == list(range(2000))


def test_a_spool_left_by_kill_9_is_replayed_by_the_next_process(
    durable: DurableRedis, handle: RedisHandle, tmp_path: Path
) -> None:
    with FaultyProxy(durable.port) as proxy:
        proxy.down()
        crashed = Writer(_env(handle, tmp_path, proxy.url), "--count", "500", "--then", "spooled")
        crashed.wait_line("spooled")
        crashed.process.kill()
        crashed.process.wait()

        proxy.up()
        Writer(_env(handle, tmp_path, proxy.url), "--count", "50", "--label", "next").result()
    assert delivered(handle) == list(range(500))
    assert delivered(handle, "next") == list(range(50))
    bodies = [entry.body.split()[0] for entry in handle.logs()]
    assert bodies.index("next") == 500  # the dead process's records went first


def test_spooled_records_go_back_only_to_the_redis_they_were_meant_for(
    durable: DurableRedis, handle: RedisHandle, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Same stream name, same spool directory, another Redis (staging next to production)."""
    other = RedisHandle(url=redis_server.url, stream=handle.stream)
    with FaultyProxy(durable.port) as proxy:
        proxy.down()
        crashed = Writer(_env(handle, tmp_path, proxy.url), "--count", "300", "--then", "spooled")
        crashed.wait_line("spooled")
        crashed.process.kill()
        crashed.process.wait()

        Writer(_env(other, tmp_path), "--count", "20", "--label", "elsewhere").result()
        assert delivered(other, "elsewhere") == list(range(20)) and delivered(other) == []

        proxy.up()
        Writer(_env(handle, tmp_path, proxy.url), "--count", "10", "--label", "next").result()
    assert delivered(handle) == list(range(300))
    assert delivered(handle, "next") == list(range(10))
    assert delivered(other) == []


def test_status_key_feeds_doctor(
    handle: RedisHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "STATUS_INTERVAL", 0.05)
    settings = Settings.load(environ={}, redis_url=handle.url, stream=handle.stream, service_name="doc")
    batch = BatchSettings(schedule_delay=0.02, max_queue_size=100, max_export_batch_size=10)
    processor = StreamLogProcessor(RedisStreamLogExporter(settings), batch)
    for i in range(7):
        processor.queue.put(_Record(i))  # type: ignore[arg-type]
    assert processor.force_flush(5_000)
    with handle.client() as client:
        status = wait_for(
            lambda: [s for s in read_statuses(client, handle.stream) if s.fields.get("logs.exported") == 7],
            what="a status hash with 7 exported",
        )[0]
        assert status.process.startswith("doc:") and 0 < client.ttl(status.key) <= 30
        assert "logs: exported 7, spooled 0, replayed 0, dropped 0, dead-lettered 0" in status.line()
        assert status.problems() == ("ok", [])
    processor.shutdown()


def test_doctor_counts_an_outage_a_writer_came_through_without_a_warning(
    durable: DurableRedis, handle: RedisHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed attempts were a warning for the rest of the process's life, long after writes
    succeeded again and the spool was replayed: the line counts them instead."""
    monkeypatch.setattr(pipeline, "STATUS_INTERVAL", 0.05)
    with FaultyProxy(durable.port) as proxy:
        settings = Settings.load(
            environ={}, redis_url=proxy.url, stream=handle.stream, service_name="doc", spool_dir=str(tmp_path)
        )
        batch = BatchSettings(schedule_delay=0.02, max_queue_size=100, max_export_batch_size=10)
        exporter = RedisStreamLogExporter(settings)
        exporter.writer.health = WriteHealth(hold_s=0.2)  # failing until writes go through for 0.2 s
        processor = StreamLogProcessor(exporter, batch)
        proxy.down()
        processor.queue.put(_Record(0))  # type: ignore[arg-type]
        wait_for(lambda: processor.queue.counters.failed_attempts > 0, what="a failed attempt")
        proxy.up()
        processor.queue.put(_Record(1))  # type: ignore[arg-type]
        with handle.client() as client:
            [status] = wait_for(
                lambda: [
                    s
                    for s in read_statuses(client, handle.stream)
                    if s.fields.get("logs.exported") == 2
                    and s.fields.get("logs.replayed") == s.fields["logs.spooled"]
                    and not s.errors
                ],
                what="a status hash with both records stored, the spool replayed and writes healthy",
            )
        processor.shutdown()
    assert status.problems() == ("ok", [])
    assert re.search(r", failed attempts [1-9][0-9]*$", status.line()), status.line()


def test_doctor_fails_while_a_running_service_cannot_write(tmp_path: Path) -> None:
    """SCRIPT renamed away: every write of a running service fails while its status hash still goes
    in. Doctor says why (the writer's last error) and counts its spool, exit 1, not "lately nothing"."""
    with EmbeddedRedis(extra_args=["--rename-command", "SCRIPT", ""]) as server:
        handle = RedisHandle(url=server.url, stream="tracestream")
        env = _env(handle, tmp_path, COLUMNS="400")
        writer = Writer(env, "--count", "-1", "--rate", "50")
        try:
            writer.wait_logged(100)

            def doctor() -> subprocess.CompletedProcess[str] | None:
                done = subprocess.run(
                    [bin_path("tracestream"), "doctor"], env=env, capture_output=True, text=True, timeout=60
                )
                return done if "✗ spool" in done.stdout and "✗ exporter" in done.stdout else None

            done = wait_for(doctor, 30, interval=0.5, what="doctor naming the failing exporter and its spool")
        finally:
            writer.process.terminate()
            writer.process.wait(30)
    assert done.returncode == 1, done.stdout
    exporter = next(line for line in done.stdout.splitlines() if line.startswith("✗ exporter"))
    assert "writer:" in exporter and "logs: cannot write to Redis: ERR unknown command 'SCRIPT'" in exporter
    assert "with args beginning with" not in exporter, exporter  # Redis quotes the script it was sent
    spool = next(line for line in done.stdout.splitlines() if line.startswith("✗ spool"))
    assert re.search(r": [1-9][0-9]* records for .* wait in ", spool), spool


class _Record:
    """The smallest pending record: the exporter only asks it for its stream values."""

    def __init__(self, number: int) -> None:
        self.number = number

    def stream_values(self, record_id: str, encode_resource: object) -> list[str]:
        from tracestream.exporters import encoding

        resource = encoding.EncodedResource("{}", "doc")
        return encoding.log_values(
            record_id,
            1,
            "INFO",
            9,
            f"rec {self.number}",
            resource,
            0,
            0,
            0,
            "t",
            "",
            {},
            encoding.NO_EXCEPTION,
        )


def test_counters_are_otel_metrics(handle: RedisHandle, tmp_path: Path) -> None:
    code = """
import logging
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
import tracestream
telemetry = tracestream.configure(traces_exporter="none")
for i in range(5):
    logging.getLogger("m").warning("rec %d", i)
assert telemetry.force_flush(5)
for metric in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics:
    for point in metric.data.data_points:
        print(metric.name, dict(point.attributes)["signal"], point.value)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(handle, tmp_path), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    figures = {tuple(line.split()[:2]): float(line.split()[2]) for line in done.stdout.splitlines()}
    assert figures[("tracestream.records.exported", "logs")] == 5
    assert figures[("tracestream.records.dropped", "logs")] == 0
    assert ("tracestream.disk_spool.size", "logs") in figures


SHUTDOWN_TIMEOUT = 5.0  # the default, set explicitly
# Exit may take this much longer than the flush deadline: the server's own graceful shutdown,
# interpreter teardown, and a loaded 2-core machine.
EXIT_MARGIN = 5.0
TASKS = 60
# What a server logged, as (attribute, value) marks its records carry (see `_marks`).
Marks = set[tuple[str, object]]
# The running server, and what loads it (returning the marks of every record that must arrive).
ServerUnderTest = tuple[AbstractContextManager[Server], Callable[[Server], Marks]]
PUBLISH_TASKS = f"""
import json
from tests.apps.celery_app import process_order
print(json.dumps([process_order.delay(order).id for order in range(1, {TASKS + 1})]))
"""


def _marks(entry: LogEntry) -> Marks:
    attributes = entry.attributes
    marks: Marks = {(name, attributes[name]) for name in ("item.id", "order.id") if name in attributes}
    if "celery.task.state" in attributes:
        marks.add((attributes["celery.task.state"], attributes["celery.task.id"]))
    return marks


def _served(base: str) -> Marks:
    """Requests over concurrent connections until both workers have served some."""
    pids: set[int] = set()
    items = iter(range(1, 10_000))

    def serve_some() -> bool:
        with ThreadPoolExecutor(8) as pool:
            pids.update(pool.map(lambda i: httpx.get(f"{base}/items/{i}").json()["pid"], islice(items, 40)))
        return len(pids) == 2

    wait_for(serve_some, timeout=30, interval=0.1, what="both workers to serve")
    return {("item.id", item) for item in range(1, next(items))}


def _http_server(program: str, *args: str) -> Callable[[RedisHandle, EmbeddedRedis], ServerUnderTest]:
    def start(handle: RedisHandle, _: EmbeddedRedis) -> ServerUnderTest:
        port = free_port()
        address = f"127.0.0.1:{port}" if program == "gunicorn" else str(port)
        base = f"http://127.0.0.1:{port}"
        env = _shutdown_env(handle, OTEL_SERVICE_NAME="api")
        running = serve([bin_path(program), *args, address], env, http_ready(f"{base}/items/0"))
        return running, lambda _: _served(base)

    return start


def _celery_worker(handle: RedisHandle, broker_server: EmbeddedRedis) -> ServerUnderTest:
    """A prefork worker whose two children stay alive across tasks, holding their records.

    The main process holds the `received` records; the children the task's own line and
    the `started` and `succeeded` records.
    """
    broker = f"redis://127.0.0.1:{broker_server.port}/3"
    command = [bin_path("celery"), "-A", "tests.apps.celery_app", "worker", "-c", "2", "-n", "rel@e2e"]
    env = _shutdown_env(
        handle, OTEL_SERVICE_NAME="worker", CELERY_BROKER_URL=broker, CELERY_MAX_TASKS_PER_CHILD="0"
    )
    ready = partial(printed, text="ready.")
    running = serve(launched(*command, "-l", "INFO"), {**env, **LAUNCHER_ENV}, ready, timeout=60)

    def run_tasks(server: Server) -> Marks:
        task_ids = run_json(PUBLISH_TASKS, handle.env(CELERY_BROKER_URL=broker))
        wait_for(lambda: server.output().count("succeeded in") >= TASKS, timeout=60, what="every task")
        states = ("received", "started", "succeeded")
        return {("order.id", order) for order in range(1, TASKS + 1)} | {
            (state, task_id) for state in states for task_id in task_ids
        }

    return running, run_tasks


SERVERS = {
    "uvicorn --workers 2": _http_server("uvicorn", "tests.apps.fastapi_app:app", "--workers", "2", "--port"),
    "gunicorn -w 2": _http_server(
        "gunicorn", "tests.apps.fastapi_app:app", "-w", "2", "-k", "uvicorn.workers.UvicornWorker", "-b"
    ),
    "celery worker (prefork -c 2)": _celery_worker,
}


def _shutdown_env(handle: RedisHandle, **extra: str) -> dict[str, str]:
    """A 60 s batch delay: only the flush at shutdown can deliver these records."""
    return handle.env(
        TRACESTREAM_BATCH_DELAY_MS="60000", TRACESTREAM_SHUTDOWN_TIMEOUT=f"{SHUTDOWN_TIMEOUT}s", **extra
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("server", sorted(SERVERS))
def test_a_signal_to_the_server_flushes_every_worker(
    stream: RedisHandle, redis_server: EmbeddedRedis, server: str, signum: signal.Signals
) -> None:
    """On the session's plain Redis (no fsync per write): this is about the flush, not Redis."""
    running, load = SERVERS[server](stream, redis_server)
    with running as process:
        logged = load(process)
        assert stream.logs() == []  # still queued in the workers
        os.killpg(process.process.pid, signum)  # as Ctrl+C in a terminal, or systemd: every process
        signalled = time.monotonic()
        try:
            process.process.wait(SHUTDOWN_TIMEOUT + EXIT_MARGIN)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running after the shutdown timeout; output:\n{process.output()}"
            ) from None
        took = time.monotonic() - signalled
        output = process.output()
    entries = stream.logs()
    delivered = set().union(*map(_marks, entries))
    assert delivered >= logged, f"missing {sorted(logged - delivered, key=str)[:10]}; output:\n{output}"
    assert len({entry.resource["process.pid"] for entry in entries if _marks(entry)}) >= 2
    assert took < SHUTDOWN_TIMEOUT + EXIT_MARGIN


def test_a_supervisors_sigterm_waits_for_a_workers_exit_flush(
    stream: RedisHandle, redis_server: EmbeddedRedis
) -> None:
    """uvicorn's workers load the app, and configure(), inside their server's signal handling,
    which puts back the handlers it found (SIGTERM's default action) before the exit's flush; the
    supervisor SIGTERMs a worker still alive after Ctrl-C. One still flushing died, its records
    lost, nothing said. Here Redis stalls until the supervisor has sent it, and the supervisor
    hears of Ctrl-C last, as when it is busy."""
    with FaultyProxy(redis_server.port) as proxy:
        handle = RedisHandle(url=proxy.url, stream=stream.stream)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = _shutdown_env(handle, OTEL_SERVICE_NAME="api", TRACESTREAM_REDIS_TIMEOUT="10s")
        command = [bin_path("uvicorn"), "tests.apps.fastapi_app:app", "--workers", "2", "--port", str(port)]
        with serve(command, env, http_ready(f"{base}/items/0")) as running:
            logged = _served(base)
            proxy.stall()
            workers = [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", running.output())]
            for pid in workers:  # Ctrl-C reaches them first: the supervisor waits up to 0.5 s
                os.kill(pid, signal.SIGINT)
            wait_for(
                lambda: running.output().count("Finished server process") == 2,
                what="both workers' servers to finish, their exit flush stalled",
            )
            running.process.send_signal(signal.SIGINT)
            wait_for(
                lambda: running.output().count("Terminated child process") == 2,
                what="the supervisor's SIGTERM to both flushing workers",
            )
            proxy.resume()
            running.process.wait(SHUTDOWN_TIMEOUT + EXIT_MARGIN)
            output = running.output()
    delivered = set().union(*map(_marks, stream.logs()))
    assert delivered >= logged, f"missing {sorted(logged - delivered, key=str)[:10]}; output:\n{output}"


def test_a_sigterm_while_python_waits_for_the_apps_threads_after_ctrl_c_flushes_first(
    stream: RedisHandle,
) -> None:
    """uvicorn's workers, after Ctrl-C, put back SIGTERM's default action and raise the
    KeyboardInterrupt; Python then waits for the app's pool threads before `atexit`. The
    supervisor's SIGTERM to a worker still alive (or a Procfile runner's, which signals every
    process after Ctrl-C) killed it then, with every record it held."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _shutdown_env(stream, OTEL_SERVICE_NAME="api", MAIL_SERVER_DELAY="8")
    command = [bin_path("uvicorn"), "tests.apps.fastapi_executor:app", "--workers", "2", "--port", str(port)]
    with serve(command, env, http_ready(f"{base}/docs")) as running:
        pids: dict[int, int] = {}
        orders = iter(range(1, 1000))
        wait_for(
            lambda: (
                len(pids) == 2
                or pids.setdefault(httpx.post(f"{base}/orders/{next(orders)}").json()["pid"], 0)
            ),
            what="both workers to take an order",
        )
        placed = {("order.id", order) for order in range(1, next(orders))}
        for pid in pids:  # Ctrl-C reaches them first
            os.kill(pid, signal.SIGINT)
        wait_for(
            lambda: running.output().count("Finished server process") == 2, what="both servers to finish"
        )
        running.process.send_signal(signal.SIGINT)
        wait_for(
            lambda: running.output().count("Terminated child process") == 2, what="the supervisor's SIGTERMs"
        )
        running.process.wait(SHUTDOWN_TIMEOUT + EXIT_MARGIN)
        output = running.output()
    delivered = set().union(*map(_marks, stream.logs()))
    assert delivered >= placed, f"missing {sorted(placed - delivered, key=str)[:10]}; output:\n{output}"


DEMO_REDIS = """
import sys, time
import redis
sys.path.insert(0, "examples")
import demo
with demo.redis_url(None) as url:
    try:
        print(url, flush=True)
        time.sleep(60)
    except KeyboardInterrupt:  # the demo now stops its children, which flush into Redis for a while
        client = redis.Redis.from_url(url)
        answers = [client.ping() and not time.sleep(0.05) for _ in range(30)]
        print("redis answers after Ctrl-C:", all(answers), flush=True)
"""


def test_ctrl_c_in_the_demo_leaves_its_redis_running_until_the_children_are_stopped() -> None:
    """Ctrl-C signals the terminal's whole foreground process group, the demo's private
    redis-server included; it must outlive the children that still flush into it."""
    demo = subprocess.Popen(
        [sys.executable, "-c", DEMO_REDIS],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a shell gives a foreground job
        preexec_fn=interruptible,
    )
    assert demo.stdout is not None
    url = ""
    while not url.startswith("redis://"):  # after the demo's own "private redis-server at …" line
        url = demo.stdout.readline().strip()
        assert url or demo.poll() is None, demo.stderr.read() if demo.stderr else ""
    os.killpg(demo.pid, signal.SIGINT)
    out, err = demo.communicate(timeout=20)
    assert "redis answers after Ctrl-C: True" in out, err
    with pytest.raises(redis.ConnectionError):  # and then it was stopped
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


# A worker's signal setup, as gunicorn's sync worker makes it before it imports the app (which
# calls configure()): SIGTERM sets a flag, SIGINT and SIGQUIT exit. `SIGNALS` arrive 5 ms apart,
# as when Ctrl-C or systemd's stop reaches the whole group and the master then signals too.
WORKER_SIGNALS = """
import logging, os, signal, subprocess, sys, time
alive = True
def stop(signum, frame):
    global alive
    alive = False
def leave(signum, frame):
    time.sleep(0.1)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, leave)
signal.signal(signal.SIGQUIT, leave)
import tracestream
tracestream.configure(service_name="worker")
for number in range(3000):
    logging.getLogger("app").info("record %d", number)
began = time.monotonic()
first, second = SIGNALS
subprocess.Popen(["sh", "-c", f"kill -{first} {os.getpid()}; sleep 0.005; kill -{second} {os.getpid()}"])
while alive:
    time.sleep(0.01)
print(round(time.monotonic() - began, 2), flush=True)
"""


@pytest.mark.parametrize("signals", [("TERM", "TERM"), ("INT", "QUIT")], ids=["term-term", "int-quit"])
def test_a_second_signal_during_the_exit_flush_neither_stalls_it_nor_loses_records(
    stream: RedisHandle, signals: tuple[str, str]
) -> None:
    """The second signal's handler runs inside our flush: a flush of ours waited there for the
    first one's lock until the shutdown timeout; a handler's `sys.exit` took the records in hand."""
    env = stream.env(TRACESTREAM_BATCH_DELAY_MS="60000", TRACESTREAM_SHUTDOWN_TIMEOUT="20s")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", WORKER_SIGNALS.replace("SIGNALS", repr(signals))],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0 and "tracestream:" not in done.stderr, done.stderr
    assert time.monotonic() - started < 15, "the flush waited for the shutdown timeout"
    assert len({entry.body for entry in stream.logs()}) == 3000


# The same worker, Ctrl-C reaching it as the master's SIGQUIT lands: at the moment our SIGINT
# handler's flush hands a batch on, which the exiting handler's `sys.exit` then interrupts.
EXIT_AS_A_BATCH_IS_HANDED_ON = """
import logging, os, signal, sys, threading, time
def leave(signum, frame):
    sys.exit(0)
signal.signal(signal.SIGINT, leave)
signal.signal(signal.SIGQUIT, leave)
import tracestream
from tracestream.otel_setup import pipeline
tracestream.configure(service_name="worker")
send = pipeline.Sender.send
quit_sent = []
def quit_as_it_is_handed_on(sender, batch):
    if threading.get_ident() == threading.main_thread().ident and not quit_sent:
        quit_sent.append(True)
        os.kill(os.getpid(), signal.SIGQUIT)  # Python runs its handler at the next instruction or so
    return send(sender, batch)
pipeline.Sender.send = quit_as_it_is_handed_on
for number in range(3000):
    logging.getLogger("app").info("record %d", number)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(30)
"""


def test_an_exit_raised_as_a_batch_is_handed_on_loses_none_of_it(stream: RedisHandle) -> None:
    """gunicorn's worker at Ctrl-C, configure() in the app: the SIGQUIT handler's `sys.exit` raised
    as our SIGINT handler's flush took a batch off the queue and handed it on, and the batch was
    neither sent, nor put back, nor counted: one Ctrl-C in five lost a batch under load."""
    env = stream.env(TRACESTREAM_BATCH_DELAY_MS="60000", TRACESTREAM_SHUTDOWN_TIMEOUT="20s")
    done = subprocess.run(
        [sys.executable, "-c", EXIT_AS_A_BATCH_IS_HANDED_ON],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(entry.body for entry in stream.logs()) == sorted(f"record {n}" for n in range(3000))


# The Python docs' asyncio "Handling Keyboard Interruption": Ctrl-C cancels the main task,
# which cleans up, then KeyboardInterrupt ends the program.
CTRL_C = """
import asyncio, logging, os, sys
if os.environ.get("WITH_TRACESTREAM"):
    import tracestream
    tracestream.configure(service_name="ctrl-c")
async def main():
    logging.getLogger("app").warning("working")
    print("ready", flush=True)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        print("main task cancelled: cleaning up", flush=True)
        raise
asyncio.run(main())
"""


def _interrupted(env: dict[str, str]) -> tuple[int, str, str]:
    process = subprocess.Popen(
        [sys.executable, "-c", CTRL_C],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    return process.returncode, "ready\n" + stdout, stderr


def test_ctrl_c_ends_asyncio_run_as_without_tracestream(stream: RedisHandle) -> None:
    """asyncio.run() handles SIGINT itself only where Python's own handler is in place; the
    traceback shows no frame of ours."""
    without = _interrupted(stream.env())
    with_us = _interrupted(stream.env(WITH_TRACESTREAM="1"))
    assert with_us == without
    assert "main task cancelled: cleaning up" in with_us[1] and with_us[0] != 0
    wait_for(lambda: [e for e in stream.logs() if e.body == "working"], what="the record, flushed at exit")


ATEXIT_BEFORE = """
import atexit, logging, tracestream
atexit.register(lambda: logging.getLogger("app").warning("said at exit"))  # runs after ours
tracestream.configure(service_name="late")
logging.getLogger("app").warning("said before exit")
"""


def test_a_record_logged_after_the_exit_close_is_said_lost(stream: RedisHandle) -> None:
    """atexit runs the last registered first: a handler registered before configure() logs
    after tracestream closed. Its record cannot go out; one line says why."""
    stderr = run_python(ATEXIT_BEFORE, stream.env())
    assert stderr.splitlines() == [
        "said before exit",
        "tracestream: WARNING logs: a record logged after tracestream closed at exit is lost: an atexit "
        "handler registered before configure() runs after tracestream's (register it after), as does "
        "what the garbage collector ends then",
        "said at exit",
    ]
    wait_for(lambda: [e.body for e in stream.logs()] == ["said before exit"], what="the first record")
