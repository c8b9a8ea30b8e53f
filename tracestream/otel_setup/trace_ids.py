"""Trace and span ids drawn from a generator of tracestream's own, never from the global `random`.

The SDK's default `RandomIdGenerator` calls `random.getrandbits`: an app that seeds `random`
(`random.seed(42)` per request or per run, for output it can repeat) made the same trace and span
ids again, and its traces merged without a word, while every span took numbers out of the app's
own sequence, which then changed. Ours is seeded from `os.urandom`, and again in each forked child
(a uWSGI worker too, forks.py), which would otherwise make its parent's ids.
"""

from __future__ import annotations

import random

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from tracestream.forks import renew_in_child

__all__ = ["PrivateRandomIdGenerator", "replace_default_generator"]


# One for every generator: a module-level lookup is what keeps an id as cheap as the SDK's.
_random = random.Random()  # seeded from os.urandom
_bits = _random.getrandbits
_reseeded_in_children = False


class PrivateRandomIdGenerator(IdGenerator):
    """As random as the SDK's default, and as fast: one C call per id, from a `random.Random` of
    tracestream's own."""

    def __init__(self) -> None:
        global _reseeded_in_children
        if not _reseeded_in_children:
            _reseeded_in_children = True
            renew_in_child(_random.seed)

    def generate_span_id(self) -> int:
        span_id = _bits(64)
        while span_id == trace.INVALID_SPAN_ID:
            span_id = _bits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = _bits(128)
        while trace_id == trace.INVALID_TRACE_ID:
            trace_id = _bits(128)
        return trace_id

    def is_trace_id_random(self) -> bool:
        return True


def replace_default_generator(provider: object) -> None:
    """A provider built with the SDK's default generator (upstream's configurator builds it so
    where OTEL_PYTHON_ID_GENERATOR is unset) makes its ids with ours: the SDK hands a provider's
    generator to each tracer as it is made, and tracestream joins that provider before the
    launcher's instrumentations take theirs."""
    if type(getattr(provider, "id_generator", None)) is RandomIdGenerator:
        provider.id_generator = PrivateRandomIdGenerator()  # type: ignore[attr-defined]
