"""Where the console listens by default; apart from the server so the CLI reads it without Starlette."""

from __future__ import annotations

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "WILDCARD_ADDRESSES"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8686
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
