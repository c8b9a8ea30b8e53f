"""The inventory service (FastAPI, port 8001): reserves stock by enqueuing a Celery task.

opentelemetry-instrument uvicorn inventory:app --port 8001     (from examples/)
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from tasks import reserve_stock

app = FastAPI(title="inventory")
logger = logging.getLogger("inventory.api")


@app.post("/reservations/{order_id}")
def reserve(order_id: int, sku: str) -> dict[str, object]:
    logger.info("reserving %s for order %d", sku, order_id, extra={"order.id": order_id, "sku": sku})
    task = reserve_stock.delay(order_id, sku)
    return {"order_id": order_id, "sku": sku, "task_id": task.id}


@app.get("/stock/{sku}")
def stock(sku: str) -> dict[str, object]:
    return {"sku": sku, "available": 3}
