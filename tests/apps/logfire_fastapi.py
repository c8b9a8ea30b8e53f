"""Pydantic Logfire's FastAPI page (its minimal example), its logging page (the `basicConfig`
recipe) and its README's manual tracing (`logfire.info`, `logfire.span`), printing to the console
only (`send_to_logfire=False`). `LOGFIRE_APP_CONFIGURE=before` or `after` calls
`tracestream.configure()` before or after `logfire.configure()`; unset, the app is Logfire's alone
(or the launcher's)."""

import os
from logging import basicConfig, getLogger

if os.environ.get("LOGFIRE_APP_CONFIGURE") == "before":
    import tracestream

    tracestream.configure(service_name="lfapp")

import logfire
from fastapi import FastAPI

app = FastAPI()

logfire.configure(send_to_logfire=False, service_name="lfapp")
logfire.instrument_fastapi(app)
basicConfig(handlers=[logfire.LogfireLoggingHandler()])

if os.environ.get("LOGFIRE_APP_CONFIGURE") == "after":
    import tracestream

    tracestream.configure(service_name="lfapp")

logger = getLogger(__name__)


@app.get("/hello")
async def hello(name: str) -> dict[str, str]:
    with logfire.span("Greeting {name}", name=name):
        logfire.info("inside span {n}", n=1)
        logger.warning("stdlib warning in request for %s", name)
    return {"message": f"hello {name}"}
