"""A Starlette app put together from Starlette's own docs: the lifespan page's lifespan (which
calls `configure()` when STARLETTE_DOCS_TRACESTREAM is set, so the app runs the same with and
without tracestream), the routing page's path parameters and `Mount`, the middleware page's
`CORSMiddleware`, the exceptions page's 404 and 500 handlers (the 500 one with its status
written out: an unhandled exception has no `status_code`), and the responses page's
`StreamingResponse`. Beside them: a line logged per user, and an endpoint that fails.
"""

import asyncio
import contextlib
import logging
import os

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

logger = logging.getLogger(__name__)

HTML_404_PAGE = "<h1>Not here</h1>"
HTML_500_PAGE = "<h1>Something broke</h1>"


@contextlib.asynccontextmanager
async def lifespan(app):  # type: ignore[no-untyped-def]
    if os.environ.get("STARLETTE_DOCS_TRACESTREAM") == "1":
        import tracestream

        tracestream.configure()
    print("Run at startup!")
    yield
    print("Run on shutdown!")


def user_me(request):  # type: ignore[no-untyped-def]
    username = "John Doe"
    return PlainTextResponse(f"Hello, {username}!")


def user(request):  # type: ignore[no-untyped-def]
    username = request.path_params["username"]
    logger.warning("looked up %s", username)
    return PlainTextResponse(f"Hello, {username}!")


async def checkout(request):  # type: ignore[no-untyped-def]
    raise RuntimeError("payment service down")


async def slow_numbers(minimum, maximum):  # type: ignore[no-untyped-def]
    yield "<html><body><ul>"
    for number in range(minimum, maximum + 1):
        yield f"<li>{number}</li>"
        await asyncio.sleep(0.01)
    yield "</ul></body></html>"


async def numbers(request):  # type: ignore[no-untyped-def]
    generator = slow_numbers(1, 3)
    return StreamingResponse(generator, media_type="text/html")


async def not_found(request: Request, exc: HTTPException):  # type: ignore[no-untyped-def]
    return HTMLResponse(content=HTML_404_PAGE, status_code=exc.status_code)


async def server_error(request: Request, exc: HTTPException):  # type: ignore[no-untyped-def]
    return HTMLResponse(content=HTML_500_PAGE, status_code=500)


exception_handlers = {404: not_found, 500: server_error}

routes = [
    Route("/checkout", checkout),
    Route("/numbers", numbers),
    Mount(
        "/users",
        routes=[
            Route("/me", user_me),
            Route("/{username}", user),
        ],
    ),
]

middleware = [Middleware(CORSMiddleware, allow_origins=["*"])]

app = Starlette(
    routes=routes, middleware=middleware, exception_handlers=exception_handlers, lifespan=lifespan
)
