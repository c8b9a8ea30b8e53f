"""Exceptions nothing caught end the program or a thread: each is an ERROR record, and what the
app prints and exits with is what it was without tracestream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, RedisHandle, run_python_process, wait_for
from tracestream.integrations.uncaught import SCOPE

CONFIGURE = "import tracestream; tracestream.configure()\n"
CRASH = """
import logging
logging.getLogger("app").warning("starting")
raise RuntimeError("no database at db:5432")
"""
THREAD_CRASH = """
import threading
def sync():
    raise ValueError("bad row 7")
thread = threading.Thread(target=sync, name="syncer")
thread.start()
thread.join()
print("main goes on")
"""
INTERRUPTED = "raise KeyboardInterrupt\n"
# A connection the crashing stack held, of a module imported after tracestream (as a Celery
# result is): its `__del__` needs its module's globals.
CRASH_HOLDING_A_CONNECTION = r"""
import sys, types
POOL = '''
import os
def forget(connection):
    return connection
class Connection:
    def __del__(self, write=os.write, namespace=globals()):
        intact = namespace.get("forget") is not None
        write(1, b"closed with its module intact\\n" if intact else b"closed after its module went\\n")
'''
pool = types.ModuleType("pool")
exec(POOL, pool.__dict__)
sys.modules["pool"] = pool
def main():
    connection = pool.Connection()
    raise RuntimeError("no database at db:5432")
main()
"""
# Python's multiprocessing docs ("The Process class"), its target failing.
PROCESS_CRASH = """
import multiprocessing, os
if os.environ.get("CONFIGURE") == "1": import tracestream; tracestream.configure()
from multiprocessing import Process

def f(name):
    raise ValueError(f"no greeting for {name}")

if __name__ == '__main__':
    multiprocessing.set_start_method(os.environ["START_METHOD"])
    p = Process(target=f, args=('bob',))
    p.start()
    p.join()
    print("exit code", p.exitcode)
"""
# rich's docs ("Traceback"): its handler replaces sys.excepthook, and calls no hook it replaced.
RICH_CRASH = """
import os
if os.environ.get("CONFIGURE") == "1": import tracestream; tracestream.configure()
from rich.traceback import install
install()
raise RuntimeError("no database at db:5432")
"""


@pytest.mark.parametrize("launcher", [False, True], ids=["configure", "launcher"])
def test_an_exception_that_ends_the_program_is_an_error_record(stream: RedisHandle, launcher: bool) -> None:
    env = stream.env(OTEL_SERVICE_NAME="crashing", OTEL_PYTHON_DISTRO="tracestream")
    bare = run_python_process(CRASH, env)
    traced = run_python_process(CRASH if launcher else CONFIGURE + CRASH, env, launcher=launcher)
    assert (traced.returncode, traced.stdout) == (bare.returncode, bare.stdout) == (1, "")
    # The traceback names the script's line, one further down past configure(); the launcher
    # prints lines of its own first.
    line = f'"<string>", line {4 if launcher else 5}'
    assert traced.stderr.endswith(bare.stderr.replace('"<string>", line 4', line))
    assert launcher or traced.stderr.startswith("starting\n")

    # once: `opentelemetry-bootstrap` installs upstream's instrumentation of the same hook
    crash = [entry for entry in stream.logs() if entry.scope != "app"]
    assert [(e.scope, e.severity, e.body, e.exception_type, e.exception_message) for e in crash] == [
        (SCOPE, "ERROR", "uncaught exception: the program ends", "RuntimeError", "no database at db:5432")
    ]
    assert f"{line}, in <module>" in crash[0].exception_stacktrace


# click's docs' first command; under the launcher contrib's click instrumentation spans it.
CLICK_CRASH = """
import logging
import click
@click.command()
@click.option("--count", default=1)
def hello(count):
    logging.getLogger("app").warning("greeting %d times", count)
    raise RuntimeError("no database at db:5432")
hello()
"""


def test_a_command_that_crashes_is_recorded_in_the_commands_trace(stream: RedisHandle) -> None:
    """By the time Python hands the exception to its hook, the command's span has ended and
    recorded it: the record finds that span's trace in the frames it went through."""
    env = stream.env(OTEL_SERVICE_NAME="cli", OTEL_PYTHON_DISTRO="tracestream")
    done = run_python_process(CLICK_CRASH, env, launcher=True, args=["--count", "2"])
    assert done.returncode == 1 and done.stderr.endswith("RuntimeError: no database at db:5432\n")
    [span] = wait_for(lambda: stream.spans(), what="the command's span")
    assert (span.name, span.status) == ("-c", "ERROR")  # click names a command by argv[0]
    entries = wait_for(lambda: len(stream.logs()) == 2 and stream.logs(), what="the line and the crash")
    assert [(e.scope, e.trace_id, e.span_id) for e in entries] == [
        ("app", span.trace_id, span.span_id),
        (SCOPE, span.trace_id, span.span_id),
    ]


@pytest.mark.parametrize("launcher", [False, True], ids=["configure", "launcher"])
def test_the_stack_that_ended_the_program_is_let_go_while_modules_are_intact(
    stream: RedisHandle, launcher: bool
) -> None:
    """Python lets go of the exception, and of what its stack held, before it tears the modules
    down: held longer, a `__del__` fails, or prints an "Exception ignored" line it never did."""
    env = stream.env(OTEL_SERVICE_NAME="crashing", OTEL_PYTHON_DISTRO="tracestream")
    bare = run_python_process(CRASH_HOLDING_A_CONNECTION, env)
    code = CRASH_HOLDING_A_CONNECTION if launcher else CONFIGURE + CRASH_HOLDING_A_CONNECTION
    traced = run_python_process(code, env, launcher=launcher)
    assert (traced.returncode, traced.stdout) == (bare.returncode, bare.stdout)
    assert bare.stdout == "closed with its module intact\n"
    [crash] = stream.logs()
    assert (crash.body, crash.exception_message) == (
        "uncaught exception: the program ends",
        "no database at db:5432",
    )


@pytest.mark.parametrize("launcher", [False, True], ids=["configure", "launcher"])
def test_an_exception_that_ends_a_thread_is_an_error_record(stream: RedisHandle, launcher: bool) -> None:
    env = stream.env(OTEL_SERVICE_NAME="threads", OTEL_PYTHON_DISTRO="tracestream")
    bare = run_python_process(THREAD_CRASH, env)
    traced = run_python_process(
        THREAD_CRASH if launcher else CONFIGURE + THREAD_CRASH, env, launcher=launcher
    )
    assert (traced.returncode, traced.stdout) == (bare.returncode, bare.stdout) == (0, "main goes on\n")
    # The traceback as printed bare, under the launcher too (which prints lines of its own
    # first): upstream's threading instrumentation, which we stand in for, adds two frames.
    line = f'"<string>", line {4 if launcher else 5}'
    assert traced.stderr.endswith(bare.stderr.replace('"<string>", line 4', line))
    assert launcher or traced.stderr == bare.stderr.replace('"<string>", line 4', line)

    [crash] = stream.logs()
    assert (crash.body, crash.attributes) == (
        "uncaught exception in thread syncer: the thread ends",
        {"thread.name": "syncer"},
    )
    assert (crash.exception_type, crash.exception_message) == ("ValueError", "bad row 7")


def test_ctrl_c_is_no_crash(stream: RedisHandle) -> None:
    env = stream.env(OTEL_SERVICE_NAME="interrupted")
    bare = run_python_process(INTERRUPTED, env)
    traced = run_python_process(CONFIGURE + INTERRUPTED, env)
    assert traced.returncode == bare.returncode != 0
    assert "KeyboardInterrupt" in traced.stderr
    assert stream.logs() == []


@pytest.mark.parametrize("launcher", [False, True], ids=["configure", "launcher"])
def test_a_hook_set_afterwards_prints_the_end_and_it_is_still_recorded(
    stream: RedisHandle, launcher: bool
) -> None:
    """rich's handler, and Typer's, which the `fastapi` command sets, replace ours and call no
    other: the exception that ended the program is recorded at exit instead."""
    env = stream.env(OTEL_SERVICE_NAME="rich", OTEL_PYTHON_DISTRO="tracestream")
    bare = run_python_process(RICH_CRASH, env)
    traced = run_python_process(RICH_CRASH, {**env, "CONFIGURE": str(int(not launcher))}, launcher=launcher)
    assert (traced.returncode, traced.stdout) == (bare.returncode, bare.stdout) == (1, "")
    assert "Traceback (most recent call last)" in bare.stderr and traced.stderr.endswith(bare.stderr)
    crash = [(e.scope, e.body, e.exception_type, e.exception_message) for e in stream.logs()]
    assert crash == [
        (SCOPE, "uncaught exception: the program ends", "RuntimeError", "no database at db:5432")
    ]


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("launcher", [False, True], ids=["configure", "launcher"])
def test_an_exception_that_ends_a_multiprocessing_child_is_an_error_record(
    stream: RedisHandle, tmp_path: Path, launcher: bool, start_method: str
) -> None:
    """A child prints what its target raised and hands it to no hook, as uvicorn's `--workers`
    and `--reload` children do when the app fails to load: nothing was recorded."""
    script = tmp_path / "greet.py"  # spawn imports the main module again: a file, not `-c`
    script.write_text(PROCESS_CRASH)
    env = stream.env(OTEL_SERVICE_NAME="greeter", OTEL_PYTHON_DISTRO="tracestream", START_METHOD=start_method)
    bare = run_python_process(script, env)
    traced = run_python_process(script, {**env, "CONFIGURE": str(int(not launcher))}, launcher=launcher)
    assert (traced.returncode, traced.stdout) == (bare.returncode, bare.stdout) == (0, "exit code 1\n")
    assert "ValueError: no greeting for bob" in bare.stderr and traced.stderr.endswith(bare.stderr)
    crash = [(e.scope, e.body, e.exception_type, e.exception_message) for e in stream.logs()]
    assert crash == [
        (
            SCOPE,
            "uncaught exception in process Process-1: the process ends",
            "ValueError",
            "no greeting for bob",
        )
    ]


# A test module as pytest's docs write one, importing an app module that calls configure().
FAILING_TEST = """
import logging, os
if os.environ.get("WITH_TRACESTREAM"):
    import tracestream
    tracestream.configure()


def test_passes():
    logging.getLogger("app").warning("checked the cart")


def test_fails():
    assert 1 + 1 == 3
"""


def test_a_failed_test_pytest_keeps_for_post_mortem_is_no_end_of_the_program(
    stream: RedisHandle, tmp_path: Path
) -> None:
    """pytest keeps each failed test's exception in `sys.last_value` for post-mortem debugging,
    where Python keeps the one that ends the program: the last failure read as a crash."""
    tests = tmp_path / "test_cart.py"
    tests.write_text(FAILING_TEST)
    code = f"import sys, pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {str(tests)!r}]))"
    bare = run_python_process(code, stream.env())
    traced = run_python_process(code, stream.env(WITH_TRACESTREAM="1"))
    assert bare.returncode == traced.returncode == 1, traced.stdout
    assert "1 failed, 1 passed" in traced.stdout
    bodies = [entry.body for entry in wait_for(lambda: stream.logs(), what="the passing test's line")]
    assert bodies == ["checked the cart"]


def test_an_exception_at_the_interactive_prompt_ends_nothing(stream: RedisHandle) -> None:
    """`python -i` (and `code.interact()`, Django's `manage.py shell`) hands every exception
    typed at its prompt to `sys.excepthook`: each was an error issue, "the program ends", while
    the session went on. The script's own crash, before the prompt, is still recorded."""
    session = "undefined_name\nimport logging; logging.getLogger('repl').warning('still here')\n"
    script = "import tracestream; tracestream.configure()\nraise ValueError('the script fails')\n"
    done = subprocess.run(
        [sys.executable, "-i", "-c", script],
        input=session,
        env=stream.env(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0 and "NameError: name 'undefined_name' is not defined" in done.stderr
    records = wait_for(lambda: len(stream.logs()) == 2 and stream.logs(), what="two records")
    assert [(e.body, e.exception_type) for e in records] == [
        ("uncaught exception: the program ends", "ValueError"),
        ("still here", ""),
    ]
