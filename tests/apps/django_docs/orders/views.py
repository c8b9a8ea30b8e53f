import logging

import httpx
from django.conf import settings
from django.http import HttpRequest, JsonResponse

from orders.tasks import ship_order

logger = logging.getLogger(__name__)


def show(request: HttpRequest, order_id: int) -> JsonResponse:
    logger.warning("showing order %d", order_id)
    return JsonResponse({"order_id": order_id})


def ship(request: HttpRequest, order_id: int) -> JsonResponse:
    """Logs, asks the inventory service, and enqueues the shipping task."""
    logger.warning("shipping order %d", order_id)
    stock = httpx.get(f"{settings.INVENTORY_URL}/items/{order_id}").json()
    task = ship_order.delay(order_id)
    return JsonResponse({"order_id": order_id, "stock": stock, "task_id": task.id})


def pay(request: HttpRequest, order_id: int) -> JsonResponse:
    logger.info("paying order %d", order_id)
    raise RuntimeError(f"order {order_id}: card declined")
