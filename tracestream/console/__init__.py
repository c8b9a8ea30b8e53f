"""The web console: live tail, search, trace view, services and stats, read-only.

Standalone with `tracestream console`; mountable into FastAPI (`tracestream.console.fastapi_mount`)
and Django (`tracestream.console.django_urls`). See docs/console.md.
"""

from tracestream.console.app import create_app
from tracestream.console.auth import ConsoleAuthError

__all__ = ["ConsoleAuthError", "create_app"]
