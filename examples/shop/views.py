"""The shop's pages. `checkout` calls the inventory service, which enqueues a Celery task:
one request, one trace across Django, FastAPI and Celery."""

from __future__ import annotations

import logging
import os

import requests
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger("shop.views")


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("tracestream demo shop: try /checkout/1042/\n", content_type="text/plain")


def order(request: HttpRequest, order_id: int) -> JsonResponse:
    logger.info("showing order %d", order_id, extra={"order.id": order_id})
    return JsonResponse({"order_id": order_id, "pid": os.getpid()})


def checkout(request: HttpRequest, order_id: int) -> JsonResponse:
    logger.info("checkout of order %d started", order_id, extra={"order.id": order_id})
    reply = requests.post(
        f"{settings.INVENTORY_URL}/reservations/{order_id}", params={"sku": "BOOK-1"}, timeout=5
    )
    reply.raise_for_status()
    logger.info("stock reserved for order %d", order_id, extra={"task.id": reply.json()["task_id"]})
    return JsonResponse({"order_id": order_id, "reservation": reply.json()})


def broken(request: HttpRequest) -> HttpResponse:
    """A legacy table with a NOT NULL column, written without a value: an IntegrityError."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS legacy_order (id INTEGER PRIMARY KEY, customer TEXT NOT NULL)"
        )
        cursor.execute("INSERT INTO legacy_order (customer) VALUES (NULL)")
    return HttpResponse("unreachable")
