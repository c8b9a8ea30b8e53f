"""structlog: a processor that sends each event to OTel with its key/values as attributes.

    structlog.configure(processors=[..., OTelProcessor(), structlog.dev.ConsoleRenderer()])

Put it before the renderer. The event is written to the OTel logs API directly (never
through `logging`, so it cannot loop) in the caller's thread, so it carries the current
trace. When structlog's logger is a stdlib logger, the event reaches our logging bridge
anyway (ended with `render_to_log_kwargs` or `ProcessorFormatter.wrap_for_formatter`, with
its key/values as attributes), so the processor leaves it to the bridge rather than writing
it twice. So it does inside a `ProcessorFormatter`, which renders stdlib records that the
bridge took as they were logged: it hands their processors no logger, or the record itself.

Under `opentelemetry-instrument`, upstream's structlog instrumentation (which
`opentelemetry-bootstrap` installs) puts its own processor in every chain; beside the bridge or
ours it wrote each event twice. It is stood in for by `join_every_chain`: ours, in each chain
that has none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from tracestream._internal_log import internal_logger
from tracestream.integrations.record_writer import RecordWriter
from tracestream.otel_setup.structured import (
    exception_from_text,
    exception_of,
    read_structlog_event,
    severity_of,
    text_of,
)
from tracestream.schema import EXCEPTION_KEYS


class OTelProcessor:
    def __init__(self) -> None:
        self._writers: dict[str, RecordWriter] = {}
        self._said_misplaced = False
        self._chain_checked = False

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        if not isinstance(event_dict, Mapping):
            return self._after_the_renderer(event_dict)
        if logger is None or "_record" in event_dict:
            return event_dict
        if isinstance(logger, logging.Logger):
            if not self._chain_checked:
                self._check_what_the_chain_hands_logging()
            return event_dict
        scope = text_of(event_dict.get("logger") or "structlog")
        writer = self._writers.get(scope) or self._writers.setdefault(scope, RecordWriter(scope))
        event = read_structlog_event(event_dict)
        exception = event.exception
        if exception is None and method_name == "exception":
            exception = exception_of(True)
        rendered = event.rendered_exception
        if exception is None and rendered is not None:
            event.attributes.update(zip(EXCEPTION_KEYS, exception_from_text(rendered), strict=True))
        writer.emit(
            event.body,
            severity_of(text_of(event_dict.get("level") or method_name)),
            event.attributes,
            exception=exception,
        )
        return event_dict

    def _check_what_the_chain_hands_logging(self) -> None:
        """Once: the bridge reads the event structlog hands a stdlib logger only as the event dict
        (`wrap_for_formatter`) or key/values (`render_to_log_kwargs`); a chain of ours that ends
        in a renderer hands it text, and the stream gets that text alone."""
        import structlog

        self._chain_checked = True
        chain = list(structlog.get_config()["processors"])
        handing_the_event_on = (
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            structlog.stdlib.render_to_log_kwargs,
            getattr(structlog.stdlib, "render_to_log_args_and_kwargs", None),
        )
        if self in chain and chain[-1] not in handing_the_event_on:
            internal_logger.warning(
                "structlog renders its events to text before they reach logging: the stream gets that "
                "text, without their key/values; end structlog's processors with "
                "structlog.stdlib.ProcessorFormatter.wrap_for_formatter or render_to_log_kwargs"
            )

    def _after_the_renderer(self, rendered: Any) -> Any:
        """A renderer before us made the event text: it goes on as the app meant, and is not in
        the stream. Said once, since every event after it is the same."""
        if not self._said_misplaced:
            self._said_misplaced = True
            internal_logger.warning(
                "OTelProcessor got a rendered %s, not an event dict: put it before the renderer in "
                "structlog's processors; until then structlog's events are not in the stream",
                type(rendered).__name__,
            )
        return rendered


def join_every_chain() -> None:
    """Our processor before the last of structlog's processors (its renderer), now and in each
    later `structlog.configure()` whose chain has none, as upstream's instrumentation places
    its own. The app's first `configure_once()` still takes effect."""
    import structlog

    processor = OTelProcessor()
    configure, configure_once, reset_defaults = (
        structlog.configure,
        structlog.configure_once,
        structlog.reset_defaults,
    )
    configured_by_app = structlog.is_configured()

    def with_ours(chain: Iterable[Any] | None) -> list[Any] | None:
        if chain is None:
            return None
        chain = list(chain)
        if not any(isinstance(step, OTelProcessor) for step in chain):
            chain.insert(max(len(chain) - 1, 0), processor)
        return chain

    def configured(processors: Iterable[Any] | None = None, *args: Any, **kwargs: Any) -> None:
        nonlocal configured_by_app
        configured_by_app = True
        configure(with_ours(processors), *args, **kwargs)

    def configured_once(*args: Any, **kwargs: Any) -> None:
        if configured_by_app:
            configure_once(*args, **kwargs)
        else:
            configured(*args, **kwargs)

    def reset() -> None:
        nonlocal configured_by_app
        reset_defaults()
        configured_by_app = False

    configure(with_ours(structlog.get_config()["processors"]))
    structlog.configure = configured
    structlog.configure_once = configured_once
    structlog.reset_defaults = reset


def stand_in_for_upstreams_instrumentation(module: Any) -> None:
    """A post-import hook on `opentelemetry.instrumentation.structlog`: instrumenting joins our
    processor to every chain instead of adding upstream's."""
    module.StructlogInstrumentor._instrument = lambda self, **kwargs: join_every_chain()
    module.StructlogInstrumentor._uninstrument = lambda self, **kwargs: None
