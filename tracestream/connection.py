"""Redis clients made per process, so a forked worker never shares its parent's socket.

On a Redis Cluster, `connect_cluster` returns a `RedisCluster` that only maps keys to servers:
each shard is then read and written through the plain client of the server holding
it (`node_for`), so the single-Redis code runs unchanged, pipelines and scripts included.
"""

from __future__ import annotations

import contextlib

# Imported lazily by the first connection: a socket call on a host name imports encodings.idna,
# and redis-py reads its own version with importlib.metadata, which imports email.parser. Done on
# the export thread while the app forks its workers (gunicorn --preload, Celery's prefork pool),
# the child inherits that module's import lock held and its first export waits on it for ever;
# imported here, at setup, it never happens on that thread (tests/test_fork_multiprocessing.py).
import email.parser  # noqa: F401
import encodings.idna  # noqa: F401
import os
import select
import sys
import threading
from dataclasses import dataclass
from typing import Any, TypeAlias

import redis
from redis.cluster import RedisCluster
from redis.exceptions import AskError, ClusterDownError, RedisClusterException, TryAgainError

from tracestream.forks import renew_in_child
from tracestream.settings import Settings, shown_url


@dataclass(frozen=True)
class Tls:
    """Files for `rediss://`: the CA to trust, and a client certificate and key if the server asks."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> Tls:
        return cls(settings.redis_ca, settings.redis_cert, settings.redis_key)

    def options(self) -> dict[str, Any]:
        names = {"ssl_ca_certs": self.ca, "ssl_certfile": self.cert, "ssl_keyfile": self.key}
        return {name: value for name, value in names.items() if value}


Client: TypeAlias = redis.Redis | RedisCluster
# What a cluster client raises besides RedisError, e.g. when no seed node answers.
CLUSTER_ERRORS = (redis.RedisError, RedisClusterException)
# A slot moved (MOVED, ASK) or the cluster is reconfiguring: try again after `refresh_topology`.
CLUSTER_CHANGES = (AskError, TryAgainError, ClusterDownError, RedisClusterException)


def connect(url: str, timeout: float, *, decode: bool = False, tls: Tls | None = None) -> redis.Redis:
    """A client with timeouts on every socket operation: a hung Redis must never hang us.

    redis-py retries nothing here (its default for URLs): the caller decides when to try again.
    No health-check PING: a Redis whose last snapshot failed refuses PING as it refuses writes
    (MISCONF), and every reader then failed though its reads were answered; a connection the
    server closed is replaced as the pool hands it out.
    """
    return redis.Redis.from_url(url, **_options(url, timeout, decode, tls))


def connect_cluster(
    url: str, timeout: float, *, decode: bool = False, tls: Tls | None = None
) -> RedisCluster:
    """A cluster client seeded from one node (`url`); it discovers the others and their slots."""
    return RedisCluster.from_url(url, **_options(url, timeout, decode, tls))


def open_client(
    url: str, timeout: float, *, cluster: bool, decode: bool = False, tls: Tls | None = None
) -> Client:
    """`connect_cluster` or `connect`, as the settings say."""
    opener = connect_cluster if cluster else connect
    return opener(url, timeout, decode=decode, tls=tls)


def reply_text(value: object) -> str:
    """A reply item as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _options(url: str, timeout: float, decode: bool, tls: Tls | None) -> dict[str, Any]:
    options: dict[str, Any] = tls.options() if tls is not None and url.startswith("rediss://") else {}
    options.update(socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=decode)
    return options


def client_for(settings: Settings, *, decode: bool = False, timeout: float | None = None) -> Client:
    """A client for the configured Redis or Redis Cluster, TLS files included."""
    return open_client(
        settings.redis_url,
        settings.redis_timeout if timeout is None else timeout,
        cluster=settings.redis_cluster,
        decode=decode,
        tls=Tls.of(settings),
    )


def node_for(client: Client, key: str) -> redis.Redis:
    """The plain client of the server holding `key`: `client` itself unless it is a cluster."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
        connection = client.get_redis_connection(node)
        if connection is None:
            raise RedisClusterException(f"no connection to the cluster node {node.name} holding {key!r}")
        return connection
    return client


def primaries(client: Client) -> list[redis.Redis]:
    """A plain client per master: `client` itself unless it is a cluster."""
    if not isinstance(client, RedisCluster):
        return [client]
    connections = (client.get_redis_connection(node) for node in client.get_primaries())  # type: ignore[no-untyped-call]
    return [connection for connection in connections if connection is not None]


def refresh_topology(client: Client) -> None:
    """After a failover or a MOVED reply: ask the cluster again which server holds which slot."""
    if isinstance(client, RedisCluster):
        with contextlib.suppress(*CLUSTER_ERRORS):  # no node answered: the next attempt tries again
            client.nodes_manager.initialize()


class ProcessLocalClient:
    """Hands out one client per pid, made on first use in that process."""

    def __init__(self, url: str, timeout: float, tls: Tls | None = None, *, cluster: bool = False) -> None:
        self.url = url
        self.shown_url = shown_url(url)
        self.timeout = timeout
        self.tls = tls
        self.cluster = cluster
        self._renew_lock()
        renew_in_child(self._renew_lock)
        self._pid = -1
        self._client: Client | None = None

    def _renew_lock(self) -> None:
        """Also in a forked child, where the parent's exporter thread may have held it."""
        self._lock = threading.Lock()

    def get(self) -> Client:
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    self._client = open_client(self.url, self.timeout, cluster=self.cluster, tls=self.tls)
                    self._pid = pid
        return self._client

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None


def follow_a_late_select_patch() -> None:
    """redis-py's hiredis parser chose `select.poll` as it loaded, and eventlet's `monkey_patch()`
    takes `select.poll` away: after `configure()`, as always under the launcher, every call then
    failed. The parser waits with selectors instead, as where redis-py loads after the patch.
    Called before each call of the export thread: one attribute check."""
    hiredis: Any = sys.modules.get("redis._parsers.hiredis")
    if hiredis is not None and getattr(hiredis, "_HAS_POLL", False) and not hasattr(select, "poll"):
        hiredis._HAS_POLL = False
