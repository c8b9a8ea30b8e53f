"""Redis replies that may hold bytes that are not UTF-8 (another writer's)."""

from __future__ import annotations

from typing import Any, cast

import redis
from redis.client import NEVER_DECODE
from redis.commands.core import Script

from tracestream.schema import (
    tolerant_text,
)


def tolerant_call(client: redis.Redis, *command: str | int) -> Any:
    """A read whose reply may hold bytes that are not UTF-8 (another writer's): read again
    undecoded, they become `\\xNN` escapes instead of failing every record in the reply."""
    try:
        return client.execute_command(*command)  # type: ignore[no-untyped-call]
    except UnicodeDecodeError:
        return tolerant_text(client.execute_command(*command, **{NEVER_DECODE: True}))  # type: ignore[no-untyped-call]


def run_script(script: Script, keys: list[str], args: list[str | int]) -> Any:
    """`script` called as `tolerant_call` reads: a reply that is not UTF-8 is read again undecoded."""
    try:
        return script(keys=keys, args=args)
    except UnicodeDecodeError:
        return tolerant_call(
            cast(redis.Redis, script.registered_client), "EVALSHA", script.sha, len(keys), *keys, *args
        )
