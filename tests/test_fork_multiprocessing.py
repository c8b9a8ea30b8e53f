"""multiprocessing's fork children end in `os._exit` after its own exit hooks, skipping `atexit`:
what they logged is flushed there, and what cannot be is counted and said.

A real script configures tracestream, then starts fork-context `Process` children and a `Pool`;
the records are read back from the private Redis.
"""

from __future__ import annotations

import select
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.support import ROOT, RedisHandle, run_python, wait_for
from tracestream.embedded_redis import free_port

SCRIPT = """
import logging, multiprocessing, os, sys
import tracestream

tracestream.configure(service_name="forked")
log = logging.getLogger("forked.app")


def child(number):
    for index in range(100):
        log.info("child %d record %d", number, index)


def task(index):
    log.info("pool task %d", index)
    return os.getpid()


context = multiprocessing.get_context("fork")
children = [context.Process(target=child, args=(number,)) for number in range(3)]
for process in children:
    process.start()
for process in children:
    process.join()
    assert process.exitcode == 0, process.exitcode
pool = context.Pool(2, maxtasksperchild=2)
workers = set(pool.map(task, range(400), chunksize=40))
pool.close()
pool.join()
assert os.getpid() not in workers
print(len(workers), file=sys.stderr)
"""


# The Python docs' first multiprocessing example, its function logging: leaving the `with`
# block terminates the pool (SIGTERM to each worker) as soon as `map` has its results.
DOCS_POOL = """
import logging, multiprocessing, sys
import tracestream

tracestream.configure(service_name="pooled")
log = logging.getLogger("pooled.app")


def f(x):
    log.warning("square of %d", x)
    return x * x


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    with multiprocessing.Pool(5) as p:
        print(p.map(f, range(50)))
"""

# Pools terminated as they start, as when the `with` block raises before any work is done.
TERMINATED_AT_START = """
import multiprocessing
import tracestream

tracestream.configure(service_name="pooled")
for _ in range(30):
    pool = multiprocessing.get_context("fork").Pool(4)
    pool.terminate()
    pool.join()
"""

# Terminated once it sleeps: a signal that comes in the instant between the main thread's last
# check for signals and its blocking call waits for that call, with any Python handler.
TERMINATED_AFTER_LOGGING = """
import logging, multiprocessing, sys, time
import tracestream

tracestream.configure(service_name="forked")


def child(logged):
    logging.getLogger("forked.app").warning("logged, then terminated")
    logged.set()
    time.sleep(60)


def sleeping(pid):
    with open(f"/proc/{pid}/wchan") as wchan:
        return "nanosleep" in wchan.read()


context = multiprocessing.get_context("fork")
logged = context.Event()
process = context.Process(target=child, args=(logged,))
process.start()
logged.wait(30)
deadline = time.monotonic() + 30
while not sleeping(process.pid) and time.monotonic() < deadline:
    time.sleep(0.01)
process.terminate()
process.join(30)
print(process.exitcode, file=sys.stderr)
"""

# Whether a thread just started blocks the signals sent to the process, seen before it runs a
# line of Python: libc through ctypes.PyDLL keeps the GIL, and the thread waits for it.
THREAD_AT_BIRTH = """
import ctypes, os, signal, sys, time
from tracestream.otel_setup import native_threads

libc = ctypes.PyDLL(None)
libc.opendir.restype = libc.readdir.restype = ctypes.c_void_p
libc.opendir.argtypes = (ctypes.c_char_p,)
libc.readdir.argtypes = libc.closedir.argtypes = (ctypes.c_void_p,)
DIRENT_NAME = 19  # glibc's struct dirent on Linux: d_ino, d_off, d_reclen, d_type, then d_name


def read(path):
    buffer = ctypes.create_string_buffer(4096)
    fd = libc.open(path.encode(), os.O_RDONLY)
    size = libc.read(fd, buffer, 4096)
    libc.close(fd)
    return buffer.raw[:size].decode()


def tasks():
    directory = libc.opendir(b"/proc/self/task")
    names = set()
    while entry := libc.readdir(directory):
        names.add(ctypes.string_at(entry + DIRENT_NAME).decode())
    libc.closedir(directory)
    return names - {".", ".."}


sys.setswitchinterval(100)  # nor does the main thread hand the GIL over meanwhile
before = tasks()
gate = native_threads.lock()
gate.acquire()
native_threads.Worker(gate.acquire)
(new,) = tasks() - before
deadline = time.monotonic() + 10
while "futex" not in read(f"/proc/self/task/{new}/wchan"):  # past libc's start, waiting for the GIL
    assert time.monotonic() < deadline, read(f"/proc/self/task/{new}/wchan")
status = dict(line.split(":", 1) for line in read(f"/proc/self/task/{new}/status").splitlines())
blocked = int(status["SigBlk"], 16)
print(*(bool(blocked & 1 << number - 1) for number in (signal.SIGTERM, signal.SIGINT)), file=sys.stderr)
"""

# The UNIX daemon's double fork (PEP 3143, python-daemon): each parent leaves with `os._exit`
# right after its fork, and the daemon's pid goes to a file for whoever started it.
DAEMON = """
import logging, os, sys
import tracestream

tracestream.configure(service_name="daemon")
log = logging.getLogger("daemon")
log.warning("starting as %d", os.getpid())
if os.fork() > 0:
    os._exit(0)
os.setsid()
if os.fork() > 0:
    log.warning("session leader %d leaves", os.getpid())
    os._exit(0)
log.warning("detached as %d", os.getpid())
with open(sys.argv[1], "w") as pid_file:
    pid_file.write(str(os.getpid()))
"""


def _run(script: str, handle: RedisHandle, tmp_path: Path, **env: str) -> str:
    return run_python(script, handle.env(TRACESTREAM_SPOOL_DIR=str(tmp_path / "spool"), **env))


# multiprocessing imported after configure(), which does not import it itself.
LATE_IMPORT = SCRIPT.replace("import logging, multiprocessing, os, sys", "import logging, os, sys").replace(
    "log = logging.getLogger", "import multiprocessing\nlog = logging.getLogger"
)


@pytest.mark.parametrize("script", [SCRIPT, LATE_IMPORT], ids=["imported-first", "imported-after-configure"])
def test_fork_children_and_pool_workers_deliver_every_record(
    stream: RedisHandle, tmp_path: Path, script: str
) -> None:
    """Pool workers end both ways: retired after two tasks (maxtasksperchild), and at close()."""
    workers = int(_run(script, stream, tmp_path).strip().splitlines()[-1])
    assert workers > 2  # some were retired and replaced
    bodies = Counter(entry.body for entry in stream.logs())
    children = {f"child {n} record {i}" for n in range(3) for i in range(100)}
    tasks = {f"pool task {i}" for i in range(400)}
    missing = f"{len(children - set(bodies))} child and {len(tasks - set(bodies))} task records missing"
    assert set(bodies) == children | tasks, missing
    assert set(bodies.values()) == {1}


def test_records_a_child_cannot_deliver_are_counted_and_said(tmp_path: Path) -> None:
    """Redis is unreachable and the spool is off: each child says, on its way out, how many
    records it is losing, instead of losing them silently."""
    unreachable = RedisHandle(url=f"redis://127.0.0.1:{free_port()}/0", stream="lost")
    stderr = _run(
        SCRIPT.split("pool = ")[0],
        unreachable,
        tmp_path,
        TRACESTREAM_SPOOL_MAX_BYTES="0",
        TRACESTREAM_SHUTDOWN_TIMEOUT="200ms",
        TRACESTREAM_REDIS_TIMEOUT="100ms",
    )
    assert stderr.count("logs: 100 records not exported or spooled at shutdown") == 3, stderr


def test_configure_leaves_multiprocessing_unloaded(stream: RedisHandle, tmp_path: Path) -> None:
    """Loaded, it changes what an app reports of itself: structlog's process name, `n/a` until then."""
    script = """
import sys, tracestream
tracestream.configure()
print("multiprocessing" in sys.modules, file=sys.stderr)
"""
    assert _run(script, stream, tmp_path).splitlines() == ["False"]


FIRST_EXPORT = """
import logging, sys
import tracestream
from opentelemetry import trace

telemetry = tracestream.configure(service_name="forked")
before = set(sys.modules)
with trace.get_tracer("t").start_as_current_span("request"):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("forked.app").exception("failed")
assert telemetry.force_flush(10)
print("imported while exporting:", sorted(set(sys.modules) - before), file=sys.stderr)
"""


def test_the_first_export_imports_nothing(stream: RedisHandle, tmp_path: Path) -> None:
    """An import holds the import system's lock for that module. Were an exporter thread
    importing when a prefork pool forks, each child's first export would wait on that lock
    for ever and the child would lose its records: a Celery child did, reading a Lua script."""
    assert "imported while exporting: []" in _run(FIRST_EXPORT, stream, tmp_path).splitlines()
    assert {entry.body for entry in stream.logs()} == {"failed"}


# RQ's work horse: a child forked per job that ends in `os._exit`, here one that logs nothing.
SILENT_CHILDREN = """
import logging, os, redis, sys
import tracestream

telemetry = tracestream.configure(service_name="forked")
logging.getLogger("forked.app").info("parent ready")
assert telemetry.force_flush(10)  # the parent's connections are made, and kept
server = redis.Redis.from_url(os.environ["TRACESTREAM_REDIS_URL"])
before = server.info("stats")["total_connections_received"]
for _ in range(5):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
print("connections from the children:", server.info("stats")["total_connections_received"] - before,
      file=sys.stderr)
"""


def test_a_forked_child_that_logs_nothing_connects_to_nothing(stream: RedisHandle, tmp_path: Path) -> None:
    """Each child connected twice at its exit, a status report per signal, to say it had
    exported nothing: 16 ms a job for RQ's work horses."""
    said = _run(SILENT_CHILDREN, stream, tmp_path).splitlines()
    assert "connections from the children: 0" in said, said


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_the_docs_pool_delivers_every_record_whatever_the_start_method(
    stream: RedisHandle, tmp_path: Path, start_method: str
) -> None:
    """A spawned worker exits on its own once the pool stops, and SIGTERM reached it while it
    was flushing: its handler closed the queues again, inside the close, and lost every record."""
    script = tmp_path / "docs_pool.py"  # spawned workers import the main module from its file
    script.write_text(DOCS_POOL)
    done = subprocess.run(
        [sys.executable, str(script), start_method],
        env=stream.env(TRACESTREAM_SPOOL_DIR=str(tmp_path / "spool")),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{[x * x for x in range(50)]}\n"
    bodies = wait_for(lambda: len(stream.logs()) >= 50 and Counter(e.body for e in stream.logs()))
    assert bodies == Counter(f"square of {x}" for x in range(50))


# The pool waits while the test reads Redis: before any task, for what each worker logged as
# it started, once it waits for one; with `map`'s results in, for what the workers logged for
# them, which must be there already. Workers also report their SIGTERM action.
POOL_READ_AFTER_RESULTS = """
import logging, multiprocessing, signal, sys
import tracestream

start_method, setup = sys.argv[1:]
if setup == "top-level":
    tracestream.configure(service_name="pooled")
log = logging.getLogger("pooled.app")


def ready():
    if setup == "initializer":
        tracestream.configure()
    log.warning("worker ready")


def f(x):
    log.warning("square of %d", x)
    return x * x, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


if __name__ == "__main__":
    with multiprocessing.get_context(start_method).Pool(2, initializer=ready) as pool:
        print("started", flush=True)
        sys.stdin.readline()
        results = pool.map(f, range(20), chunksize=3)
        print([square for square, _ in results], all(default for _, default in results), flush=True)
        sys.stdin.readline()
"""


@pytest.mark.parametrize(
    ("start_method", "setup"),
    [("fork", "top-level"), ("spawn", "top-level"), ("forkserver", "top-level"), ("spawn", "initializer")],
)
def test_pool_workers_keep_sigterms_default_and_write_their_records_before_they_wait_or_answer(
    stream: RedisHandle, tmp_path: Path, start_method: str, setup: str
) -> None:
    """`Pool.terminate()`'s SIGTERM can come just before a worker blocks on the pool's queue
    lock, where a Python handler never runs: with ours armed at its first record, the parent
    waited for that worker for ever (8 runs in 150 of the docs' example on a busy machine).
    Workers keep the default action, and lose nothing to it: the batch delay is 60 s here."""
    script = tmp_path / "pool_read.py"
    script.write_text(POOL_READ_AFTER_RESULTS)
    env = stream.env(
        TRACESTREAM_SPOOL_DIR=str(tmp_path / "spool"),
        TRACESTREAM_BATCH_DELAY_MS="60000",
        OTEL_SERVICE_NAME="pooled",
    )
    command = [sys.executable, str(script), start_method, setup]
    with subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as pool:
        assert pool.stdout is not None and pool.stdin is not None
        assert select.select([pool.stdout], [], [], 60)[0], "no pool within 60 s"
        assert pool.stdout.readline() == "started\n"
        wait_for(lambda: [e.body for e in stream.logs()] == ["worker ready"] * 2, timeout=30)
        pool.stdin.write("\n")
        pool.stdin.flush()
        assert select.select([pool.stdout], [], [], 60)[0], "no results within 60 s"
        assert pool.stdout.readline() == f"{[x * x for x in range(20)]} True\n"
        squares = Counter(entry.body for entry in stream.logs() if entry.body.startswith("square"))
        assert squares == Counter(f"square of {x}" for x in range(20))
        _, stderr = pool.communicate("\n", timeout=60)
    assert pool.returncode == 0, stderr


def test_a_pool_terminated_as_it_starts_ends(stream: RedisHandle, tmp_path: Path) -> None:
    """A worker sent SIGTERM just before it blocks for its first task never runs a Python
    handler for it: with ours inherited, it lived on and `terminate()` waited for ever."""
    _run(TERMINATED_AT_START, stream, tmp_path)


def test_a_child_terminated_after_it_logged_delivers_and_dies_of_the_signal(
    stream: RedisHandle, tmp_path: Path
) -> None:
    """The child started without our handlers and got them back at its first record."""
    stderr = _run(TERMINATED_AFTER_LOGGING, stream, tmp_path, TRACESTREAM_BATCH_DELAY_MS="60000")
    assert stderr.strip().splitlines()[-1] == "-15"  # as without us: killed by SIGTERM
    assert [entry.body for entry in stream.logs()] == ["logged, then terminated"]


def test_export_threads_block_the_processs_signals_from_birth(stream: RedisHandle, tmp_path: Path) -> None:
    """A thread that blocked them itself, as it began, took until then a SIGTERM sent to the
    process, which Python's handler then ran only once the main thread's blocking call ended: a
    child terminated as it slept after its first record lived on (10 of 240 runs of the test
    above with the cores kept busy, its parent waiting on `join()` for the full sleep)."""
    assert _run(THREAD_AT_BIRTH, stream, tmp_path).split() == ["True", "True"]


def test_a_daemons_parents_leaving_by_os_exit_deliver_what_they_logged(
    stream: RedisHandle, tmp_path: Path
) -> None:
    """`os._exit` skips `atexit`: each parent's record went down with it."""
    pid_file = tmp_path / "daemon.pid"
    env = stream.env(TRACESTREAM_SPOOL_DIR=str(tmp_path / "spool"), TRACESTREAM_BATCH_DELAY_MS="60000")
    done = subprocess.run([sys.executable, "-c", DAEMON, str(pid_file)], env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0
    wait_for(pid_file.exists, what="the daemon's pid file")
    bodies = wait_for(lambda: len(stream.logs()) == 3 and [e.body.split(" ")[0] for e in stream.logs()])
    assert sorted(bodies) == ["detached", "session", "starting"]
