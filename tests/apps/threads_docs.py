"""FastAPI's "First Steps" app whose endpoints hand work to other threads as Python's docs show:
the concurrent.futures docs' ThreadPoolExecutor example (pointed at this app's own `/pages/{n}`
rather than the web), asyncio's `loop.run_in_executor`, and a `threading.Thread` that fails.
`configure()` runs at the top when THREADS_DOCS_TRACESTREAM is set, where FastAPI's docs put
an app's setup, so the app runs the same with and without tracestream; with THREADS_DOCS_SENTRY
set, Sentry's own setup comes first, as an app that had Sentry before tracestream has it (no DSN:
its threading integration is installed all the same).
"""

import asyncio
import concurrent.futures
import logging
import os
import threading
import urllib.request

from fastapi import FastAPI

if os.environ.get("THREADS_DOCS_SENTRY") == "1":  # Sentry's FastAPI docs' setup, made before ours
    import sentry_sdk

    sentry_sdk.init(send_default_pii=True, traces_sample_rate=1.0)

if os.environ.get("THREADS_DOCS_TRACESTREAM") == "1":
    import tracestream

    tracestream.configure()

logger = logging.getLogger(__name__)
app = FastAPI()


def load_url(url, timeout):  # type: ignore[no-untyped-def]
    logger.warning("loading page %s", url.rsplit("/", 1)[1])
    with urllib.request.urlopen(url, timeout=timeout) as conn:
        return conn.read()


def urls(port):  # type: ignore[no-untyped-def]
    return [f"http://127.0.0.1:{port}/pages/{n}" for n in range(2)]


@app.get("/pages/{n}")
def page(n: int):  # type: ignore[no-untyped-def]
    logger.warning("page %d served", n)
    return {"page": n}


@app.get("/fetch")
def fetch(port: int):  # type: ignore[no-untyped-def]
    # The concurrent.futures docs' ThreadPoolExecutor example.
    sizes = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as executor:
        future_to_url = {executor.submit(load_url, url, 60): url for url in urls(port)}
        for future in concurrent.futures.as_completed(future_to_url):
            sizes[future_to_url[future]] = len(future.result())
    return sizes


@app.get("/fetch-async")
async def fetch_async(port: int):  # type: ignore[no-untyped-def]
    # asyncio's "Executing code in thread or process pools", with the default executor.
    loop = asyncio.get_running_loop()
    pages = await asyncio.gather(*(loop.run_in_executor(None, load_url, url, 60) for url in urls(port)))
    return [len(page) for page in pages]


def sync_orders():  # type: ignore[no-untyped-def]
    logger.warning("syncing orders")
    raise ValueError("order 7 has no customer")


@app.get("/sync")
def sync():  # type: ignore[no-untyped-def]
    thread = threading.Thread(target=sync_orders, name="order-sync")
    thread.start()
    thread.join()
    return {"started": thread.name}
