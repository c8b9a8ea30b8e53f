"""A FastAPI app for the end-to-end tests, served by uvicorn in a subprocess.

`configure()` runs at import, after the app object exists (the harder order), so every
`uvicorn --workers N` child sets itself up. It enqueues to Celery when CELERY_BROKER_URL is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.requests import Request

app = FastAPI()
logger = logging.getLogger("shop.items")

import tracestream  # noqa: E402 - after the app on purpose: configure() must find apps made earlier

tracestream.configure()


@app.get("/items/{item_id}")
def read_item(item_id: int) -> dict[str, object]:
    logger.info("reading item %d", item_id, extra={"item.id": item_id})
    if item_id == 404:
        raise HTTPException(status_code=404, detail="no such item")
    return {"item_id": item_id, "pid": os.getpid()}


@app.get("/broken-stream")
def broken_stream() -> StreamingResponse:
    def chunks() -> Iterator[bytes]:
        yield b"first chunk"
        raise RuntimeError("camera disconnected")

    return StreamingResponse(chunks())


@app.get("/boom")
def boom() -> None:
    raise RuntimeError("kaboom")


class PaymentDeclined(Exception):
    """FastAPI's "Handling Errors" page: a custom exception and a handler of the app's own, here
    one that logs it and answers a 5xx itself."""


@app.exception_handler(PaymentDeclined)
async def payment_declined(request: Request, exc: PaymentDeclined) -> JSONResponse:
    logger.error("payment failed", exc_info=exc)
    return JSONResponse(status_code=502, content={"message": "the payment provider failed"})


@app.get("/pay/{order_id}")
def pay(order_id: int) -> None:
    raise PaymentDeclined(f"order {order_id}: the provider timed out")


@app.get("/stock/{sku}")
def stock(sku: str) -> None:
    """FastAPI's "Handling Errors" page, `raise HTTPException`, with a 5xx: logged by no one."""
    raise HTTPException(status_code=503, detail="the warehouse is unreachable")


@app.post("/orders/{order_id}")
def create_order(order_id: int) -> dict[str, str]:
    from tests.apps.celery_app import process_order

    result = process_order.delay(order_id)
    logger.info("order %d enqueued", order_id)
    return {"task_id": result.id}


@app.get("/traced-elsewhere")
def traced_elsewhere(response: Response) -> dict[str, str]:
    """FastAPI's Response Headers page, with a header our integration also sets."""
    response.headers["X-Trace-Id"] = "the app's own"
    return {"message": "Hello World"}


def plain_greeting(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.path_params['name']}")


app.add_route("/plain/{name}", plain_greeting)  # a Starlette route: FastAPI does not name it in the scope
