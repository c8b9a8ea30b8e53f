"""The CLI's promise: bad input is one line and exit 2, Redis trouble one line and exit 1,
never a traceback, and a failed export never costs the file it was writing over.

The cases an attacker and an unlucky operator found run one by one; then Hypothesis throws
arbitrary arguments at every command that ends on its own, in-process through `main(argv)`.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from subprocess import PIPE

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracestream
from tests.seeded_records import RecordWriter
from tests.support import RedisHandle, interruptible, wait_for
from tests.test_cli import TIMEOUT, TRACESTREAM, Here, here, ndjson
from tracestream.cli import build_parser, main
from tracestream.embedded_redis import EmbeddedRedis, free_port

__all__ = ["here"]  # the fixture, shared with tests/test_cli.py

CLOSED = "redis://127.0.0.1:1/0"


def assert_one_line(done: subprocess.CompletedProcess[str], status: int, message: str) -> None:
    assert done.returncode == status and message in done.stderr, (done.args, done.returncode, done.stderr)
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr


BAD_INPUT = [
    (["search", "-l", "²"], "bad filter: invalid literal for int() with base 10: '²'"),
    (["export", "-o", "/nonexistent/x"], "cannot write /nonexistent/x: No such file or directory"),
    (["search", "-n", "99999999999999999999999"], "argument -n/--limit: '99999999999999999999999' is not"),
    (["search", "-n", "0"], "argument -n/--limit: '0' is not a whole number from 1 to"),
    (["search", "--cursor", "99999999999999999999999-0"], "invalid stream id '99999999999999999999999-0'"),
    (["search", "--cursor", "²-0"], "invalid stream id '²-0'"),
    (["tail", "-n", "-5"], "argument -n/--lines: '-5' is not a whole number from 0 to"),
    (["stats", "--top", "-1"], "argument --top: '-1' is not a whole number from 0 to"),
    (["scrub-check", "--key", "!!", "/dev/null"], "extra key '!!' contains no letters or digits"),
    (["console", "--port", "99999"], "argument --port: '99999' is not a whole number from 1 to 65535"),
    (["console", "--port", "-1"], "argument --port: '-1' is not a whole number from 1 to 65535"),
    (["demo", "--web-port", "99999"], "argument --web-port: '99999' is not a whole number from 0 to 65535"),
    (["forward", "--batch-size", "2000000"], "argument --batch-size: '2000000' is not a whole number"),
    (["forward", "--timeout", "99999999d"], "argument --timeout: '99999999d' is longer than 3600 seconds"),
    (["forward", "--claim-idle", "1e999d"], "argument --claim-idle: '1e999d': expected a duration"),
]


def test_each_case_found_is_one_line_and_exit_2(stream: RedisHandle, here: Here, tmp_path: Path) -> None:
    for args, message in BAD_INPUT:
        assert_one_line(here(*args), 2, message)
    assert_one_line(
        here("export", "-f", "csv", "-o", str(tmp_path)), 2, f"cannot write {tmp_path}: Is a directory"
    )


def test_times_before_the_epoch_mean_from_the_start(
    stream: RedisHandle, writer: RecordWriter, here: Here
) -> None:
    """Stream ids start at the epoch: `--since 0001-01-01` was a Lua error and exit 1."""
    writer.log("kept", severity="ERROR", exception=("E", "m", "tb"))
    for args in (
        ["search", "--json", "--since", "0001-01-01"],
        ["search", "--json", "--since", "0001-01-01T00:00:00+01:00"],
        ["search", "--json", "--since", "99999999999d"],
        ["export", "--since", "0001-01-01"],
    ):
        done = here(*args)
        assert done.returncode == 0 and [r["body"] for r in ndjson(done.stdout)] == ["kept"], (
            args,
            done.stderr,
        )
    stats = here("stats", "--json", "--since", "0001-01-01")
    assert stats.returncode == 0 and {line["type"] for line in ndjson(stats.stdout)} == {
        "count",
        "error_group",
    }
    nothing = here("search", "--json", "--until", "0001-01-01")
    assert nothing.returncode == 0 and nothing.stdout == "", nothing.stderr


def test_a_failed_export_leaves_the_target_file_as_it_was(
    stream: RedisHandle, writer: RecordWriter, here: Here, tmp_path: Path
) -> None:
    target = tmp_path / "errors.ndjson"
    target.write_text("yesterday's export\n")
    target.chmod(0o600)
    assert_one_line(here("export", "-o", str(target), "--redis-url", CLOSED), 1, "cannot reach Redis")
    assert target.read_text() == "yesterday's export\n" and list(tmp_path.iterdir()) == [target]

    writer.log("today")
    link = tmp_path / "latest"
    link.symlink_to(target)
    assert here("export", "-o", str(link)).returncode == 0
    assert link.is_symlink() and [r["body"] for r in ndjson(target.read_text())] == ["today"]
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(path.name for path in tmp_path.iterdir()) == ["errors.ndjson", "latest"]  # no partial file
    assert here("export", "-o", "/dev/null").returncode == 0 and Path("/dev/null").is_char_device()


def test_help_in_process_returns_0_instead_of_raising(here: Here) -> None:
    done = here("search", "--help")
    assert done.returncode == 0 and "--since" in done.stdout and done.stderr == ""
    for name in ("tail", "trace", "traces", "services", "stats", "export", "doctor", "console", "demo",
                 "scrub-check", "forward", "spool"):  # fmt: skip
        done = here(name, "--help")
        assert done.returncode == 0 and f"usage: tracestream {name}" in done.stdout, (name, done.stderr)


def test_redis_trouble_is_one_line_and_exit_1_for_every_command(stream: RedisHandle, here: Here) -> None:
    trace = ["trace", "4bf92f3577b34da6a3ce929d0e0e4736"]
    commands = (["search"], ["tail"], trace, ["traces"], ["services"], ["stats"], ["export", "--progress"])
    for command in commands:
        assert_one_line(here(*command, "--redis-url", CLOSED), 1, "cannot reach Redis")


def test_the_demo_runs_only_from_tracestreams_checkout(tmp_path: Path) -> None:
    """Installed from a wheel, the directory above the package is site-packages: the demo ran
    whatever `examples/demo.py` another package had put there."""
    site = tmp_path / "site-packages"
    shutil.copytree(Path(tracestream.__file__).parent, site / "tracestream")
    (site / "examples").mkdir()
    (site / "examples" / "demo.py").write_text("def main(argv):\n    print('not the demo')\n    return 0\n")
    code = "import sys\nfrom tracestream.cli import main\nsys.exit(main(['demo', '--once']))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(site)},
        cwd=tmp_path,  # not the checkout, which `-c` would import from first
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout == ""
    assert_one_line(done, 2, "tracestream: the demo runs from a source checkout of tracestream:")


def test_as_real_processes_console_and_demo_fail_in_one_line(stream: RedisHandle) -> None:
    """The console binds before it prints where it serves: with the port taken it printed the
    URL of whatever held it, then uvicorn's own error line."""
    with EmbeddedRedis() as busy:
        commands = [
            ["console", "--port", str(busy.port)],
            ["console", "--port", "99999"],
            ["demo", "--api-port", "70000"],
            ["search", "-l", "²"],
            ["console", "--host", "no-such-host.invalid"],
        ]
        env = stream.env(TRACESTREAM_CONSOLE_TOKEN="a-token-for-a-host-off-loopback")
        processes = [subprocess.Popen([TRACESTREAM, *args], env=env, stdout=PIPE, stderr=PIPE, text=True)
                     for args in commands]  # fmt: skip
        done = [subprocess.CompletedProcess(p.args, p.wait(TIMEOUT), *p.communicate()) for p in processes]
    assert_one_line(
        done[0], 1, f"tracestream: cannot listen on 127.0.0.1 port {busy.port}: Address already in use"
    )
    assert done[0].stdout == ""
    assert_one_line(done[1], 2, "is not a whole number from 1 to 65535")
    assert_one_line(done[2], 2, "argument --api-port: '70000'")
    assert_one_line(done[3], 2, "bad filter")
    assert_one_line(done[4], 1, "tracestream: cannot listen on no-such-host.invalid port 8686: ")
    assert done[4].stdout == ""


def test_the_console_stopped_by_ctrl_c_exits_130(stream: RedisHandle) -> None:
    """As the other commands do, and as the exit-status table in cli.md says."""
    port = free_port()
    console = subprocess.Popen(
        [TRACESTREAM, "console", "--port", str(port)],
        env=stream.env(),
        stdout=PIPE,
        stderr=PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    assert console.stdout is not None
    assert console.stdout.readline() == f"tracestream console on http://127.0.0.1:{port}/ (Ctrl-C stops it)\n"
    wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), what="the console")
    console.send_signal(signal.SIGINT)
    out, err = console.communicate(timeout=TIMEOUT)
    assert (console.returncode, out, err) == (130, "", "")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


# --- fuzzing -----------------------------------------------------------------------------

# Commands that end on their own (tail follows forever, so it only ever meets a closed port;
# console, demo and forward serve until stopped and are covered above).
FUZZED = ("search", "trace", "traces", "services", "stats", "export", "doctor", "scrub-check", "tail")
TRICKY = (
    "²", "-1", "0", "1", "99999999999999999999999", "0001-01-01", "9999-12-31T23:59:59-14:00",
    "99999999999d", "1e400", "nan", "(?", "(a*)*b", "\udcff", "", " ", "-", "--", "=", "a=b",
    "4bf92f3577b34da6a3ce929d0e0e4736", "00000000000000000000000000000000", "18446744073709551616-0",
    "1700000000000-0", "²-0", "[bold]x", "\x1b[2J", "error", "WARN", "24", "25", "15m", "csv", "ndjson",
    "-h", "--help",
)  # fmt: skip


def _options(command: str) -> list[tuple[str, bool]]:
    """(option or positional placeholder, takes a value) for each argument of `command`."""
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    parser = subparsers.choices[command]
    found = []
    for action in parser._actions:
        if action.dest == "help":
            continue
        found.append((action.option_strings[-1] if action.option_strings else "", action.nargs != 0))
    return found


def _argument_values(tmp: Path) -> dict[str, st.SearchStrategy[str]]:
    """Where a value would reach the network or the disk, only harmless ones."""
    return {
        "--redis-url": st.sampled_from(
            [CLOSED, "http://x", "redis://[::1", "redis://127.0.0.1:99999/0", "", "x"]
        ),
        "--output": st.sampled_from([str(tmp / "out"), str(tmp), "/nonexistent/x", "/dev/null", ""]),
        "--pattern": st.sampled_from(["(", "ACME-[0-9]+", "", "a{99999}"]),
    }


@st.composite
def argv(draw: st.DrawFn, tmp: Path) -> list[str]:
    command = draw(st.sampled_from(FUZZED))
    text = st.one_of(
        st.sampled_from(TRICKY), st.text(st.characters(blacklist_characters="\x00"), max_size=12)
    )
    special = _argument_values(tmp)
    args = [command]
    for option, takes_value in draw(st.lists(st.sampled_from(_options(command)), max_size=5)):
        if option:
            args.append(option)
        if takes_value and draw(st.integers(0, 9)):  # now and then the value is missing
            args.append(draw(special.get(option, text)))
    if command == "scrub-check":
        args.append(draw(st.sampled_from(["/dev/null", str(tmp / "sample.log"), "/nonexistent", "/"])))
    args += draw(st.lists(text, max_size=2))  # stray words and flags
    if command == "tail":
        args += ["--redis-url", CLOSED]  # the last one wins: tail never starts following
    return args


@pytest.fixture(scope="module")
def fuzz_target(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A stream with a few records, named by the environment, as services would; a scratch directory."""
    handle = RedisHandle(redis_server.url, f"fuzz:{free_port()}")
    writer = RecordWriter(handle)
    writer.log("hello", severity="ERROR", exception=("E", "m", "tb"))
    writer.log("world", attributes={"http.route": "/items"})
    writer.close()
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "sample.log").write_text("password=hunter2\nplain line\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)  # a relative path in the arguments lands here
        spool = tmp / "spool"  # `spool discard` must never reach a real spool
        env = handle.env(TRACESTREAM_REDIS_TIMEOUT="1s", TRACESTREAM_SPOOL_DIR=str(spool), COLUMNS="120")
        spool.mkdir()
        for name, value in env.items():
            if name.startswith(("TRACESTREAM_", "COLUMNS")):
                patch.setenv(name, value)
        yield tmp


def run_in_process(args: list[str]) -> tuple[int, str, str]:
    """`main(args)` with its own stdin, stdout and stderr."""
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    stderr = io.StringIO()
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        patch.setattr("sys.stdin", io.StringIO("password=hunter2\n"))  # scrub-check -
        status = main(args)
        stdout.flush()
    output = stdout.buffer
    assert isinstance(output, io.BytesIO)
    return status, output.getvalue().decode("utf-8", "replace"), stderr.getvalue()


@settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_arguments_give_exit_0_1_or_2_and_never_a_traceback(
    fuzz_target: Path, data: st.DataObject
) -> None:
    args = data.draw(argv(fuzz_target))
    status, stdout, stderr = run_in_process(args)
    assert status in (0, 1, 2), (args, status, stderr)
    assert "Traceback" not in stderr + stdout, (args, stderr)
    if status == 2 or (status == 1 and args[0] != "doctor"):
        assert len(stderr.splitlines()) == 1, (args, stderr)
