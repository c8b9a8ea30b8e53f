"""FastAPI's WebSockets tutorial ("Using Depends and others"), as the docs give it: the
endpoint does not catch `WebSocketDisconnect`, so a client closing the socket ends the
session in an exception the server logs. `configure()` runs when FASTAPI_DOCS_TRACESTREAM
is set, so the app runs the same with and without tracestream.
"""

import os
from typing import Annotated

from fastapi import Cookie, Depends, FastAPI, Query, WebSocket, WebSocketException, status

app = FastAPI()


async def get_cookie_or_token(
    websocket: WebSocket,
    session: Annotated[str | None, Cookie()] = None,
    token: Annotated[str | None, Query()] = None,
) -> str:
    if session is None and token is None:
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION)
    return session or token  # type: ignore[return-value]


@app.websocket("/items/{item_id}/ws")
async def websocket_endpoint(
    *,
    websocket: WebSocket,
    item_id: str,
    q: int | None = None,
    cookie_or_token: Annotated[str, Depends(get_cookie_or_token)],
) -> None:
    await websocket.accept()
    while True:
        data = await websocket.receive_text()
        await websocket.send_text(f"Session cookie or query token value is: {cookie_or_token}")
        if q is not None:
            await websocket.send_text(f"Query parameter q is: {q}")
        await websocket.send_text(f"Message text was: {data}, for item ID: {item_id}")


if os.environ.get("FASTAPI_DOCS_TRACESTREAM") == "1":
    import tracestream

    tracestream.configure()
