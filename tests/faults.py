"""Fault injection for the reliability tests: a TCP proxy that can cut or stall connections,
and a redis-server that can be killed, frozen and brought back on the same port."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import threading
from types import TracebackType

from tracestream.embedded_redis import EmbeddedRedis, free_port


class FaultyProxy:
    """Forwards 127.0.0.1:<port> to a target port, with faults on demand."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._up = True
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._closed:
                if not self._flowing.wait(0.05):
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                for sock in readable:
                    if not self._flowing.is_set():
                        break
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in peers:
                sock.close()

    def cut(self) -> None:
        """Reset every open connection, as a dying load balancer would."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    sock.shutdown(socket.SHUT_RDWR)

    def down(self) -> None:
        """Refuse service: open connections are reset, new ones closed at once."""
        self._up = False
        self.cut()

    def up(self) -> None:
        self._up = True

    def stall(self) -> None:
        """Keep connections open but forward nothing: requests time out."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def holds_requests(self) -> bool:
        """While stalled: whether a client has sent something that waits here for Redis."""
        with self._lock:
            clients = [client for client, _ in self._pairs if client.fileno() != -1]
        with contextlib.suppress(OSError, ValueError):  # a pair the pump closed meanwhile
            return bool(select.select(clients, [], [], 0)[0])
        return False

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self._listener.close()
        self.cut()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class DurableRedis(EmbeddedRedis):
    """fsyncs every write, so a `kill -9` loses nothing Redis acknowledged."""

    def __init__(self) -> None:
        super().__init__(extra_args=["--appendonly", "yes", "--appendfsync", "always"])

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)
