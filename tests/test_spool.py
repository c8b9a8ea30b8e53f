"""The spool on a real disk, with real processes holding and leaving their directories.

A child process (`_spool_in_child`) spools rows with the real code and ends; its directory is
then an orphan, as after a crash, for the spools of this process to adopt or leave alone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import ROOT, VENV_BIN, RedisHandle, wait_for
from tracestream.disk_spool import Destination, Spool, process_directory, read_frames, spool_for
from tracestream.embedded_redis import free_port
from tracestream.schema import LOG_FIELDS
from tracestream.settings import Settings

CHILD = """
import sys
from pathlib import Path
from tracestream.settings import Settings
from tracestream.disk_spool import spool_for
url, stream, base, count, replay = sys.argv[1:]
spool = spool_for(Settings.load(environ={}, redis_url=url, spool_dir=base), stream)
for i in range(int(count)):
    assert spool.append([[f"{stream} {i}", "x" * 100]])
for _ in range(int(replay)):  # as if these batches went to Redis
    assert spool.peek() is not None
    spool.pop()
"""


def _spool_in_child(url: str, stream: str, base: Path, count: int, replay: int = 0) -> None:
    command = [sys.executable, "-c", CHILD, url, stream, str(base), str(count), str(replay)]
    subprocess.run(command, check=True, cwd=ROOT, timeout=30)


def _spool(url: str, stream: str, base: Path) -> Spool:
    spool = spool_for(Settings.load(environ={}, redis_url=url, spool_dir=str(base)), stream)
    assert spool is not None
    return spool


def _drain(spool: Spool) -> list[str]:
    firsts = []
    while (rows := spool.peek()) is not None:
        firsts += [row[0] for row in rows]
        spool.pop()
    return firsts


def test_rows_go_back_only_to_the_redis_they_were_spooled_for(tmp_path: Path) -> None:
    password = secrets.token_hex(8)
    _spool_in_child(f"redis://:{password}@10.0.0.1:6379/2", "app", tmp_path, 3)
    _spool_in_child("redis://10.0.0.1:6379/3", "app", tmp_path, 2)  # same server, other db

    elsewhere = _spool("redis://10.0.0.2:6379/2", "app", tmp_path)
    assert not elsewhere and elsewhere.peek() is None  # another server gets nothing
    assert not _spool("rediss://10.0.0.1:6379/2", "app", tmp_path)  # TLS to it is another destination
    assert not _spool("redis://10.0.0.1:6379/2", "other", tmp_path)
    # The same destination, whatever the credentials, gets its own rows, and only those.
    assert _drain(_spool("redis://someone:else@10.0.0.1:6379/2", "app", tmp_path)) == [
        "app 0",
        "app 1",
        "app 2",
    ]
    assert _drain(_spool("redis://10.0.0.1:6379/3", "app", tmp_path)) == ["app 0", "app 1"]

    for path in tmp_path.rglob("*"):
        assert password not in path.name and password.encode() not in (
            path.read_bytes() if path.is_file() else b""
        )


def test_a_database_named_in_the_query_is_the_destination(tmp_path: Path) -> None:
    """`?db=4` wins over the path in redis-py: rows spooled for db 4 go back to db 4 only."""
    _spool_in_child("redis://10.0.0.1:6379/?db=4", "app", tmp_path, 2)
    assert not _spool("redis://10.0.0.1:6379/?db=5", "app", tmp_path)
    assert not _spool("redis://10.0.0.1:6379/0", "app", tmp_path)
    assert _drain(_spool("redis://10.0.0.1:6379/2?db=4", "app", tmp_path)) == ["app 0", "app 1"]


def test_the_spool_is_private_to_its_user(tmp_path: Path) -> None:
    base = tmp_path / "spool"
    spool = _spool("redis://127.0.0.1:6379/0", "app", base)
    assert spool.append([["a"]]) and spool.dead_letter([["b"]], "WRONGTYPE test")
    paths = [base, *base.rglob("*")]
    assert any(path.suffix == ".seg" for path in paths) and any(path.suffix == ".jsonl" for path in paths)
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def test_a_replayed_segment_is_gone_and_a_half_replayed_one_resumes_where_it_stopped(tmp_path: Path) -> None:
    _spool_in_child("redis://127.0.0.1:1/0", "whole", tmp_path, 3, replay=3)
    _spool_in_child("redis://127.0.0.1:1/0", "half", tmp_path, 4, replay=1)
    assert not _spool("redis://127.0.0.1:1/0", "whole", tmp_path)  # nothing to replay twice
    assert _drain(_spool("redis://127.0.0.1:1/0", "half", tmp_path)) == ["half 1", "half 2", "half 3"]
    assert not list(tmp_path.rglob("*.seg")) and not list(tmp_path.rglob("*.done"))


def test_spool_keeps_order_and_refuses_past_its_cap(tmp_path: Path) -> None:
    spool = Spool(process_directory(tmp_path), "app:logs", max_bytes=4000)
    batches = [[[str(i), secrets.token_hex(100)]] for i in range(100)]
    accepted = [batch for batch in batches if spool.append(batch)]
    assert 0 < len(accepted) < 100  # the cap stops it
    assert spool.size <= 4000
    replayed = []
    while (rows := spool.peek()) is not None:
        replayed.append(rows)
        spool.pop()
    assert replayed == accepted


def test_replay_goes_on_past_a_torn_frame_and_counts_its_rows(tmp_path: Path) -> None:
    """A frame cut short (the disk filled up mid-write), then more appended behind it."""
    spool = _spool("redis://127.0.0.1:1/0", "app", tmp_path)
    assert spool.append([["a 0"], ["a 1"]]) and spool.append([["b 0"], ["b 1"], ["b 2"]])
    (segment,) = tmp_path.rglob("*.seg")
    os.truncate(segment, segment.stat().st_size - 5)  # the second frame loses its last bytes
    assert spool.append([["c 0"]]) and spool.append([["d 0"]])
    assert _drain(spool) == ["a 0", "a 1", "c 0", "d 0"]
    assert (spool.torn.frames, spool.torn.rows) == (1, 3)  # b's rows: counted, not silently gone


FULL_DISK = """
import resource, sys
from pathlib import Path
from tracestream.settings import Settings
from tracestream.disk_spool import spool_for
spool = spool_for(Settings.load(environ={}, redis_url="redis://127.0.0.1:1/0", spool_dir=sys.argv[1]), "app")
assert spool.append([["a 0"]])
segment = next(Path(sys.argv[1]).rglob("*.seg"))
size = segment.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, resource.RLIM_INFINITY))  # room for half a frame
assert not spool.append([["b %d" % i, "x" * 200] for i in range(50)])  # the write fails halfway
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
assert segment.stat().st_size == size  # the partial bytes were cut off again
assert spool.append([["c 0"]])
firsts = []
while (rows := spool.peek()) is not None:
    firsts += [row[0] for row in rows]
    spool.pop()
assert firsts == ["a 0", "c 0"] and spool.torn.frames == 0, (firsts, spool.torn)
"""


def test_a_write_that_fails_halfway_leaves_no_torn_frame(tmp_path: Path) -> None:
    """A real short write (a file size limit stands in for a full disk): the batch is refused,
    so the caller keeps it, and the next frame does not land behind partial bytes."""
    subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], check=True, cwd=ROOT, timeout=30)


DRAIN = """
import sys
from tracestream.disk_spool import spool_for
from tracestream.settings import Settings
spool = spool_for(Settings.load(environ={}, redis_url=sys.argv[1], spool_dir=sys.argv[2]), "app")
while (rows := spool.peek()) is not None:
    print(*(row[0] for row in rows))
    spool.pop()
"""


def _as_another_user(path: Path) -> list[str]:
    """Make `path` another user's private directory, as far as the command returned runs."""
    if os.geteuid() != 0:
        path.chmod(0)
        return []
    os.chown(path, 65534, 65534)  # nobody's; root without these capabilities cannot read it
    path.chmod(0o700)
    return [
        "setpriv",
        "--inh-caps=-dac_override,-dac_read_search",
        "--bounding-set=-dac_override,-dac_read_search",
    ]


def test_another_users_leftover_spool_is_passed_over_not_fatal(tmp_path: Path) -> None:
    """A spool directory shared with another user (root ran the service once): their leftover
    cannot be read, and is left; the readable leftovers are still taken over."""
    url = "redis://10.0.0.1:6379/0"
    _spool_in_child(url, "app", tmp_path, 1)
    (theirs,) = [folder for folder in tmp_path.iterdir() if not folder.name.startswith(".")]
    _spool_in_child(url, "app", tmp_path, 2)
    prefix = _as_another_user(theirs)
    done = subprocess.run(
        [*prefix, sys.executable, "-c", DRAIN, url, str(tmp_path)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["app", "0", "app", "1"]


APP = """
import logging, tracestream
telemetry = tracestream.configure(service_name="shared-spool")
logging.getLogger("shop").warning("order paid")
telemetry.force_flush()
print("app done")
"""


def test_a_spool_directory_this_user_cannot_read_is_one_line(stream: RedisHandle, tmp_path: Path) -> None:
    """configure() raised PermissionError looking for leftovers to take over, and the app died."""
    base = tmp_path / "spool"
    _spool_in_child("redis://10.0.0.1:6379/0", "app", base, 1)
    prefix = _as_another_user(base)
    env = stream.env(TRACESTREAM_SPOOL_DIR=str(base))
    done = subprocess.run(
        [*prefix, sys.executable, "-c", APP], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert (done.returncode, done.stdout) == (0, "app done\n"), done.stderr
    assert done.stderr.splitlines() == [
        f"tracestream: WARNING the spool at {base} cannot be written ({base} is not writable by this "
        "user): while Redis is down, records wait in memory only, and are lost at exit; "
        "TRACESTREAM_SPOOL_DIR names a writable directory",
        "order paid",
    ]
    wait_for(lambda: [e for e in stream.logs() if e.body == "order paid"], what="the app's record")


OUT_OF_DESCRIPTORS = """
import os, sys
from tracestream.disk_spool import spool_for
from tracestream.settings import Settings
settings = Settings.load(environ={}, redis_url="redis://10.0.0.1:6379/0", spool_dir=sys.argv[1])
spool = spool_for(settings, "app")
assert not spool  # its look for leftovers done, with descriptors to spare
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
print(spool.append([["first", "x"]]))
for descriptor in held:
    os.close(descriptor)
print(spool.append([["second", "x"]]))
"""


def test_a_process_out_of_file_descriptors_leaves_no_directory_and_no_wrong_hint(tmp_path: Path) -> None:
    """The first spool write at EMFILE left an empty hidden directory per process, and its line
    said to name another directory, which mends nothing."""
    done = subprocess.run(
        ["prlimit", "--nofile=64", sys.executable, "-c", OUT_OF_DESCRIPTORS, str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert done.stdout == "False\nTrue\n", done.stderr
    (line,) = done.stderr.splitlines()
    written = re.escape(
        f"tracestream: WARNING cannot write to the spool: [Errno 24] Too many open files: '{tmp_path}"
    )
    assert re.fullmatch(rf"{written}/[^']+'", line), line
    assert [path.name.startswith(".") for path in tmp_path.iterdir()] == [False]


SPOOLING_APP = """
import logging, tracestream
telemetry = tracestream.configure(service_name="behind")
logging.getLogger("shop").warning("order paid")
telemetry.force_flush(1)
print("app done")
"""


def _spooled_bodies(base: Path) -> list[str]:
    body = LOG_FIELDS.index("body")
    return [
        row[body] for segment in base.glob("*/*/*.seg") for _, rows in read_frames(segment) for row in rows
    ]


def _home_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment with `home` as HOME, no XDG or tracestream settings, and a Redis that is down:
    the default spool location, and the spool taking every record."""
    kept = {
        name: value for name, value in os.environ.items() if not name.startswith(("XDG_", "TRACESTREAM_"))
    }
    return {**kept, "HOME": str(home), "TRACESTREAM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", **extra}


def test_a_spool_directory_behind_one_this_user_cannot_enter_is_one_line(tmp_path: Path) -> None:
    """`Path.exists()` raised PermissionError for a spool directory inside another user's private
    one, out of configure(): the app died with a traceback, and doctor said "unexpected"."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    prefix = _as_another_user(theirs)
    base = theirs / "spool"
    env = dict(
        os.environ,
        TRACESTREAM_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        TRACESTREAM_SPOOL_DIR=str(base),
    )
    done = subprocess.run(
        [*prefix, sys.executable, "-c", SPOOLING_APP], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert (done.returncode, done.stdout) == (0, "app done\n"), done.stderr
    assert done.stderr.splitlines()[0] == (
        f"tracestream: WARNING the spool at {base} cannot be written ({theirs} cannot be entered: "
        "Permission denied): while Redis is down, records wait in memory only, and are lost at exit; "
        "TRACESTREAM_SPOOL_DIR names a writable directory"
    )
    doctor = subprocess.run(
        [*prefix, str(VENV_BIN / "tracestream"), "doctor"], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert "unexpected" not in doctor.stderr and f"{theirs} cannot be entered" in doctor.stdout, doctor


def test_a_home_this_user_cannot_enter_puts_the_spool_in_the_temporary_directory(tmp_path: Path) -> None:
    """A worker that kept the HOME of the root that started it (supervisord's `user=`, a
    Dockerfile's `ENV HOME=/root` before `USER app`): its records are spooled where it can write."""
    home, temporary = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temporary.mkdir()
    prefix = _as_another_user(home)
    env = _home_env(home, TMPDIR=str(temporary))
    done = subprocess.run(
        [*prefix, sys.executable, "-c", SPOOLING_APP], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert (done.returncode, done.stdout) == (0, "app done\n"), done.stderr
    assert "spool" not in done.stderr.split("order paid")[0], done.stderr
    assert _spooled_bodies(temporary / f"tracestream-{os.getuid()}" / "spool") == ["order paid"]


def test_the_directories_made_for_a_spool_are_never_writable_by_others(tmp_path: Path) -> None:
    """Under `umask 000` the parents made for the spool (`~/.local`, `~/.local/state`) were
    writable by every user: one could plant `~/.local/bin` or a spool of their own to replay."""
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    env = _home_env(home)
    done = subprocess.run(
        [sys.executable, "-c", SPOOLING_APP], env=env, capture_output=True, text=True, cwd=ROOT,
        preexec_fn=lambda: os.umask(0),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    made = [home / ".local", home / ".local/state", home / ".local/state/tracestream"]
    assert {str(path): stat.filemode(path.stat().st_mode) for path in made} == {
        str(path): "drwxr-xr-x" for path in made
    }
    assert stat.S_IMODE((home / ".local/state/tracestream/spool").stat().st_mode) == 0o700
    assert _spooled_bodies(home / ".local/state/tracestream/spool") == ["order paid"]


SETUID_WORKER = """
import logging, os, tracestream
telemetry = tracestream.configure(service_name="worker")  # gunicorn's master, as root
pid = os.fork()
if pid == 0:  # a worker, which takes gunicorn's `--user` once forked
    os.setgid(65534)
    os.setuid(65534)
    logging.getLogger("shop").warning("order paid")
    telemetry.force_flush(1)
    os._exit(0)
print("worker exited with", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_worker_that_takes_another_user_after_the_fork_spools_where_that_user_can(tmp_path: Path) -> None:
    """The master chose the spool as root, in root's home; the worker, now nobody, could not
    write there, said only that it could not look for leftovers, and lost its records at exit."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)  # root's own
    shared = Path(tempfile.mkdtemp(prefix="tracestream-shared-", dir="/tmp"))
    try:
        shared.chmod(0o1777)  # a temporary directory every user can reach
        env = _home_env(home, TMPDIR=str(shared))
        done = subprocess.run(
            [sys.executable, "-c", SETUID_WORKER],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert done.stdout == "worker exited with 0\n", done.stderr
        assert "1 record waits in the spool" in done.stderr, done.stderr
        assert "spool:" not in done.stderr and "spools" not in done.stderr, done.stderr
        assert _spooled_bodies(shared / "tracestream-65534" / "spool") == ["order paid"]
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_socket_destination_is_named_by_a_url_that_reaches_it(tmp_path: Path) -> None:
    """`unix:///run/redis.sock/2` named a socket file `redis.sock/2`: the lines and `spool list`
    name it as redis-py reads it. Its folder keeps the name it had, so older spools are found."""
    settings = Settings.load(environ={}, redis_url="unix:///run/redis.sock?db=2", spool_dir=str(tmp_path))
    destination = Destination.of(settings, "app")
    assert destination.server_url == "unix:///run/redis.sock?db=2"
    assert destination.describe() == "stream 'app' (logs) on unix:///run/redis.sock?db=2"
    assert destination.key == "app@bf1ed9b92555c21e"  # sha256 of "unix:///run/redis.sock/2\napp"
