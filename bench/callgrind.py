"""Counting instructions with callgrind: a process started with collection off, switched on
around the part measured, so start-up and set-up are not counted."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["collect", "total", "under_callgrind"]


def under_callgrind(out_file: str | Path, command: Sequence[str]) -> list[str]:
    """`command` run under callgrind with collection off, its counts written to `out_file`."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_file}",
        *command,
    ]


def collect(state: str, pid: int | None = None) -> None:
    """Switch collection `on` or `off` in `pid` (this process by default)."""
    process = str(pid if pid is not None else os.getpid())
    subprocess.run(["callgrind_control", f"--instr={state}", process], check=True, capture_output=True)


def total(out_file: Path) -> int:
    """The instructions a finished run counted, from its output file."""
    found = re.search(r"^totals: (\d+)", out_file.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no totals in {out_file}")
    return int(found.group(1))
