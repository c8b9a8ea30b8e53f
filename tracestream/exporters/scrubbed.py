"""Scrubbing in front of exporters that are not ours, such as OTLP during a migration.

Our Redis exporters scrub encoded rows themselves (`shaping.RowShaper`). Any other exporter
gets these wrappers, so a secret cannot leave the process by a second path. They hand the
inner exporter scrubbed copies: the SDK's objects stay untouched for every other exporter.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TypeVar

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, Status
from opentelemetry.util.types import Attributes

from tracestream.scrubbing import Scrubber

_Item = TypeVar("_Item", Event, Link)


class _Scrub:
    """The scrubber, with the last resource remembered: a process exports one resource."""

    def __init__(self, scrubber: Scrubber) -> None:
        self.scrubber = scrubber
        self._resource: tuple[Resource | None, Resource] = (None, Resource.get_empty())

    def attributes(self, attributes: Attributes) -> Attributes:
        return self.scrubber.scrub_attributes(attributes) if attributes else attributes  # type: ignore[return-value]

    def counted_attributes(self, attributes: Attributes, dropped: int) -> Attributes:
        """Scrubbed, still counting what OTel's limits `dropped` from them."""
        return with_dropped_count(self.attributes(attributes), dropped)

    def resource(self, resource: Resource) -> Resource:
        if resource is not self._resource[0]:
            scrubbed = Resource(self.attributes(resource.attributes) or {}, resource.schema_url)
            self._resource = (resource, scrubbed)
        return self._resource[1]


class ScrubbingLogExporter(LogRecordExporter):
    """Scrubs body, event name, attributes (exception text included) and resource, then exports."""

    def __init__(self, exporter: LogRecordExporter, scrubber: Scrubber) -> None:
        self.exporter = exporter
        self._scrub = _Scrub(scrubber)

    def _scrubbed(self, readable: ReadableLogRecord) -> ReadableLogRecord:
        record = copy.copy(readable.log_record)
        record.body = self._scrub.scrubber.scrub_value("", record.body)  # type: ignore[assignment]
        if record.event_name:
            record.event_name = self._scrub.scrubber.scrub_text(record.event_name)
        record.attributes = self._scrub.counted_attributes(record.attributes, readable.dropped_attributes)
        return ReadableLogRecord(
            log_record=record,
            resource=self._scrub.resource(readable.resource),
            instrumentation_scope=readable.instrumentation_scope,
            limits=readable.limits,
        )

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return self.exporter.export([self._scrubbed(record) for record in batch])

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)  # type: ignore[no-any-return]

    def shutdown(self) -> None:
        self.exporter.shutdown()  # type: ignore[no-untyped-call]


class ScrubbingSpanExporter(SpanExporter):
    """Scrubs name, attributes, events, link attributes, status text and resource, then exports."""

    def __init__(self, exporter: SpanExporter, scrubber: Scrubber) -> None:
        self.exporter = exporter
        self._scrub = _Scrub(scrubber)

    def _scrubbed(self, span: ReadableSpan) -> ReadableSpan:
        scrub = self._scrub
        text = scrub.scrubber.scrub_text
        status = span.status
        if status.description:
            status = Status(status.status_code, text(status.description))
        return ReadableSpan(
            name=text(span.name),
            context=span.context,
            parent=span.parent,
            resource=scrub.resource(span.resource),
            attributes=scrub.counted_attributes(span.attributes, span.dropped_attributes),
            events=_counted(
                [
                    Event(
                        text(e.name),
                        scrub.counted_attributes(e.attributes, e.dropped_attributes),
                        e.timestamp,
                    )
                    for e in span.events
                ],
                span.dropped_events,
            ),
            links=_counted(
                [
                    Link(link.context, scrub.counted_attributes(link.attributes, link.dropped_attributes))
                    for link in span.links
                ],
                span.dropped_links,
            ),
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export([self._scrubbed(span) for span in spans])

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.exporter.shutdown()


def with_dropped_count(attributes: Attributes, dropped: int) -> Attributes:
    """`attributes` carrying the count of those OTel's limits dropped, which an exporter sends on
    (OTLP's `dropped_attributes_count`)."""
    if not dropped:
        return attributes
    counted = BoundedAttributes(attributes=attributes, extended_attributes=True)
    counted.dropped = dropped
    return counted


def _counted(items: list[_Item], dropped: int) -> Sequence[_Item]:
    """Events or links, with the count of those OTel's limits dropped."""
    if not dropped:
        return items
    counted: BoundedList[_Item] = BoundedList.from_seq(None, items)
    counted.dropped = dropped
    return counted
