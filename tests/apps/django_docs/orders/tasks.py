from celery import shared_task
from celery.utils.log import get_task_logger

logger = get_task_logger(__name__)


@shared_task
def ship_order(order_id: int) -> int:
    logger.info("order %d shipped", order_id)
    return order_id
