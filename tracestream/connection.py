"""Redis clients made per process, so a forked worker never shares its parent's socket."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import redis

from tracestream.otel_setup.settings import Settings


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


def connect(url: str, timeout: float, *, decode: bool = False, tls: Tls | None = None) -> redis.Redis:
    """A client with timeouts on every socket operation: a hung Redis must never hang us.

    redis-py retries nothing here (its default for URLs): the caller decides when to try again.
    """
    options = tls.options() if tls is not None and url.startswith("rediss://") else {}
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=decode,
        **options,
    )


def client_for(settings: Settings, *, decode: bool = False) -> redis.Redis:
    """A client for the configured Redis, TLS files included."""
    return connect(settings.redis_url, settings.redis_timeout, decode=decode, tls=Tls.of(settings))


class ProcessLocalClient:
    """Hands out one client per pid, made on first use in that process."""

    def __init__(self, url: str, timeout: float, tls: Tls | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.tls = tls
        self._lock = threading.Lock()
        self._pid = -1
        self._client: redis.Redis | None = None

    def get(self) -> redis.Redis:
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    self._client = connect(self.url, self.timeout, tls=self.tls)
                    self._pid = pid
        return self._client

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None
