"""Litestar's hello-world app, as written in its docs: tracestream writes no request record for
it. With `LITESTAR_DOCS_TRACESTREAM` set it calls `configure()` first."""

import os

from litestar import Litestar, get

if os.environ.get("LITESTAR_DOCS_TRACESTREAM"):
    import tracestream

    tracestream.configure()


@get("/")
async def hello_world() -> str:
    return "Hello, world!"


app = Litestar([hello_world])
