"""Whether a writer's writes fail, as its stderr tells it: one line when they start to fail, one
when Redis has taken them again for a while, nothing in between. A process's log and span
writers to one Redis say those lines once for both.

A Redis at its memory limit takes a batch now and then (a trim freed a little) and refuses the
next: a batch taken between refusals is no recovery. So writes count as failing until they have
gone through for `hold_s` seconds with none failing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# How long writes must go through, none failing, before a writer says Redis takes records again.
RECOVERY_HOLD_S = 10.0


class WriteHealth:
    """One writer's failing spell: when it starts, and when it is over. Its export thread writes,
    and the thread that publishes its status asks too: each line is said by one of them."""

    def __init__(self, hold_s: float = RECOVERY_HOLD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._hold_s = hold_s
        self._clock = clock
        self._failing = False
        self._last_failure = 0.0
        self._taken_since_failure = False
        self._lock = threading.Lock()

    @property
    def failing(self) -> bool:
        """Writes fail, or have not gone through long enough since one last failed."""
        return self._failing

    def failed(self) -> bool:
        """A write failed; True when that starts a failing spell (the writer says so)."""
        with self._lock:
            self._last_failure = self._clock()
            self._taken_since_failure = False
            starts = not self._failing
            self._failing = True
            return starts

    def taken(self) -> bool:
        """A write went through; True when that ends the failing spell (the writer says so)."""
        self._taken_since_failure = True
        return self.recovered()

    def recovered(self) -> bool:
        """True, once, when a write went through and none failed for `hold_s` seconds. Asked between
        writes too: a writer with nothing more to write ends its spell all the same."""
        with self._lock:
            if not (self._failing and self._taken_since_failure):
                return False
            if self._clock() - self._last_failure < self._hold_s:
                return False
            self._failing = False
            return True


class SharedSpells:
    """The failing spells of one process's writers to one Redis and stream, told as one: a spell
    that starts with an error another writer already said is not said again, and the recovery is
    said when the last spell is over."""

    def __init__(self) -> None:
        self._errors: dict[str, str] = {}  # signal -> the error its spell started with
        self._lock = threading.Lock()

    def starts(self, signal: str, error: str) -> bool:
        """`signal`'s spell starts with `error`: True when no other writer's spell said it."""
        with self._lock:
            said = error in self._errors.values()
            self._errors[signal] = error
            return not said

    def ends(self, signal: str) -> bool:
        """`signal`'s spell is over: True when it was the last one."""
        with self._lock:
            self._errors.pop(signal, None)
            return not self._errors


_SHARED: dict[tuple[str, str], SharedSpells] = {}
_SHARED_LOCK = threading.Lock()


def shared_spells(redis_url: str, stream: str) -> SharedSpells:
    """The one `SharedSpells` of this process for the writers of `stream` at `redis_url`."""
    with _SHARED_LOCK:
        return _SHARED.setdefault((redis_url, stream), SharedSpells())
