"""Which Redis errors are worth retrying, and which say Redis will never take these records.

A transient error (the connection, a timeout, a server loading, busy, out of memory, read-only
during a failover, a cluster reshaping) says nothing about the records: the same batch is
sent again later. Anything else (`WRONGTYPE` from a key of the wrong type, a protocol error
from an argument over `proto-max-bulk-len`, a script error) is a refusal: sending the same
records again gets the same answer, so the export worker bisects the batch to find them.
"""

from __future__ import annotations

import re

import redis
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)

# redis-py turns these replies into the classes named here; a refusal or a bare
# ResponseError still carries its code as the message's first word.
_TRANSIENT_CLASSES = (
    redis.ConnectionError,  # also authentication, LOADING and "max number of clients"
    redis.TimeoutError,
    OSError,
    BusyLoadingError,
    OutOfMemoryError,
    ReadOnlyError,
    MasterDownError,
    NoScriptError,
    NoPermissionError,  # the ACL is wrong for every record alike: fixed by the operator, not per record
    AskError,
    MovedError,
    TryAgainError,
    ClusterDownError,
    RedisClusterException,  # no node of the cluster answered
)
_TRANSIENT_CODES = frozenset(
    {"BUSY", "LOADING", "OOM", "TRYAGAIN", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "MISCONF", "NOREPLICAS"}
)
_CODE = re.compile(r"[A-Z][A-Z_]{2,}(?=\s|$)")
# redis-py drops the code of the replies it maps to a class; name them by it again.
_CLASS_CODES = {OutOfMemoryError: "OOM", ReadOnlyError: "READONLY", BusyLoadingError: "LOADING"}


def is_transient(error: BaseException) -> bool:
    """True when sending the same records again later may well succeed."""
    if isinstance(error, _TRANSIENT_CLASSES):
        return True
    return isinstance(error, redis.ResponseError) and error_code(error) in _TRANSIENT_CODES


def error_code(error: BaseException) -> str:
    """A short, bounded name for the error: Redis's code (`WRONGTYPE`, `ERR`, …) or the exception type."""
    for kind, code in _CLASS_CODES.items():
        if isinstance(error, kind):
            return code
    if isinstance(error, redis.ResponseError):
        match = _CODE.match(str(error))
        return match.group() if match else "ERR"
    return type(error).__name__


def describe(error: BaseException) -> str:
    """One line: the code and the message, cut to a length that fits a log line."""
    text = " ".join(str(error).split())
    code = error_code(error)
    line = text if text.startswith(code) else f"{code} {text}".rstrip()
    return line[:300]
