"""Quart's quickstart app, as written there, served as its docs say (`quart run`, or hypercorn):
tracestream writes no request record for it. With `QUART_DOCS_TRACESTREAM` set it calls
`configure()` first."""

import os

from quart import Quart

if os.environ.get("QUART_DOCS_TRACESTREAM"):
    import tracestream

    tracestream.configure()

app = Quart(__name__)


@app.route("/")
async def hello():  # type: ignore[no-untyped-def]
    return "hello"
