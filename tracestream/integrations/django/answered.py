"""Exceptions Django REST framework and django-ninja answer with a 5xx themselves.

Their handlers turn an exception into a response inside the view (DRF's `APIException` and
its subclasses, ninja's `HttpError`), log nothing, and return it: Django, our middleware and
the server see a 5xx with no cause. Each handler is wrapped as its module is imported; a 5xx it
answers notes its exception for the request's record, as an ASGI exception handler's is. A
module our install ran inside of (an import cycle: Django's system checks load the URLconf,
which imports django-ninja, which imports Django's handlers) is wrapped once Django builds a
handler's middleware, before any request.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import wrapt

from tracestream._internal_log import internal_logger
from tracestream.integrations.http_records import note_answered_error

__all__ = ["install"]

# (module, handler, where the handler takes its exception: (position, keyword))
_HANDLERS = (
    ("rest_framework.views", "APIView.handle_exception", (0, "exc")),
    ("ninja.main", "NinjaAPI.on_exception", (1, "exc")),
)


_unfinished: list[Callable[[], None]] = []  # wrappings of modules still being imported


def install() -> None:
    for module, handler, argument in _HANDLERS:
        wrapt.register_post_import_hook(_wrapping(handler, argument), module)


def wrap_unfinished() -> None:
    """Before a handler serves: the modules whose import our install interrupted are done."""
    waiting = list(_unfinished)
    _unfinished.clear()
    for wrap in waiting:
        wrap()  # one still unfinished waits for the next handler


def _wrapping(handler: str, argument: tuple[int, str]) -> Callable[[ModuleType], None]:
    position, keyword = argument
    owner = handler.partition(".")[0]

    def noting_a_5xx(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        response = wrapped(*args, **kwargs)
        status = getattr(response, "status_code", None)
        if isinstance(status, int) and status >= 500:
            error = args[position] if len(args) > position else kwargs.get(keyword)
            if isinstance(error, BaseException):
                note_answered_error(error)
        return response

    def wrap(module: ModuleType) -> None:
        if not hasattr(module, owner):
            _unfinished.append(lambda: wrap(module))
            return
        try:
            wrapt.wrap_function_wrapper(module, handler, noting_a_5xx)
        except Exception as error:  # a version without the handler: the app's import goes on
            internal_logger.warning(
                "5xx answers of %s.%s carry no exception: %r", module.__name__, handler, error
            )

    return wrap
