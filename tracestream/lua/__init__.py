"""The server-side scripts, kept as `.lua` files beside this module and read once per process.

They are read as plain files, not through `importlib.resources`: its first call imports
`importlib.readers`, and an exporter thread inside that import when the app forks (a prefork
pool starting) leaves the module's import lock held in every child, whose first export then
waits on it for ever (tests/test_fork_multiprocessing.py).
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path

__all__ = ["script_sha", "script_source"]

_HERE = Path(__file__).parent
# Redis runs one text per script, so what two scripts share is pasted in where they say so.
_INCLUDE = re.compile(r"^--#include (\w+)$", re.MULTILINE)


@cache
def script_source(name: str) -> str:
    """The text of `<name>.lua`, each `--#include <other>` line replaced by `<other>.lua`; a
    missing script is a packaging bug, so it raises."""
    text = (_HERE / f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda line: script_source(line.group(1)).rstrip("\n"), text)


@cache
def script_sha(name: str) -> str:
    """The SHA1 Redis names the script by (EVALSHA)."""
    return hashlib.sha1(script_source(name).encode()).hexdigest()
