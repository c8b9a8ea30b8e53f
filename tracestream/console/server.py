"""Running the standalone console under uvicorn, refusing to expose it without a token."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

import uvicorn

from tracestream.console.address import WILDCARD_ADDRESSES
from tracestream.console.app import Console, create_app
from tracestream.console.auth import require_token_off_loopback
from tracestream.settings import CONSOLE_ALLOWED_HOSTS_ENV, CONSOLE_TOKEN_ENV, Settings


def allowed_hosts(bind: str, extra: Sequence[str] = ()) -> list[str]:
    """Host names the console answers to besides loopback: `extra`, `TRACESTREAM_CONSOLE_ALLOWED_HOSTS`
    (comma-separated) and the address it binds, unless that is a wildcard."""
    configured = [*extra, *os.environ.get(CONSOLE_ALLOWED_HOSTS_ENV, "").split(",")]
    bound = [] if bind in WILDCARD_ADDRESSES else [f"[{bind}]" if ":" in bind else bind]
    return [host.strip() for host in [*configured, *bound] if host.strip()]


class ConsoleBindError(OSError):
    """The console cannot listen where it was asked to: the address in use, or not this machine's."""


def listen(host: str, port: int) -> socket.socket:
    """The console's socket, bound before anything says where it serves."""
    listening: socket.socket | None = None
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
    except OSError as error:
        if listening is not None:
            listening.close()
        raise ConsoleBindError(f"cannot listen on {host} port {port}: {error.strerror or error}") from None
    return listening


def serve(settings: Settings, listening: socket.socket, host: str, hosts: Sequence[str] = ()) -> int:
    """Serves on `listening`, bound to `host` as given, until interrupted; the exit status, 130
    after Ctrl-C. Raises ConsoleAuthError before serving when a token is missing.

    `hosts` are names the console may be reached by besides loopback (`--allowed-host`).
    """
    token = os.environ.get(CONSOLE_TOKEN_ENV, "").strip() or None
    require_token_off_loopback(host, token)
    app = create_app(settings, token=token, allowed_hosts=allowed_hosts(host, hosts))
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    server = _Server(config, app)
    try:
        server.run(sockets=[listening])
    except KeyboardInterrupt:  # Ctrl-C is how one stops it: uvicorn shut down, then raised it again
        return 130
    return 0


class _Server(uvicorn.Server):
    """Ends the live streams as shutdown begins: open viewers would otherwise hold it up until
    uvicorn cancels them, each with a traceback."""

    def __init__(self, config: uvicorn.Config, console: Console) -> None:
        super().__init__(config)
        self._console = console

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._console.end_streams()
        await super().shutdown(sockets)
