"""Running the standalone console under uvicorn, refusing to expose it without a token."""

from __future__ import annotations

import os

import uvicorn

from tracestream.console.app import create_app
from tracestream.console.auth import TOKEN_ENV, require_token_off_loopback
from tracestream.otel_setup.settings import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8686


def serve(settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Blocks until interrupted. Raises ConsoleAuthError before binding when a token is missing."""
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    require_token_off_loopback(host, token)
    app = create_app(settings, token=token)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
