"""`OTEL_PROPAGATORS=none`, as the OTel docs describe it: nothing crosses services.

The OTel API reads `none` as an empty `CompositePropagator`, whose `extract` hands back the
context it was given. Instrumentations pass none and attach what comes back: `None`, so every
request a contrib server instrumentation saw failed in `context.attach` (a 500 from FastAPI,
under upstream's launcher as well), and its record went with it. A propagator that carries
nothing takes its place.
"""

from __future__ import annotations

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)


class PropagatesNothing(TextMapPropagator):
    """Reads no header and writes none; a caller's trace is not continued."""

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        return Context() if context is None else context

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        return None

    @property
    def fields(self) -> set[str]:
        return set()


def mend_empty_propagator() -> None:
    """Where the global propagator is the API's empty one, which extracts `None`."""
    propagator = propagate.get_global_textmap()
    if (
        isinstance(propagator, CompositePropagator)
        and not propagator.fields
        and propagator.extract({}) is None
    ):
        propagate.set_global_textmap(PropagatesNothing())
