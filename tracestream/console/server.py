"""Running the standalone console under uvicorn, refusing to expose it without a token."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Sequence

import uvicorn

from tracestream.console.address import DEFAULT_HOST, DEFAULT_PORT, WILDCARD_ADDRESSES
from tracestream.console.app import Console, create_app
from tracestream.console.auth import require_token_off_loopback
from tracestream.settings import CONSOLE_ALLOWED_HOSTS_ENV, CONSOLE_TOKEN_ENV, Settings


def allowed_hosts(bind: str, extra: Sequence[str] = ()) -> list[str]:
    """Host names the console answers to besides loopback: `extra`, `TRACESTREAM_CONSOLE_ALLOWED_HOSTS`
    (comma-separated) and the address it binds, unless that is a wildcard."""
    configured = [*extra, *os.environ.get(CONSOLE_ALLOWED_HOSTS_ENV, "").split(",")]
    bound = [] if bind in WILDCARD_ADDRESSES else [f"[{bind}]" if ":" in bind else bind]
    return [host.strip() for host in [*configured, *bound] if host.strip()]


def serve(
    settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, hosts: Sequence[str] = ()
) -> None:
    """Blocks until interrupted. Raises ConsoleAuthError before binding when a token is missing.

    `hosts` are names the console may be reached by besides loopback (`--allowed-host`).
    """
    token = os.environ.get(CONSOLE_TOKEN_ENV, "").strip() or None
    require_token_off_loopback(host, token)
    app = create_app(settings, token=token, allowed_hosts=allowed_hosts(host, hosts))
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=2
    )
    server = _Server(config, app)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it
        server.run()
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: the app did not start, and uvicorn said why


class _Server(uvicorn.Server):
    """Ends the live streams as shutdown begins: open viewers would otherwise hold it up until
    uvicorn cancels them, each with a traceback."""

    def __init__(self, config: uvicorn.Config, console: Console) -> None:
        super().__init__(config)
        self._console = console

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._console.end_streams()
        await super().shutdown(sockets)
