"""Exceptions Django REST framework and django-ninja answer with a 5xx themselves.

Their handlers turn an exception into a response inside the view (DRF's `APIException` and
its subclasses, ninja's `HttpError`), log nothing, and return it: Django, our middleware and
the server see a 5xx with no cause. What looks a view's handler up is wrapped as its module is
imported, so the handler it returns notes the exception of a 5xx it answers for the request's
record, as an ASGI exception handler's is; ninja's lookup takes the exception, which is noted
there, as ninja's handler raises one it leaves from inside itself. So the traceback of an
exception no handler answers (the terminal's, the 500 page's, the admins' email) holds no frame
of ours. A module our install ran inside of (an import cycle: Django's system checks load the
URLconf, which imports django-ninja, which imports Django's handlers) is wrapped once Django
builds a handler's middleware, before any request.
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

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


def _handler_noting_a_5xx(
    lookup: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """DRF's lookup takes no exception: the handler it returns notes the one it answers with a
    5xx. Its default handler raises nothing itself; DRF raises what it leaves, in its own frame."""
    handler = lookup(*args, **kwargs)
    return None if handler is None else partial(_noting_a_5xx, handler)


def _noting_the_exception_looked_up(
    lookup: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """ninja's lookup takes the exception, and its default handler raises one it leaves from
    inside itself (DEBUG off): noted here, it is the record's only if a 5xx answers it, and the
    handler runs with no frame of ours under it."""
    error = args[0] if args else kwargs.get("exc")
    if isinstance(error, BaseException):
        note_answered_error(error)
    return lookup(*args, **kwargs)


# (module, what looks a view's exception handler up, how the answer is noted)
_LOOKUPS: tuple[tuple[str, str, Wrapper], ...] = (
    ("rest_framework.views", "APIView.get_exception_handler", _handler_noting_a_5xx),
    ("ninja.main", "NinjaAPI._lookup_exception_handler", _noting_the_exception_looked_up),
)


_unfinished: list[Callable[[], None]] = []  # wrappings of modules still being imported


def install() -> None:
    for module, lookup, wrapper in _LOOKUPS:
        wrapt.register_post_import_hook(_wrapping(lookup, wrapper), module)


def wrap_unfinished() -> None:
    """Before a handler serves: the modules whose import our install interrupted are done."""
    waiting = list(_unfinished)
    _unfinished.clear()
    for wrap in waiting:
        wrap()  # one still unfinished waits for the next handler


def _wrapping(lookup: str, wrapper: Wrapper) -> Callable[[ModuleType], None]:
    owner = lookup.partition(".")[0]

    def wrap(module: ModuleType) -> None:
        if not hasattr(module, owner):
            _unfinished.append(lambda: wrap(module))
            return
        try:
            wrapt.wrap_function_wrapper(module, lookup, wrapper)
        except Exception as error:  # a version without the lookup: the app's import goes on
            internal_logger.warning(
                "5xx answers of %s.%s carry no exception: %r", module.__name__, lookup, error
            )

    return wrap


def _noting_a_5xx(handler: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    response = handler(*args, **kwargs)
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and status >= 500:
        error = args[0] if args else kwargs.get("exc")  # DRF's handler(exc, context)
        if isinstance(error, BaseException):
            note_answered_error(error)
    return response
