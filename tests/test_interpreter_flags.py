"""Interpreter flags an app runs with: tracestream's part of the process takes them as it found them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.apps.servers import LAUNCHER_ENV
from tests.support import ROOT, VENV_BIN, RedisHandle, wait_for

APP = """
import logging, sys, tracestream
if "configure" in sys.argv:
    tracestream.configure().force_flush()
logging.getLogger("shop").warning("paid")
print("app done")
"""


@pytest.mark.parametrize("setup", ["configure", "launcher"])
@pytest.mark.parametrize("flag", ["-b", "-bb"])
def test_bytes_warnings_are_the_apps_own(stream: RedisHandle, flag: str, setup: str) -> None:
    """redis-py 8.2 compares bytes with str as it loads: under -bb the app died importing it
    (under the launcher, ran with nothing set up), and under -b printed three warnings."""
    command = [sys.executable, flag, "-c", APP, setup]
    env = stream.env(OTEL_SERVICE_NAME="flags")
    if setup == "launcher":
        command = [str(VENV_BIN / "opentelemetry-instrument"), *command]
        env.update(LAUNCHER_ENV)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert (done.returncode, done.stdout) == (0, "app done\n"), done.stderr
    assert "BytesWarning" not in done.stderr, done.stderr
    wait_for(lambda: [e for e in stream.logs() if e.body == "paid"], what="the app's record")
