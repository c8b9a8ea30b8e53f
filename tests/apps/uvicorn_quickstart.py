"""uvicorn's Quickstart app, as written there: a plain ASGI callable, no framework; with
`UVICORN_QUICKSTART_TRACESTREAM` set it calls `configure()` first."""

import os

if os.environ.get("UVICORN_QUICKSTART_TRACESTREAM"):
    import tracestream

    tracestream.configure()


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    assert scope["type"] == "http"

    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                [b"content-type", b"text/plain"],
            ],
        }
    )
    await send(
        {
            "type": "http.response.body",
            "body": b"Hello, world!",
        }
    )
