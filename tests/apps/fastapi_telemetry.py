"""A health check kept out of telemetry the way FastAPI 0.142+ offers, `FastAPI(telemetry=...)`'s
`exclude`, beside a route that is traced; `configure()` first, as under the launcher.
"""

from fastapi import FastAPI

import tracestream

tracestream.configure()

app = FastAPI(telemetry={"exclude": lambda scope: scope["path"] == "/health"})


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}
