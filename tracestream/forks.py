"""State a forked child must not inherit.

A fork copies only the forking thread. A lock another thread held at that moment stays held
in the child for ever, and the child's first export would wait on it (Celery's prefork pool,
gunicorn's workers and uWSGI all fork while our exporter threads run).

uWSGI forks its workers in C, where Python's fork hooks run only with `--py-call-osafterfork`:
without this, a worker kept the master's export threads (which a fork does not copy) and its
record ids, and its records never reached Redis. There the renewals also run from uWSGI's
postfork hook, once per process whichever comes first. uWSGI makes its `uwsgi` module after
the interpreter starts, after the launcher's setup: the hook is registered once the module is
there, as the app loads or its first record starts the queues, and a worker forked before
that (`--lazy-apps`) renews then.

Without `--py-call-uwsgi-fork-hooks`, uWSGI also forks while other threads may hold the GIL,
and a worker forked at such a moment waits for it for ever: no thread of ours may run in the
process that forks the workers.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable

__all__ = ["follow_uwsgi_forks", "forks_strand_threads", "renew_in_child"]

_renewals: list[Callable[[], Callable[[], object] | None]] = []
_renewed_in = os.getpid()
_following_uwsgi = False


def renew_in_child(action: Callable[[], object]) -> None:
    """Call `action` in every child forked from now on; a bound method, for as long as its object lives."""
    if not _renewals:
        os.register_at_fork(after_in_child=_renew)
        follow_uwsgi_forks()
    if hasattr(action, "__self__"):
        _renewals.append(weakref.WeakMethod(action))  # type: ignore[arg-type]
    else:
        _renewals.append(lambda: action)


def _renew() -> None:
    global _renewed_in
    if os.getpid() == _renewed_in:
        return
    _renewed_in = os.getpid()
    for renewal in list(_renewals):
        action = renewal()
        if action is None:
            _renewals.remove(renewal)
        else:
            action()


def follow_uwsgi_forks() -> None:
    """Inside uWSGI, once its embedded module exists: renew from its postfork hook, and now in a
    worker it forked before."""
    global _following_uwsgi
    if _following_uwsgi or "uwsgi" not in sys.modules:
        return
    _following_uwsgi = True
    import uwsgidecorators  # type: ignore[import-not-found]  # shipped with uWSGI

    uwsgidecorators.postfork(_renew)
    _renew()


def forks_strand_threads() -> bool:
    """True in a uWSGI master that forks its workers without Python's fork hooks (without
    `--py-call-uwsgi-fork-hooks`)."""
    uwsgi = sys.modules.get("uwsgi")
    return (
        uwsgi is not None
        and uwsgi.masterpid() == os.getpid()
        and not uwsgi.opt.get("py-call-uwsgi-fork-hooks")
    )
