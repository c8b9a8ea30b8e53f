"""State a forked child must not inherit.

A fork copies only the forking thread. A lock another thread held at that moment stays held
in the child for ever, and the child's first export would wait on it (Celery's prefork pool,
gunicorn's workers and uWSGI all fork while our exporter threads run).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

__all__ = ["renew_in_child"]


def renew_in_child(method: Callable[[], object]) -> None:
    """Call the bound `method` in every child forked from now on, for as long as its object lives."""
    renew = weakref.WeakMethod(method)  # type: ignore[arg-type]
    os.register_at_fork(after_in_child=lambda: (bound := renew()) and bound())
