"""What an app logs on its way out reaches the stream, or is said lost, and never costs the app a line.

Python 3.12.0 to 3.12.2 start no thread once the exit has begun, atexit callbacks included
(CPython gh-104690): there a process whose first record or span comes at its exit sends it from
the thread that runs the exit's flush. `make test-python312` runs this module on 3.12.1, `make
test` on the Python it finds. Each case is a fresh interpreter, compared with what the app prints
without us where it prints anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.otlp_receiver import OtlpReceiver, SilentServer
from tests.support import ROOT, VENV_BIN, RedisHandle, run_python_process, wait_for
from tracestream.embedded_redis import free_port
from tracestream.otel_setup.pipeline import BatchQueue
from tracestream.settings import BatchSettings

# No batch is due before the exit: what the app logged goes out through the exit's flush.
EXIT_ONLY = {"TRACESTREAM_BATCH_DELAY_MS": "60000"}
# Beyond the shutdown timeout, the exit is held for nothing.
PROMPTLY = 3.0

README_EXAMPLE = """
import logging, os

import tracestream

tracestream.configure(service_name="api", redis_url=os.environ["TRACESTREAM_REDIS_URL"])
logging.getLogger("shop").warning("card declined")
"""

# The process's first record and span come from an atexit function; `{register}` goes before or
# after configure(), and atexit runs the last registered first.
ATEXIT_APP = """
import atexit, logging, os
from opentelemetry import trace

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
log = logging.getLogger("app")

def goodbye():
    with trace.get_tracer("app").start_as_current_span("goodbye"):
        log.info("goodbye from atexit")
    print("goodbye done", flush=True)

if {register} == "before":
    atexit.register(goodbye)
if os.environ.get("WITH_TRACESTREAM"):
    import tracestream
    tracestream.configure(service_name="leaving")
if {register} == "after":
    atexit.register(goodbye)
print("main done", flush=True)
"""

# A pool's connection logs as the garbage collector ends it, at the interpreter's teardown.
DEL_APP = """
import logging, os

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
if os.environ.get("WITH_TRACESTREAM"):
    import tracestream
    tracestream.configure(service_name="pooled")

class Connection:
    def __del__(self):
        logging.getLogger("pool").info("connection closed")

connection = Connection()
print("main done", flush=True)
"""

OTLP_FAN_OUT = """
import logging, tracestream
both = "redis_stream,otlp"
tracestream.configure(service_name="fan", logs_exporter=both, traces_exporter=both)
logging.getLogger("fan").warning("fanned out")
print("logged", flush=True)
"""

# The capture fails on a record (as at the interpreter's teardown, where an import fails).
FAILING_CAPTURE = """
import logging, tracestream
from tracestream.otel_setup import logging_bridge

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
tracestream.configure(service_name="failing")

class Unreadable:
    def __init__(self, *args, **kwargs):
        raise ImportError("sys.meta_path is None, Python is likely shutting down")

logging_bridge.PendingStdlibRecord = Unreadable
log = logging.getLogger("app")
log.info("first")
log.info("second")
print("main done", flush=True)
"""

# The interpreter's teardown leaves no module to find and no way to import one.
TEARDOWN_IMPORTS = """
import sys
from tracestream.otel_setup import native_threads

del sys.modules["_thread"]
sys.meta_path = None
done = native_threads.Event()
worker = native_threads.start(done.set)
print(worker is not None and done.wait(10) and native_threads.get_ident() > 0, flush=True)
"""


def _said_lost(queue: str) -> str:
    return (
        f"tracestream: WARNING {queue}: a record logged after tracestream closed at exit is lost: an "
        "atexit handler registered before configure() runs after tracestream's (register it after), as "
        "does what the garbage collector ends then"
    )


def _run(
    code: str, stream: RedisHandle, *, with_tracestream: bool = True
) -> subprocess.CompletedProcess[str]:
    env = stream.env(**EXIT_ONLY)
    if with_tracestream:
        env["WITH_TRACESTREAM"] = "1"
    return run_python_process(code, env)


def _ours(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tracestream:")]


def _the_apps(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("tracestream:")]


def test_the_readme_example_delivers_its_record_at_exit(stream: RedisHandle) -> None:
    done = _run(README_EXAMPLE, stream)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "card declined\n")
    records = wait_for(stream.logs, what="the record")
    assert [(e.body, e.service, e.severity) for e in records] == [("card declined", "api", "WARN")]


def test_an_atexit_function_registered_after_configure_logs_into_the_stream(stream: RedisHandle) -> None:
    app = ATEXIT_APP.format(register=repr("after"))
    without = _run(app, stream, with_tracestream=False)
    done = _run(app, stream)
    assert (done.returncode, done.stdout, done.stderr) == (0, without.stdout, without.stderr)
    assert done.stdout == "main done\ngoodbye done\n"
    assert done.stderr == "INFO app goodbye from atexit\n"
    records = wait_for(stream.logs, what="the record")
    spans = wait_for(stream.spans, what="the span")
    assert [(e.body, e.trace_id) for e in records] == [("goodbye from atexit", spans[0].trace_id)]
    assert [s.name for s in spans] == ["goodbye"]


def test_an_atexit_function_registered_before_configure_goes_on_and_its_record_is_said_lost(
    stream: RedisHandle,
) -> None:
    app = ATEXIT_APP.format(register=repr("before"))
    without = _run(app, stream, with_tracestream=False)
    done = _run(app, stream)
    assert (done.returncode, done.stdout, _the_apps(done.stderr)) == (
        0,
        without.stdout,
        _the_apps(without.stderr),
    )
    assert done.stdout == "main done\ngoodbye done\n"
    assert _ours(done.stderr) == [_said_lost("logs"), _said_lost("spans")]


def test_a_del_at_teardown_logs_as_without_tracestream(stream: RedisHandle) -> None:
    without = _run(DEL_APP, stream, with_tracestream=False)
    done = _run(DEL_APP, stream)
    assert without.stderr == "INFO pool connection closed\n"
    assert (done.returncode, done.stdout, _the_apps(done.stderr)) == (
        0,
        without.stdout,
        _the_apps(without.stderr),
    )
    assert _ours(done.stderr) == [_said_lost("logs")]


def test_an_otlp_fan_out_exits_cleanly_with_its_record_in_both(stream: RedisHandle) -> None:
    with OtlpReceiver() as receiver:
        done = run_python_process(
            OTLP_FAN_OUT, stream.env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, **EXIT_ONLY)
        )
        assert (done.returncode, done.stdout, done.stderr) == (0, "logged\n", "fanned out\n")
        received = wait_for(lambda: receiver.logs, what="the record over OTLP")
    assert [r.record.body.string_value for r in received] == ["fanned out"]
    assert [e.body for e in wait_for(stream.logs, what="the record in Redis")] == ["fanned out"]


def test_a_collector_that_is_down_holds_the_exit_no_longer_than_the_shutdown_timeout(
    stream: RedisHandle,
) -> None:
    """OTLP retries for 10 s while its collector is down: the exit's flush stops waiting for it
    at the shutdown timeout, as the export runs on a thread started with the worker."""
    env = stream.env(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        TRACESTREAM_SHUTDOWN_TIMEOUT="1s",
        **EXIT_ONLY,
    )
    app = subprocess.Popen(
        [sys.executable, "-c", OTLP_FAN_OUT],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert app.stdout is not None and app.stderr is not None
    assert app.stdout.readline() == "logged\n"
    logged = time.monotonic()
    assert app.wait(30) == 0
    took = time.monotonic() - logged
    assert _ours(app.stderr.read()) == [
        "tracestream: WARNING logs (OTLPLogExporter): 1 record not exported or spooled at shutdown"
    ]
    assert took < 1 + PROMPTLY, took
    assert [e.body for e in wait_for(stream.logs, what="the record in Redis")] == ["fanned out"]


# A line, and the exit: the launcher sets it up, or configure() where `{setup}` says so.
ONE_LINE = """
{setup}
import logging
logging.getLogger("app").warning("one line")
print("logged", flush=True)
"""


@pytest.mark.parametrize("launcher", [False, True], ids=["configure", "launcher"])
def test_a_redis_that_answers_nothing_holds_the_exit_no_longer_than_the_timeouts_together(
    launcher: bool,
) -> None:
    """A firewalled port, or a host that takes connections and never answers (a CI job's Redis
    that is not there): the exit waits for the shutdown timeout and one Redis call in flight
    past it, as reliability.md promises. A status report, or a spool replay, started after the
    deadline waited out one Redis timeout more each (4.8 s against this test's 2 s)."""
    with SilentServer() as hung_redis:
        env = RedisHandle(url=f"redis://127.0.0.1:{hung_redis.port}/0", stream="hung").env(
            OTEL_SERVICE_NAME="hung",
            OTEL_TRACES_EXPORTER="redis_stream",  # configuration.md: whichever distro the launcher picks
            OTEL_LOGS_EXPORTER="redis_stream",
            OTEL_METRICS_EXPORTER="none",
            TRACESTREAM_SHUTDOWN_TIMEOUT="1s",
            TRACESTREAM_REDIS_TIMEOUT="1s",
        )
        setup = "" if launcher else "import tracestream; tracestream.configure()"
        command = [sys.executable, "-c", ONE_LINE.format(setup=setup)]
        if launcher:
            command = [str(VENV_BIN / "opentelemetry-instrument"), *command]
        app = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert app.stdout is not None and app.stderr is not None
        assert app.stdout.readline() == "logged\n"
        logged = time.monotonic()
        # Our exit ends with this line; the interpreter's teardown after it (the launcher's
        # thirty instrumentations) is no wait of ours, and took a second more on a busy machine.
        printed = iter(app.stderr.readline, "")
        assert any("1 record waits in the spool" in line for line in printed), app.stderr.read()
        took = time.monotonic() - logged
        assert app.wait(30) == 0
    assert took < 1 + 1 + 0.75, took


# A script stopped with Ctrl-C, as a user stops one that seems to hang.
FIFTY_LINES_THEN_SLEEP = """
import logging, time
import tracestream
tracestream.configure()
for number in range(50):
    logging.getLogger("app").warning("line %d", number)
print("logged", flush=True)
time.sleep(60)
"""


def test_ctrl_c_during_the_exit_flush_ends_the_wait_and_spools_what_is_left(tmp_path: Path) -> None:
    """Against a Redis that never answers, the exit after Ctrl-C waits for the shutdown timeout.
    A second Ctrl-C raised KeyboardInterrupt into the flush: our traceback was printed and the
    exit took longer. It ends the wait instead: within the call in flight, with one line."""
    with SilentServer() as hung_redis:
        env = RedisHandle(url=f"redis://127.0.0.1:{hung_redis.port}/0", stream="hung").env(
            TRACESTREAM_REDIS_TIMEOUT="1s", TRACESTREAM_SPOOL_DIR=str(tmp_path)
        )
        errors = tmp_path / "stderr"
        with errors.open("w") as stderr:
            app = subprocess.Popen(
                [sys.executable, "-c", FIFTY_LINES_THEN_SLEEP], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                stderr=stderr, text=True,
            )  # fmt: skip
            assert app.stdout is not None and app.stdout.readline() == "logged\n"
            wait_for(lambda: hung_redis.connections == 1, what="the first export's connection")
            app.send_signal(signal.SIGINT)
            wait_for(lambda: hung_redis.connections == 2, what="the exit flush trying Redis again")
            app.send_signal(signal.SIGINT)
            pressed = time.monotonic()
            assert app.wait(30) == -signal.SIGINT  # as without tracestream
            took = time.monotonic() - pressed
    printed = errors.read_text()
    assert "Exception ignored" not in printed and "tracestream/" not in printed, printed
    assert printed.splitlines()[-1].startswith("tracestream: WARNING 50 records wait in the spool"), printed
    assert took < 2 * 1 + 0.75, took  # the call in flight: a connection's health check, then the command


# Spans and lines for two seconds, as a test suite writes them: batches and status reports queue
# up behind calls that wait out their timeout.
TWO_SECONDS_OF_REQUESTS = """
import logging, time
import tracestream
from opentelemetry import trace
tracestream.configure()
tracer = trace.get_tracer("suite")
started = time.monotonic()
while time.monotonic() - started < 2:
    with tracer.start_as_current_span("request"):
        logging.getLogger("app").warning("a line")
    time.sleep(0.05)
print("logged", flush=True)
"""


def test_what_queued_before_the_deadline_starts_no_call_after_it() -> None:
    """A Redis that takes connections and never answers (a paused container), at the default
    timeouts: batches, spool replays and status reports queued before the deadline each
    started a call after it, and the exit took 12 s. Now it waits for the calls in flight,
    each of which may wait two Redis timeouts (a new connection's health check, then the
    command)."""
    with SilentServer() as hung_redis:
        env = RedisHandle(url=f"redis://127.0.0.1:{hung_redis.port}/0", stream="hung").env()
        app = subprocess.Popen(
            [sys.executable, "-c", TWO_SECONDS_OF_REQUESTS],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert app.stdout is not None and app.stdout.readline() == "logged\n"
        logged = time.monotonic()
        assert app.wait(30) == 0
        took = time.monotonic() - logged
    assert took < 5 + 2 * 2 + 0.75, took


def test_a_record_the_capture_cannot_take_costs_the_app_nothing(stream: RedisHandle) -> None:
    done = _run(FAILING_CAPTURE, stream)
    assert (done.returncode, done.stdout) == (0, "main done\n")
    assert _the_apps(done.stderr) == ["INFO app first", "INFO app second"]
    assert _ours(done.stderr) == [
        "tracestream: WARNING cannot take a log record, dropped: "
        "ImportError('sys.meta_path is None, Python is likely shutting down')"
    ]


def test_a_record_after_the_exit_close_starts_no_thread(capsys: pytest.CaptureFixture[str]) -> None:
    queue: BatchQueue[str] = BatchQueue("logs", lambda batch: True, BatchSettings(0.05, 10, 10))
    queue.shutdown(1.0)
    started: list[str] = []
    queue.on_start = lambda: started.append("worker")
    queue.put("too late")
    assert started == []
    assert queue.status()["dropped_at_shutdown"] == 1
    assert _ours(capsys.readouterr().err) == [_said_lost("logs")]


def test_the_export_threads_need_no_import_at_teardown(stream: RedisHandle) -> None:
    done = _run(TEARDOWN_IMPORTS, stream)
    assert (done.returncode, done.stdout, done.stderr) == (0, "True\n", "")


# A container's `CMD ["python", "app.py"]` without an init: the app is the init process of its
# PID namespace. It waits in `signal.pause()` (its threads do the work), and `docker stop` sends
# SIGTERM; here SIGINT follows, which Python turns into KeyboardInterrupt.
PID_ONE = """
import logging, signal
{setup}
logging.getLogger("app").warning("before the signal")
print("ready", flush=True)
signal.pause()
print("pause returned", flush=True)
"""


def test_sigterm_to_pid_one_changes_nothing_and_its_records_go_out_at_exit(stream: RedisHandle) -> None:
    """The kernel ignores a default action in PID 1, so SIGTERM does nothing there, as without
    us: ours, there, woke the app's `signal.pause()`, and the app went on to exit."""
    bare = _stopped_as_pid_one(stream, "")
    traced = _stopped_as_pid_one(stream, "import tracestream; tracestream.configure()")
    assert traced == bare
    assert bare[1] == "" and bare[2].endswith("KeyboardInterrupt\n"), bare
    assert [e.body for e in stream.logs()] == ["before the signal"]


def _stopped_as_pid_one(stream: RedisHandle, setup: str) -> tuple[int, str, str]:
    """Exit status, and what it printed after "ready" and on stderr, after SIGTERM as it waits
    in `signal.pause()` and then, once the SIGTERM is no longer pending, SIGINT."""
    command = ["unshare", "--pid", "--fork", sys.executable, "-c", PID_ONE.format(setup=setup)]
    app = subprocess.Popen(
        command,
        env=stream.env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert app.stdout is not None
    assert app.stdout.readline() == "ready\n"
    children = Path(f"/proc/{app.pid}/task/{app.pid}/children")
    pid_one = int(wait_for(lambda: children.read_text().strip(), what="PID 1's host pid"))
    wchan = Path(f"/proc/{pid_one}/wchan")
    wait_for(lambda: "pause" in wchan.read_text() or "sigsuspend" in wchan.read_text(), what="signal.pause()")
    os.kill(pid_one, signal.SIGTERM)
    wait_for(lambda: not _pending(pid_one, signal.SIGTERM), what="the SIGTERM to be taken")
    os.kill(pid_one, signal.SIGINT)
    out, err = app.communicate(timeout=30)
    return app.returncode, out, err


FORKED_BY_PID_ONE = """
import logging, os, sys
import tracestream
tracestream.configure()
child = os.fork()
if child == 0:
    logging.getLogger("app").warning("child record")
    print("child", flush=True)
    sys.stdin.readline()
    os._exit(0)
_, status = os.waitpid(child, 0)
print("child ended by signal", os.WTERMSIG(status) if os.WIFSIGNALED(status) else None, flush=True)
"""


def test_a_child_of_pid_one_gets_our_sigterm_handler(stream: RedisHandle) -> None:
    """Where PID 1 left SIGTERM's default alone, its forked child, where the default kills, gets
    ours at its first record: the record goes out (the batch delay holds it back: only the
    signal's flush sends it), and the child dies of SIGTERM, as without us."""
    app = _held_back(["unshare", "--pid", "--fork", sys.executable, "-c", FORKED_BY_PID_ONE], stream)
    assert app.stdout is not None
    assert app.stdout.readline() == "child\n"
    pid_one = int(wait_for(lambda: Path(f"/proc/{app.pid}/task/{app.pid}/children").read_text().strip()))
    [child] = [int(pid) for pid in Path(f"/proc/{pid_one}/task/{pid_one}/children").read_text().split()]
    os.kill(child, signal.SIGTERM)
    out, err = app.communicate(timeout=30)
    assert (app.returncode, out) == (0, f"child ended by signal {int(signal.SIGTERM)}\n"), err
    assert [e.body for e in stream.logs()] == ["child record"]


def _held_back(command: list[str], stream: RedisHandle) -> subprocess.Popen[str]:
    """`command`, its standard streams piped, its records held back by a 60 s batch delay: only
    a signal's flush sends them."""
    return subprocess.Popen(
        command,
        env=stream.env(TRACESTREAM_BATCH_DELAY_MS="60000"),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _pending(pid: int, number: int) -> bool:
    """Whether the signal waits to be taken by the process (`ShdPnd`) or its main thread (`SigPnd`)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    masks = [int(line.split()[1], 16) for line in status if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask >> (number - 1) & 1 for mask in masks)


# A terminal closing (an SSH session dropped, a terminal window closed) sends SIGHUP to the
# programs it ran; its default action ends them.
HANGS_UP = """
import logging, sys
{setup}
logging.getLogger("app").warning("before the hang-up")
print("ready", flush=True)
sys.stdin.readline()
"""


def test_sighup_sends_what_was_logged_and_the_process_dies_of_it(stream: RedisHandle) -> None:
    """Only SIGTERM and SIGINT were ours: a hang-up ended the process with its queue unsent
    (the batch delay holds the record back: only the signal's flush sends it)."""
    ended = {}
    for setup in ("", "import tracestream; tracestream.configure()"):
        app = _held_back([sys.executable, "-c", HANGS_UP.format(setup=setup)], stream)
        assert app.stdout is not None and app.stdout.readline() == "ready\n"
        app.send_signal(signal.SIGHUP)
        out, err = app.communicate(timeout=30)
        ended[setup] = (app.returncode, out, err)
    assert list(ended.values()) == [(-signal.SIGHUP, "", "before the hang-up\n")] * 2
    assert [e.body for e in stream.logs()] == ["before the hang-up"]


# The asyncio docs' signal handling: the loop handles SIGTERM while it runs; the program goes on
# after `asyncio.run()` has closed it.
AFTER_THE_LOOP = """
import asyncio, logging, signal, time
import tracestream
tracestream.configure()


async def main():
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: None)


asyncio.run(main())
logging.getLogger("app").warning("after the loop")
print("logged", flush=True)
time.sleep(60)
"""


def test_a_sigterm_after_an_asyncio_loop_that_handled_it_still_flushes(stream: RedisHandle) -> None:
    """`loop.close()` put the default action back, not our handler: a SIGTERM after the loop
    killed the process with its records in memory."""
    env = stream.env(TRACESTREAM_BATCH_DELAY_MS="30000")  # nothing leaves before the signal
    app = subprocess.Popen(
        [sys.executable, "-c", AFTER_THE_LOOP], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert app.stdout is not None and app.stdout.readline() == "logged\n"
    app.send_signal(signal.SIGTERM)
    assert app.wait(30) == -signal.SIGTERM  # as without tracestream
    assert [e.body for e in stream.logs()] == ["after the loop"]


# A gevent app whose one record goes out at its exit: gevent resolves the Redis host on a
# thread of its pool, which Python 3.12.0 to 3.12.2 do not start then.
GEVENT_AT_EXIT = """
from gevent import monkey; monkey.patch_all()
import logging, tracestream
tracestream.configure(service_name="leaving")
logging.getLogger("app").warning("said at exit")
"""


def test_a_gevent_record_that_cannot_go_out_at_exit_waits_in_the_spool_for_the_next_process(
    stream: RedisHandle, tmp_path: Path
) -> None:
    """Where the exit's flush cannot start gevent's resolver thread, the record is not refused:
    it waits in the spool, not in the dead-letter file an operator must find, and the next
    process sends it."""
    env = stream.env(TRACESTREAM_SPOOL_DIR=str(tmp_path), **EXIT_ONLY)
    for app in (GEVENT_AT_EXIT, README_EXAMPLE):
        done = run_python_process(app, env)
        assert done.returncode == 0 and "dead-letter" not in done.stderr, done.stderr
    records = wait_for(lambda: len(stream.logs()) >= 2 and stream.logs(), what="both records")
    assert sorted(e.body for e in records) == ["card declined", "said at exit"]
    assert not list(tmp_path.rglob("*dead*")), list(tmp_path.rglob("*"))
