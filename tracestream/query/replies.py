"""Redis replies that may hold bytes that are not UTF-8 (another writer's), and the read-only
scripts that return them."""

from __future__ import annotations

import re
import weakref
from typing import Any, cast

import redis
from redis.client import NEVER_DECODE
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from tracestream.schema import (
    tolerant_text,
)

# EVALSHA_RO itself refused: Redis 6.2 has no such command, and a reader user set up before it
# was needed may not run it. Such clients are remembered, so each script call takes one round trip.
_EVALSHA_RO_REFUSED = re.compile(r"[`']evalsha_ro[`']", re.IGNORECASE)
_refusing_evalsha_ro: weakref.WeakSet[redis.Redis] = weakref.WeakSet()


def tolerant_call(client: redis.Redis, *command: str | int) -> Any:
    """A read whose reply may hold bytes that are not UTF-8 (another writer's): read again
    undecoded, they become `\\xNN` escapes instead of failing every record in the reply."""
    try:
        return client.execute_command(*command)  # type: ignore[no-untyped-call]
    except UnicodeDecodeError:
        return tolerant_text(client.execute_command(*command, **{NEVER_DECODE: True}))  # type: ignore[no-untyped-call]


def run_script(script: Script, keys: list[str], args: list[str | int]) -> Any:
    """`script`, which only reads, called as `tolerant_call` reads.

    It runs as EVALSHA_RO, which Redis 7 never holds while it pauses writes (`CLIENT PAUSE WRITE`,
    `FAILOVER`), loaded or not; EVALSHA, which waits out a pause, only where EVALSHA_RO is refused.
    """
    client = cast(redis.Redis, script.registered_client)
    if client not in _refusing_evalsha_ro:
        try:
            return _evalsha(client, "EVALSHA_RO", script, keys, args)
        except redis.ResponseError as error:
            if not _EVALSHA_RO_REFUSED.search(str(error)):
                raise
            _refusing_evalsha_ro.add(client)
    return _evalsha(client, "EVALSHA", script, keys, args)


def _evalsha(
    client: redis.Redis, command: str, script: Script, keys: list[str], args: list[str | int]
) -> Any:
    """`script` loaded first when Redis does not have it (a restart, `SCRIPT FLUSH`)."""
    call = (command, script.sha, len(keys), *keys, *args)
    try:
        return tolerant_call(client, *call)
    except NoScriptError:
        client.script_load(script.script)
        return tolerant_call(client, *call)
