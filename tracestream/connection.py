"""Redis clients made per process, so a forked worker never shares its parent's socket."""

from __future__ import annotations

import os
import threading

import redis


def connect(url: str, timeout: float, *, decode: bool = False) -> redis.Redis:
    """A client with timeouts on every socket operation: a hung Redis must never hang us."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=decode,
    )


class ProcessLocalClient:
    """Hands out one client per pid, made on first use in that process."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pid = -1
        self._client: redis.Redis | None = None

    def get(self) -> redis.Redis:
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    self._client = connect(self.url, self.timeout)
                    self._pid = pid
        return self._client

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None
