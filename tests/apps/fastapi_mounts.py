"""FastAPI's Sub Applications tutorial (a FastAPI app mounted in another), with the Static Files
tutorial's mount (serving STATIC_DIR), the Middleware tutorial's process-time header and the
Custom Response tutorial's StreamingResponse, plus a sub-app endpoint that fails, and a plain
Starlette app mounted as Starlette's routing docs mount one. `configure()` runs first, as under
the launcher.
"""

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracestream

tracestream.configure()

app = FastAPI()


@app.middleware("http")
async def add_process_time_header(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    start_time = time.perf_counter()
    response = await call_next(request)
    process_time = time.perf_counter() - start_time
    response.headers["X-Process-Time"] = str(process_time)
    return response


@app.get("/app")
def read_main() -> dict[str, str]:
    return {"message": "Hello World from main app"}


async def fake_video_streamer() -> AsyncIterator[bytes]:
    for _ in range(10):
        yield b"some fake video bytes"


@app.get("/stream")
async def main() -> StreamingResponse:
    return StreamingResponse(fake_video_streamer())


subapi = FastAPI()


@subapi.get("/sub")
def read_sub() -> dict[str, str]:
    return {"message": "Hello World from sub API"}


@subapi.get("/restock")
def restock() -> dict[str, str]:
    raise RuntimeError("warehouse unreachable")


async def legacy_user(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse(f"Hello, {request.path_params['username']}!")


app.mount("/subapi", subapi)
app.mount("/legacy", Starlette(routes=[Route("/users/{username}", legacy_user)]))
app.mount("/static", StaticFiles(directory=os.environ["STATIC_DIR"]), name="static")
