"""Two FastAPI services in a call chain, with no tracestream code: `front` calls `back` over httpx.

Served under the launcher, each in its own uvicorn (`tests.apps.sampled_chain:front` with
BACK_URL set, and `tests.apps.sampled_chain:back`). Each request logs one INFO and one WARN
line per service; `/fail` logs an INFO line, calls `back`, then fails with a 500.
"""

from __future__ import annotations

import logging
import os

import httpx
from fastapi import FastAPI

logger = logging.getLogger("sampled_chain")
front = FastAPI()
back = FastAPI()


def _call_back() -> None:
    httpx.get(f"{os.environ['BACK_URL']}/work").raise_for_status()


@front.get("/work")
def front_work() -> dict[str, str]:
    logger.info("front info")
    logger.warning("front warn")
    _call_back()
    return {"ok": "front"}


@front.get("/fail")
def front_fail() -> dict[str, str]:
    logger.info("front info before the failure")
    _call_back()
    raise RuntimeError("front failed")


@back.get("/work")
def back_work() -> dict[str, str]:
    logger.info("back info")
    logger.warning("back warn")
    return {"ok": "back"}
