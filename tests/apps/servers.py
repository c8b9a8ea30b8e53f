"""Real server processes for the end-to-end tests: started on a free loopback port, stopped by pid."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from tests.support import ROOT, VENV_BIN, RedisHandle, wait_for

LAUNCHER = str(VENV_BIN / "opentelemetry-instrument")
# Ours, even when upstream's opentelemetry-distro is installed too.
LAUNCHER_ENV = {"OTEL_PYTHON_DISTRO": "tracestream", "OTEL_PYTHON_CONFIGURATOR": "tracestream"}


class Server:
    def __init__(self, process: subprocess.Popen[bytes], output: str) -> None:
        self.process = process
        self._output = output

    def output(self) -> str:
        with open(self._output, errors="replace") as file:
            return file.read()

    def stop(self) -> None:
        """What leaving `serve` does (SIGTERM, then SIGKILL), early: the output is then complete."""
        _stop(self.process)


@contextlib.contextmanager
def serve(
    command: Sequence[str], env: Mapping[str, str], ready: Callable[[Server], object], timeout: float = 30.0
) -> Iterator[Server]:
    """Start `command` in its own process group; stop the group (SIGTERM, then SIGKILL) at exit."""
    with tempfile.NamedTemporaryFile(prefix="tracestream-e2e-", suffix=".log", delete=False) as log:
        path = log.name
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, path)
    try:

        def started() -> object:
            if process.poll() is not None:
                raise AssertionError(f"{command[0]} exited with {process.returncode}:\n{server.output()}")
            return ready(server)

        wait_for(started, timeout=timeout, interval=0.1, what=f"{' '.join(command)} to be ready")
        yield server
    finally:
        _stop(process)
        os.unlink(path)


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def http_ready(url: str) -> Callable[[Server], bool]:
    """A server whose socket listens before its worker answers (gunicorn's master binds, then boots
    the worker) holds the probe until it does: a probe that gave up first would be a request the
    app still serves, to a client that left (Django's ASGI handler cancels it: an error record)."""

    def ready(_: Server) -> bool:
        try:
            httpx.get(url, timeout=15.0)
        except httpx.TransportError:
            return False
        return True

    return ready


def assert_unrecorded_and_unsaid(
    stream: RedisHandle,
    command: Sequence[str],
    env: Mapping[str, str],
    url: str,
    *,
    ready_url: str,
    access_scope: str,
) -> None:
    """GET `url` from an app whose request records the user turned off: its access line reaches
    the stream, no request record does, and no line of ours says the app is one we do not know."""
    with serve(command, env, http_ready(ready_url)) as server:
        assert httpx.get(url).status_code == 200
        path = httpx.URL(url).path
        wait_for(
            lambda: [e for e in stream.logs() if e.scope == access_scope and f"{path} " in e.body],
            what="the access line in the stream",
        )
        server.stop()
        output = server.output()
    assert not [e for e in stream.logs() if e.attributes.get("event.name") == "http.server.request"]
    assert not [line for line in output.splitlines() if line.startswith("tracestream:")], output


def printed(server: Server, text: str) -> bool:
    return text in server.output()


def run_json(code: str, env: Mapping[str, str], timeout: float = 60) -> Any:
    """Run `code` in a fresh interpreter; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code], env=dict(env), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def launched(*command: str) -> list[str]:
    """`command` under the real `opentelemetry-instrument` launcher."""
    return [LAUNCHER, *command]


def bin_path(name: str) -> str:
    return str(VENV_BIN / name)
