"""Exceptions Django REST framework and django-ninja answer with a 5xx themselves.

Their handlers turn an exception into a response inside the view (DRF's `APIException` and
its subclasses, ninja's `HttpError`), log nothing, and return it: Django, our middleware and
the server see a 5xx with no cause. What looks a view's handler up is wrapped as its module is
imported, so the handler it returns notes the exception of a 5xx it answers for the request's
record, as an ASGI exception handler's is. An exception no handler answers is raised after the
handler returned, so its traceback (the terminal's, the 500 page's, the admins' email) holds no
frame of ours. A module our install ran inside of (an import cycle: Django's system checks load
the URLconf, which imports django-ninja, which imports Django's handlers) is wrapped once
Django builds a handler's middleware, before any request.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

import wrapt

from tracestream._internal_log import internal_logger
from tracestream.integrations.http_records import note_answered_error

__all__ = ["install"]

# (module, what returns a view's exception handler, where that handler takes its exception: position, keyword)
_LOOKUPS = (
    ("rest_framework.views", "APIView.get_exception_handler", (0, "exc")),
    ("ninja.main", "NinjaAPI._lookup_exception_handler", (1, "exc")),
)


_unfinished: list[Callable[[], None]] = []  # wrappings of modules still being imported


def install() -> None:
    for module, lookup, argument in _LOOKUPS:
        wrapt.register_post_import_hook(_wrapping(lookup, argument), module)


def wrap_unfinished() -> None:
    """Before a handler serves: the modules whose import our install interrupted are done."""
    waiting = list(_unfinished)
    _unfinished.clear()
    for wrap in waiting:
        wrap()  # one still unfinished waits for the next handler


def _wrapping(lookup: str, argument: tuple[int, str]) -> Callable[[ModuleType], None]:
    owner = lookup.partition(".")[0]

    def handler_noting_a_5xx(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        handler = wrapped(*args, **kwargs)
        return None if handler is None else partial(_noting_a_5xx, handler, argument)

    def wrap(module: ModuleType) -> None:
        if not hasattr(module, owner):
            _unfinished.append(lambda: wrap(module))
            return
        try:
            wrapt.wrap_function_wrapper(module, lookup, handler_noting_a_5xx)
        except Exception as error:  # a version without the lookup: the app's import goes on
            internal_logger.warning(
                "5xx answers of %s.%s carry no exception: %r", module.__name__, lookup, error
            )

    return wrap


def _noting_a_5xx(handler: Callable[..., Any], argument: tuple[int, str], *args: Any, **kwargs: Any) -> Any:
    response = handler(*args, **kwargs)
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and status >= 500:
        position, keyword = argument
        error = args[position] if len(args) > position else kwargs.get(keyword)
        if isinstance(error, BaseException):
            note_answered_error(error)
    return response
