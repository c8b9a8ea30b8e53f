"""A FastAPI app that hands slow work to a thread pool and answers at once, as the
`concurrent.futures` docs' executor is used: the mail goes out MAIL_SERVER_DELAY seconds later,
and Python's exit waits for it (the pool's workers are joined before `atexit`)."""

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI

import tracestream

app = FastAPI()
mailer = ThreadPoolExecutor(max_workers=2)
logger = logging.getLogger("shop.mail")
tracestream.configure()


def send_mail(order: int) -> None:
    time.sleep(float(os.environ.get("MAIL_SERVER_DELAY", "0")))
    logger.info("mail sent for order %d", order)


@app.post("/orders/{order}")
def place_order(order: int) -> dict[str, int]:
    logger.info("order %d placed", order, extra={"order.id": order})
    mailer.submit(send_mail, order)
    return {"order": order, "pid": os.getpid()}
