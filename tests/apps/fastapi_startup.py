"""The startup event of FastAPI's Lifespan Events tutorial ("Alternative Events"), with
`configure()` called in the handler when FASTAPI_DOCS_TRACESTREAM is set: the app runs the same
with and without tracestream. An item it never loaded fails, as the tutorial's code has it.
"""

import os

from fastapi import FastAPI

app = FastAPI()

items: dict[str, dict[str, str]] = {}


@app.on_event("startup")
async def startup_event() -> None:
    if os.environ.get("FASTAPI_DOCS_TRACESTREAM") == "1":
        import tracestream

        tracestream.configure()
    items["foo"] = {"name": "Fighters"}
    items["bar"] = {"name": "Tenders"}


@app.get("/items/{item_id}")
async def read_items(item_id: str) -> dict[str, str]:
    return items[item_id]
