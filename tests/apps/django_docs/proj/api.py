"""django-ninja's tutorial API ("Tutorial - First Steps", path parameters), mounted as its
docs mount it: `path("api/", api.urls)`. Its default exception handler, with DEBUG on as the
tutorial runs, logs an exception and answers 500 itself: Django never sees the exception.
An `HttpError` (its "Handling errors" page) is answered with its status and logged by no one."""

from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.errors import HttpError

api = NinjaAPI()


@api.get("/hello")
def hello(request: HttpRequest, name: str = "world") -> str:
    return f"Hello {name}"


@api.get("/items/{item_id}")
def read_item(request: HttpRequest, item_id: int) -> dict[str, int]:
    return {"item_id": item_id, "per_unit": 100 // (item_id - 7)}  # item 7 fails


@api.get("/users/{username}/avatar")
def avatar(request: HttpRequest, username: str) -> str:
    raise HttpError(503, "Service Unavailable. Please retry later.")
