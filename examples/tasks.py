"""The demo's Celery app: a worker and beat on the same Redis (broker db from CELERY_BROKER_URL).

opentelemetry-instrument celery -A tasks worker      (from examples/)
opentelemetry-instrument celery -A tasks beat
"""

from __future__ import annotations

import logging
import os
import time

from celery import Celery

app = Celery("tasks", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_max_tasks_per_child=100,
    beat_schedule={"sweep-reservations": {"task": "tasks.sweep_reservations", "schedule": 20.0}},
    beat_schedule_filename=os.environ.get("CELERY_BEAT_SCHEDULE", "celerybeat-schedule"),
)
logger = logging.getLogger("inventory.tasks")


@app.task(name="tasks.reserve_stock")
def reserve_stock(order_id: int, sku: str) -> str:
    logger.info("reserving %s for order %d in the warehouse", sku, order_id, extra={"order.id": order_id})
    time.sleep(0.02)
    logger.warning("only %d left of %s", 2, sku, extra={"sku": sku})
    return f"{sku}:{order_id}"


@app.task(name="tasks.sweep_reservations")
def sweep_reservations() -> int:
    logger.info("swept expired reservations")
    return 0
