"""Helpers for tests: polling with a deadline, and reading what the exporters wrote."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis

from tracestream.query import resolve_resources
from tracestream.schema import LogEntry, SpanEntry, StreamKeys

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# Processes the tests start spool here, never into the machine's own spool directory; it goes
# when the process that made it ends (each test worker, and each child that imports this module).
SPOOL_DIR = Path(tempfile.mkdtemp(prefix="tracestream-test-spool-"))
atexit.register(shutil.rmtree, SPOOL_DIR, ignore_errors=True)


def interruptible() -> None:
    """`preexec_fn` for a child a test stops with Ctrl-C (SIGINT): a shell starts background jobs with
    SIGINT ignored, the ignore survives exec, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll until `condition()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


@dataclass(frozen=True)
class RedisHandle:
    url: str
    stream: str

    @property
    def keys(self) -> StreamKeys:
        return StreamKeys(self.stream)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a child process that exports here."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACESTREAM_"))}
        env.update(
            TRACESTREAM_REDIS_URL=self.url,
            TRACESTREAM_STREAM=self.stream,
            TRACESTREAM_BATCH_DELAY_MS="50",
            TRACESTREAM_SPOOL_DIR=str(SPOOL_DIR),
        )
        env.update(extra)
        return env

    def logs(self) -> list[LogEntry]:
        """Every log entry, its resource looked up as the readers do."""
        return [LogEntry.from_fields(i, f) for i, f in self._entries(self.keys.logs)]

    def spans(self) -> list[SpanEntry]:
        return [SpanEntry.from_fields(i, f) for i, f in self._entries(self.keys.spans)]

    def _entries(self, key: str) -> list[tuple[str, dict[str, str]]]:
        with self.client() as client:
            found: list[tuple[str, dict[str, str]]] = client.xrange(key)
            resolve_resources(client, self.keys, (fields for _, fields in found))
            return found


def run_python(
    code: str | Path, env: Mapping[str, str], *, launcher: bool = False, timeout: float = 60
) -> str:
    """Run `code` (or a script) in a fresh interpreter, optionally under `opentelemetry-instrument`;
    its stderr."""
    done = run_python_process(code, env, launcher=launcher, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return done.stderr


def run_python_process(
    code: str | Path,
    env: Mapping[str, str],
    *,
    launcher: bool = False,
    timeout: float = 60,
    args: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """The same, whatever it exits with, for a test that reads its stdout or its exit status.
    A `Path` runs that script rather than `-c` code (multiprocessing's spawn imports it again);
    `args` follow it, as a command line's arguments."""
    command = [sys.executable, *(["-c", code] if isinstance(code, str) else [str(code)]), *args]
    if launcher:
        command = [str(VENV_BIN / "opentelemetry-instrument"), *command]
    return subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
