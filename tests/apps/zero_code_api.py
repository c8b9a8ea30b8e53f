"""A FastAPI app as its docs write it ("First Steps"), with a logger: no tracestream code at all.

Served under `opentelemetry-instrument uvicorn tests.apps.zero_code_api:app`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

logger = logging.getLogger(__name__)
app = FastAPI()


@app.get("/")
async def root() -> dict[str, str]:
    logger.warning("hello from the api")
    return {"message": "Hello World"}
