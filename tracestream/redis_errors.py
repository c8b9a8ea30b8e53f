"""Which Redis errors are worth retrying, and which say Redis will never take these records.

A transient error (the connection, a timeout, a server loading, busy, out of memory, read-only
during a failover, a cluster reshaping) says nothing about the records: the same batch is
sent again later. So does a setup that makes Redis refuse every write alike (an address that
is not a Redis server, a database it does not have, an ACL, a command renamed away, a cluster
node written to as a single Redis): the records wait in the spool until the setup is fixed,
and `setup_problem` says what to fix, as it says what a failed connection tells of the setup
(TLS on one side only, a busy server, a replica). Anything else (`WRONGTYPE` from a key of the
wrong type, a protocol error from an argument over `proto-max-bulk-len`, a script error) is a
refusal: sending the same records again gets the same answer, so the export worker bisects
the batch to find them. What a `maxmemory-policy` lets Redis evict explains a key gone.
"""

from __future__ import annotations

import re

import redis
from redis.connection import SSLConnection
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    InvalidResponse,
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
    InvalidResponse,  # what answered does not speak Redis's protocol
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
    | {"HELDBACK"}  # the append script's: the mark moved back under a round trip (lua/append.lua)
)
_CODE = re.compile(r"[A-Z][A-Z_]{2,}(?=\s|$)")
# redis-py drops the code of the replies it maps to a class; name them by it again.
_CLASS_CODES = {OutOfMemoryError: "OOM", ReadOnlyError: "READONLY", BusyLoadingError: "LOADING"}


_ACL = "the URL's user lacks a permission tracestream needs: docs/security.md lists them"
_CLUSTER_NODE = "it is a Redis Cluster node: set TRACESTREAM_REDIS_CLUSTER=true"
_RENAMED = (
    "it lacks a command tracestream needs, renamed or disabled in its configuration (docs/security.md "
    "lists them), or it is a Sentinel: point the URL at the master it names"
)
# Replies that refuse every write alike, whatever the records: (what the reply says, what to do).
_SETUP_REPLIES = (
    ("DB index is out of range", "it has no such database: pick a lower number in the URL"),
    ("can't run this command", _ACL),
    ("no permissions to", _ACL),
    ("can't access", _ACL),  # a key pattern the user's rights leave out, met inside a script
    ("ACL failure", _ACL),  # Redis 7.2's words for the same
    ("hash to the same slot", _CLUSTER_NODE),
    ("unknown command", _RENAMED),  # `rename-command` in its configuration
    ("Unknown Redis command called from script", _RENAMED),
    (
        "MISCONF",
        "its last save to disk failed (a full disk, a dir it cannot write): it takes writes again once a "
        "save succeeds; its log says why, and `tracestream doctor` shows it",
    ),
    (
        "NOREPLICAS",
        "it takes a write only while min-replicas-to-write replicas are in sync: bring its replicas up, "
        "or lower that setting",
    ),
    (
        "running in protected mode",
        "it takes clients from other hosts only once its default user has a password (protected "
        "mode): give it one and put it in the URL, or reach it from its own host",
    ),
)


# What of ours allkeys-* policies let Redis evict: only these take the streams themselves.
WHOLE_STREAMS = "whole streams"


def evictable_keys(policy: str) -> str:
    """What of ours a `maxmemory-policy` lets Redis evict when memory runs out; "" for nothing
    (or a policy not known). The volatile-* policies take only keys with an expiry."""
    if policy.startswith("allkeys"):
        return WHOLE_STREAMS
    if policy.startswith("volatile"):
        return "the trace index, trace list, issues and resources"
    return ""


def is_wrong_type(error: BaseException) -> bool:
    """A key of another type than the command reads: another writer's, which readers pass over."""
    return "WRONGTYPE" in str(error)


def is_reply(error: BaseException) -> bool:
    """Redis's own answer, not a failure in this process (a client some library broke)."""
    return isinstance(error, redis.ResponseError)


# Python 3.12.0 to 3.12.2 at exit, where connecting needs a thread (gevent's resolver): the
# next process sends the records, from the spool.
_NO_THREAD_AT_EXIT = "can't create new thread at interpreter shutdown"


def is_transient(error: BaseException) -> bool:
    """True when sending the same records again later may well succeed."""
    if isinstance(error, _TRANSIENT_CLASSES):
        return True
    if type(error) is RuntimeError and str(error) == _NO_THREAD_AT_EXIT:
        return True
    if not isinstance(error, redis.ResponseError):
        return False
    return error_code(error) in _TRANSIENT_CODES or _setup_reply(error) is not None


def setup_problem(error: BaseException, *, cluster: bool) -> str | None:
    """What in the setup makes Redis refuse every write, or what a failed connection tells of it,
    said as what to check or fix; None when the error says all there is."""
    if not cluster and isinstance(error, (MovedError, AskError)):
        return _CLUSTER_NODE
    return advice(error)


def advice(error: BaseException) -> str | None:
    """`setup_problem` for a reader, where a MOVED reply is a cluster's own business."""
    if isinstance(error, InvalidResponse):
        return "it is not a Redis server: what answers at the URL does not speak Redis's protocol"
    if isinstance(error, ReadOnlyError):
        return "the URL names a read-only replica: point TRACESTREAM_REDIS_URL at the primary"
    if isinstance(error, redis.TimeoutError):
        return _timeout_advice(error)
    if isinstance(error, redis.ConnectionError) and _closed_by_server(error) and not _over_tls(error):
        return "the server closed the connection: it may be restarting, or, if it speaks TLS, use rediss://"
    if isinstance(error, redis.ConnectionError) and _ended_by_tls_server(error) and _over_tls(error):
        return (
            "the server ended the TLS session: if it asks for a client certificate, set "
            "TRACESTREAM_REDIS_CERT and TRACESTREAM_REDIS_KEY"
        )
    if isinstance(error, redis.ConnectionError) and _failed_a_strict_check(error):
        return (
            "Python 3.13 and later verify certificates strictly (VERIFY_X509_STRICT): reissue the CA "
            "with keyUsage keyCertSign and key identifiers (redis-cli and older Pythons take it as it is)"
        )
    return _setup_reply(error) if isinstance(error, redis.ResponseError) else None


# What OpenSSL says of a chain that only strict verification refuses (a CA made as Redis's own
# gen-test-certs.sh makes one has no keyUsage).
_STRICT_CHECKS = (
    "does not include key usage",
    "authority key identifier",
    "subject key identifier",
    "basic constraints of ca cert not marked critical",
)


def _failed_a_strict_check(error: redis.ConnectionError) -> bool:
    text = str(error).lower()
    return "certificate verify failed" in text and any(check in text for check in _STRICT_CHECKS)


def _timeout_advice(error: redis.TimeoutError) -> str:
    """redis-py says where the wait was (connecting, reading, writing); a TLS handshake that timed
    out leaves its own words behind it."""
    if "handshake" in str(error.__context__):
        return "the TLS handshake got no answer: if the server does not speak TLS, use redis://"
    if "connecting" in str(error):
        return "no connection was made: is the host reachable and the port open?"
    return (
        "the connection was made but no reply came: a Redis busy with a slow command or a large "
        "save, or not a Redis server; TRACESTREAM_REDIS_TIMEOUT sets the wait"
    )


def _closed_by_server(error: redis.ConnectionError) -> bool:
    text = str(error).lower()
    return any(words in text for words in ("reset by peer", "closed by server", "broken pipe"))


def _ended_by_tls_server(error: redis.ConnectionError) -> bool:
    """A TLS 1.3 server that wants a certificate ends the session once the handshake is done:
    the client hears an EOF, or the alert itself, or (Python 3.13) a reset or a close as it
    writes or reads its first command, not while connecting."""
    text = str(error).lower()
    if "eof occurred in violation of protocol" in text or "certificate required" in text:
        return True
    return _closed_by_server(error) and "connecting to" not in text


def _over_tls(error: BaseException) -> bool:
    """Whether the connection that failed spoke TLS: redis-py's words do not say, the frames it
    raised the error from hold the connection."""
    trace = error.__traceback__
    while trace is not None:
        if isinstance(trace.tb_frame.f_locals.get("self"), SSLConnection):
            return True
        trace = trace.tb_next
    return False


def _setup_reply(error: redis.ResponseError) -> str | None:
    text = str(error)
    return next((fix for reply, fix in _SETUP_REPLIES if reply in text), None)


def error_code(error: BaseException) -> str:
    """A short, bounded name for the error: Redis's code (`WRONGTYPE`, `ERR`, …) or the exception type."""
    for kind, code in _CLASS_CODES.items():
        if isinstance(error, kind):
            return code
    if isinstance(error, redis.ResponseError):
        match = _CODE.match(str(error))
        return match.group() if match else "ERR"
    return type(error).__name__


# Redis quotes the start of an unknown command's arguments: for a script, its source.
_QUOTED_ARGUMENTS = ", with args beginning with:"
_LONGEST = 300


def describe(error: BaseException) -> str:
    """One line: the code and the message, cut to a length that fits a log line."""
    text = " ".join(str(error).split()).partition(_QUOTED_ARGUMENTS)[0].rstrip(".")
    code = error_code(error)
    line = text if text.startswith(code) else f"{code} {text}".rstrip()
    if len(line) <= _LONGEST:
        return line
    sentence_end = line.rfind(". ", 0, _LONGEST)  # Redis explains some replies at length (DENIED)
    return line[:sentence_end] if sentence_end > 0 else line[:_LONGEST]
