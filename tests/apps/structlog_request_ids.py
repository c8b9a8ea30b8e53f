"""structlog's docs, as written there: "Standard Library Logging", *Rendering Using
structlog-based Formatters Within logging* (`shared_processors`, `foreign_pre_chain`), and the
"Context Variables" page's middleware that binds a request id for every line of a request."""

import logging

import structlog
from fastapi import FastAPI, Request

timestamper = structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S")
shared_processors = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    timestamper,
]
structlog.configure(
    processors=[*shared_processors, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
    logger_factory=structlog.stdlib.LoggerFactory(),
    cache_logger_on_first_use=True,
)
formatter = structlog.stdlib.ProcessorFormatter(
    foreign_pre_chain=shared_processors,
    processors=[
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.dev.ConsoleRenderer(colors=False),
    ],
)
handler = logging.StreamHandler()
handler.setFormatter(formatter)
root_logger = logging.getLogger()
root_logger.addHandler(handler)
root_logger.setLevel(logging.INFO)

log = structlog.get_logger("shop")
stdlib_log = logging.getLogger("shop.legacy")
app = FastAPI()


@app.middleware("http")
async def bind_request_id(request: Request, call_next):  # type: ignore[no-untyped-def]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request.headers.get("x-request-id", "none"))
    return await call_next(request)


@app.get("/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@app.get("/orders/{order_id}")
async def order(order_id: int) -> dict[str, int]:
    log.info("order viewed", order_id=order_id)
    stdlib_log.warning("order %d is late", order_id)
    return {"order_id": order_id}
