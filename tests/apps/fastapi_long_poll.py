"""A long poll, as a notification endpoint waits for news: FastAPI's "First Steps" app with an
`async def` path operation that sleeps. No tracestream code: run under the launcher."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

app = FastAPI()
logger = logging.getLogger(__name__)


@app.get("/")
async def root() -> dict[str, str]:
    return {"message": "Hello World"}


@app.get("/updates")
async def updates() -> dict[str, list[str]]:
    logger.warning("waiting for updates")
    await asyncio.sleep(30)
    return {"updates": []}


async def fake_video_streamer():  # type: ignore[no-untyped-def]  # FastAPI's docs, "Custom Response"
    for _ in range(300):
        yield b"some fake video bytes"
        await asyncio.sleep(0.1)


@app.get("/video")
async def video() -> StreamingResponse:
    return StreamingResponse(fake_video_streamer())
