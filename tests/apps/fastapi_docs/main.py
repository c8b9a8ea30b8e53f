"""The tutorial's main module; `configure()` runs here when FASTAPI_DOCS_TRACESTREAM is set.

The same app runs with and without tracestream, so its terminal output can be compared.
"""

import os

from fastapi import Depends, FastAPI

from .dependencies import get_query_token, get_token_header
from .internal import admin
from .routers import items, users

app = FastAPI(dependencies=[Depends(get_query_token)])


app.include_router(users.router)
app.include_router(items.router)
app.include_router(
    admin.router,
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(get_token_header)],
    responses={418: {"description": "I'm a teapot"}},
)


@app.get("/")
async def root() -> dict[str, str]:
    return {"message": "Hello Bigger Applications!"}


if os.environ.get("FASTAPI_DOCS_TRACESTREAM") == "1":
    import tracestream

    tracestream.configure()
