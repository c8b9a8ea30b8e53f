"""A library in use whose contrib instrumentation is not installed: one line saying so, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.reduced_env import environment_without
from tests.seeded_records import RecordWriter
from tests.support import ROOT, RedisHandle, wait_for

APP = """
import logging, tracestream
telemetry = tracestream.configure()
import requests
logging.getLogger("app").warning("still here")
telemetry.force_flush()
"""


def test_an_absent_contrib_instrumentation_is_one_line(stream: RedisHandle, tmp_path: Path) -> None:
    python = environment_without(tmp_path / "venv", "opentelemetry-instrumentation-requests")
    done = subprocess.run(
        [str(python), "-c", APP], env=stream.env(), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    assert notes == [
        "tracestream: WARNING requests is in use but opentelemetry-instrumentation-requests is not "
        "installed: no requests integration (pip install 'tracestream[clients]' adds it)"
    ]
    assert "still here" in done.stderr  # the app's own warning, through logging.lastResort
    wait_for(lambda: [e for e in stream.logs() if e.body == "still here"], what="the app's record")


CLI = "import sys; from tracestream.cli import main; sys.exit(main(sys.argv[1:]))"


def test_the_cli_reads_without_the_console_extra(stream: RedisHandle, tmp_path: Path) -> None:
    """Installed with `[django,celery]` only: every command but `console` works, and that one
    says what to install in one line."""
    RecordWriter(stream).log("still readable")
    python = environment_without(tmp_path / "venv", "starlette", "uvicorn")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        where = ["--redis-url", stream.url, "--stream", stream.stream]
        command = [str(python), "-c", CLI, *args, *where]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)

    found = cli("search", "--grep", "readable")
    assert found.returncode == 0 and "still readable" in found.stdout, found.stderr
    console = cli("console")
    assert console.returncode == 2 and console.stdout == ""
    assert console.stderr.strip().splitlines() == [
        "tracestream: the console needs the console extra (starlette is not installed): "
        "pip install 'tracestream[console]'"
    ]
