import asyncio
import csv
import logging
import time
from collections.abc import AsyncIterator

import httpx
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse

from orders.tasks import ship_order

logger = logging.getLogger(__name__)


def show(request: HttpRequest, order_id: int) -> JsonResponse:
    logger.warning("showing order %d", order_id)
    return JsonResponse({"order_id": order_id})


def traced_elsewhere(request: HttpRequest, order_id: int) -> JsonResponse:
    """Setting header fields, as Django's request/response docs show, with one ours sets too."""
    response = JsonResponse({"order_id": order_id})
    response["X-Trace-Id"] = "the app's own"
    return response


def wait(request: HttpRequest, order_id: int) -> JsonResponse:
    """Slower than a worker may take: gunicorn's arbiter aborts it (`--timeout`), or a server
    stopping abandons it."""
    logger.warning("waiting on order %s", order_id)
    time.sleep(30)
    return JsonResponse({"order_id": order_id})


async def prepare(request: HttpRequest, order_id: int) -> JsonResponse:
    """Django's docs on handling disconnects: a long async view, cancelled if its client leaves."""
    logger.warning("preparing order %d", order_id)
    try:
        await asyncio.sleep(3)
    except asyncio.CancelledError:
        logger.warning("order %d: no longer awaited", order_id)
        raise
    return JsonResponse({"order_id": order_id})


def cancel(request: HttpRequest, order_id: int) -> JsonResponse:
    """Django's docs on PermissionDenied: raised in a view, answered with a 403."""
    raise PermissionDenied(f"order {order_id} is not yours to cancel")


def ship(request: HttpRequest, order_id: int) -> JsonResponse:
    """Logs, asks the inventory service, and enqueues the shipping task."""
    logger.warning("shipping order %d", order_id)
    stock = httpx.get(f"{settings.INVENTORY_URL}/items/{order_id}").json()
    task = ship_order.delay(order_id)
    return JsonResponse({"order_id": order_id, "stock": stock, "task_id": task.id})


def pay(request: HttpRequest, order_id: int) -> JsonResponse:
    logger.info("paying order %d", order_id)
    raise RuntimeError(f"order {order_id}: card declined")


class Echo:
    """An object that implements just the write method of the file-like interface."""

    def write(self, value: str) -> str:
        """Write the value by returning it, instead of storing in a buffer."""
        return value


def export(request: HttpRequest, order_id: int) -> StreamingHttpResponse:
    """The Django docs' "Streaming large CSV files" example, over an order's lines."""
    rows = (_order_line(order_id, idx) for idx in range(1000))
    pseudo_buffer = Echo()
    writer = csv.writer(pseudo_buffer)
    return StreamingHttpResponse(
        (writer.writerow(row) for row in rows),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="order-{order_id}.csv"'},
    )


async def export_async(request: HttpRequest, order_id: int) -> StreamingHttpResponse:
    """The same over an async iterator, as Django's docs advise for streaming under ASGI."""
    writer = csv.writer(Echo())

    async def lines() -> AsyncIterator[str]:
        for idx in range(1000):
            yield writer.writerow(_order_line(order_id, idx))

    return StreamingHttpResponse(
        lines(),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="order-{order_id}.csv"'},
    )


async def track(request: HttpRequest, order_id: int) -> StreamingHttpResponse:
    """The order's position as it moves, one event a tenth of a second (server-sent events over
    an async iterator, as Django's docs stream under ASGI)."""

    async def positions() -> AsyncIterator[str]:
        for step in range(600):
            yield f"data: order {order_id} at step {step}\n\n"
            await asyncio.sleep(0.1)

    return StreamingHttpResponse(positions(), content_type="text/event-stream")


def _order_line(order_id: int, idx: int) -> list[str]:
    if order_id == 13 and idx == 500:
        raise RuntimeError(f"order {order_id}: line {idx} is unreadable")
    if idx == 999:
        logger.info("order %d: last line exported", order_id)
    return [f"Row {idx}", str(idx)]
