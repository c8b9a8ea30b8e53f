"""A Celery app for the end-to-end tests: prefork, one task per child, broker from CELERY_BROKER_URL.

CELERY_MAX_TASKS_PER_CHILD=0 keeps children alive across tasks (for the shutdown tests).
CELERY_RESULT_BACKEND stores results (none by default); CELERY_BEAT_EVERY gives `celery beat` an
entry that sends a task every so many seconds.

With CONFIGURE_IN_CHILD=1 it is the documented non-launcher path: each prefork child
calls `configure()` from `worker_process_init`.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from celery.signals import worker_process_init

app = Celery(
    "tests",
    broker=os.environ.get("CELERY_BROKER_URL", "memory://"),
    backend=os.environ.get("CELERY_RESULT_BACKEND"),
)
app.conf.update(
    worker_max_tasks_per_child=int(os.environ.get("CELERY_MAX_TASKS_PER_CHILD", "1")) or None,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
logger = logging.getLogger("shop.worker")

if os.environ.get("CELERY_BEAT_EVERY"):  # Celery's "Periodic Tasks" guide, every so many seconds
    app.conf.beat_schedule = {
        "process-order-every-moment": {
            "task": "tests.process_order",
            "schedule": float(os.environ["CELERY_BEAT_EVERY"]),
            "args": (16,),
        },
    }

if os.environ.get("CONFIGURE_IN_CHILD") == "1":

    @worker_process_init.connect(weak=False)
    def configure_child(**_: Any) -> None:
        import tracestream

        tracestream.configure()


@app.task(name="tests.process_order")
def process_order(order_id: int) -> int:
    logger.info("processing order %d", order_id, extra={"order.id": order_id})
    return order_id * 2


@app.task(name="tests.fail")
def fail(order_id: int) -> None:
    raise ValueError(f"order {order_id} is broken")


@app.task(name="tests.flaky", bind=True, max_retries=1)
def flaky(self: Task, order_id: int) -> int:
    if self.request.retries == 0:
        raise self.retry(countdown=0, exc=TimeoutError(f"order {order_id}: supplier timed out"))
    return order_id


@app.task(name="tests.slow_to_let_go", bind=True, max_retries=1)
def slow_to_let_go(self: Task, order_id: int) -> int:
    """Enqueues its retry (`throw=False`, as Celery's docs allow), then takes a second to end:
    on a threads pool the retry runs meanwhile."""
    if self.request.retries == 0:
        retry = self.retry(
            countdown=0, exc=TimeoutError(f"order {order_id}: supplier timed out"), throw=False
        )
        time.sleep(1)
        raise retry
    return order_id


@app.task(name="tests.overrun", time_limit=1)
def overrun(order_id: int) -> None:
    """Killed at its hard time limit: its end is recorded by the worker's main process."""
    logger.warning("order %d: starting a long job", order_id)
    time.sleep(5)


@app.task(name="tests.chatty_overrun", time_limit=1)
def chatty_overrun(order_id: int) -> None:
    """Logs a line a millisecond until its hard time limit kills it."""
    for step in itertools.count():
        logger.info("order %d: step %d", order_id, step)
        time.sleep(0.001)


@app.task(name="tests.hurried", soft_time_limit=1)
def hurried(order_id: int) -> str:
    """Celery's docs' soft time limit: the task catches it and cleans up in a hurry."""
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        logger.warning("order %d: cleaning up in a hurry", order_id)
    return "cleaned up"


@app.task(name="tests.lost")
def lost(order_id: int) -> None:
    """Its process dies under it (as the OOM killer would do): also an end in the main process."""
    logger.warning("order %d: using too much memory", order_id)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="tests.skipped")
def skipped(order_id: int) -> None:
    """Celery's tasks guide: `Ignore` ends a task with no state recorded, the message acknowledged."""
    logger.warning("order %d: handled elsewhere", order_id)
    raise Ignore()


@app.task(name="tests.long_job")
def long_job(order_id: int) -> None:
    """Still running when the worker is stopped."""
    logger.warning("order %d: starting a long job", order_id)
    time.sleep(30)
