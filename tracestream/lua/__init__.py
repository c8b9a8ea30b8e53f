"""The server-side scripts, kept as `.lua` files beside this module and read once per process."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.resources import files

__all__ = ["script_sha", "script_source"]


@cache
def script_source(name: str) -> str:
    """The text of `<name>.lua`; a missing script is a packaging bug, so it raises."""
    return files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


@cache
def script_sha(name: str) -> str:
    """The SHA1 Redis names the script by (EVALSHA)."""
    return hashlib.sha1(script_source(name).encode()).hexdigest()
