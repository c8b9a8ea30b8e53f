"""Sentry's own uploads make no spans.

Sentry sends what it captures from a background thread, through urllib3, which `configure()`
and the launcher instrument: each upload was a trace of one span in the stream. Under Sentry's
"OpenTelemetry support" recipe its span processor made each such span a transaction, which it
uploaded in turn, without end: it knows its own uploads by the old `http.url` attribute, which
the stable HTTP names leave out. What Sentry's worker sends runs with instrumentation
suppressed instead, as tracestream's own export does, in a context of its own: a worker started
during a request does not carry that request's trace either.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

import wrapt
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, attach, detach, set_value

__all__ = ["install"]

_UNTRACED = set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, Context())
_installed = False


def install() -> None:
    global _installed
    if not _installed:
        _installed = True
        wrapt.register_post_import_hook(_untrace_the_worker, "sentry_sdk.worker")


def _untrace_the_worker(module: ModuleType) -> None:
    worker = getattr(module, "BackgroundWorker", None)
    if worker is not None and callable(getattr(worker, "submit", None)):
        wrapt.wrap_function_wrapper(worker, "submit", _submit_untraced)


def _submit_untraced(
    submit: Callable[[Callable[[], Any]], bool], worker: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bool:
    if len(args) == 1 and not kwargs and callable(args[0]):
        return submit(partial(_untraced, args[0]))
    return submit(*args, **kwargs)


def _untraced(job: Callable[[], Any]) -> Any:
    token = attach(_UNTRACED)
    try:
        return job()
    finally:
        detach(token)
