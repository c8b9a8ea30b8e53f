"""Resources stored by reference (stream schema 2): an entry names its process's resource, which
is stored once beside the stream (docs/stream-schema.md#resources).

A reference is a hash of the resource's content, so it names the same resource on every server:
each is fetched once per process and kept. A resource whose hash expired stays a reference, which
the decoders show under `UNRESOLVED_RESOURCE`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.client import Pipeline as SyncPipeline

from tracestream.connection import Client
from tracestream.schema import RESOURCE_REFERENCE, StreamKeys

__all__ = ["resolve_flat_resources", "resolve_resources", "resolve_resources_async"]

_KEPT = 4096  # distinct resources kept in memory: a process each, at a few hundred bytes
_known: dict[str, str] = {}
_RESOURCE_NAMES = ("resource", b"resource")
_REFERENCE = re.compile(re.escape(RESOURCE_REFERENCE) + "[0-9a-f]{16}")
Fields = MutableMapping[str, str]


def resolve_resources(client: Client, keys: StreamKeys, entries: Iterable[Fields]) -> None:
    """Put each referenced resource's JSON in place of its reference, in the entries' fields."""
    referring = _referring(entries)
    if unknown := _unknown(referring):
        pipe = _lookups(client.pipeline(transaction=False), keys, unknown)
        _keep(unknown, pipe.execute(raise_on_error=False))
    _substitute(referring)


async def resolve_resources_async(client: AsyncRedis, keys: StreamKeys, entries: Iterable[Fields]) -> None:
    """`resolve_resources` on an asyncio client."""
    referring = _referring(entries)
    if unknown := _unknown(referring):
        pipe = _lookups(client.pipeline(transaction=False), keys, unknown)
        _keep(unknown, await pipe.execute(raise_on_error=False))
    _substitute(referring)


def resolve_flat_resources(client: Client, keys: StreamKeys, entries: Iterable[list[Any]]) -> None:
    """The same for fields as Redis sends them, a flat list of names and values, str or bytes."""
    places = [(flat, index + 1) for flat in entries for index in _resource_at(flat)]
    fields = [{"resource": _text(flat[at])} for flat, at in places]
    resolve_resources(client, keys, fields)
    for (flat, at), resolved in zip(places, fields, strict=True):
        flat[at] = resolved["resource"].encode() if isinstance(flat[at], bytes) else resolved["resource"]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _resource_at(flat: Sequence[Any]) -> list[int]:
    return [index for index in range(0, len(flat) - 1, 2) if flat[index] in _RESOURCE_NAMES][:1]


def _referring(entries: Iterable[Fields]) -> list[Fields]:
    """Fields naming a resource the way the writer does: another writer's text is not looked up."""
    return [fields for fields in entries if _REFERENCE.fullmatch(fields.get("resource", ""))]


def _unknown(referring: Iterable[Fields]) -> list[str]:
    return sorted({fields["resource"] for fields in referring} - _known.keys())


Pipeline = TypeVar("Pipeline", bound="SyncPipeline | AsyncPipeline")


def _lookups(pipe: Pipeline, keys: StreamKeys, unknown: list[str]) -> Pipeline:
    for reference in unknown:
        pipe.hmget(keys.resource(reference), ["json"])  # HMGET: within the reader rights
    return pipe


def _keep(unknown: list[str], replies: list[Any]) -> None:
    if len(_known) + len(unknown) > _KEPT:
        _known.clear()
    # A reader without the rights, or a key of another type, leaves those references as they are.
    for reference, reply in zip(unknown, replies, strict=True):
        found = reply[0] if isinstance(reply, list) else None
        if isinstance(found, (bytes, str)):
            _known[reference] = found.decode() if isinstance(found, bytes) else found


def _substitute(referring: Iterable[Fields]) -> None:
    for fields in referring:
        fields["resource"] = _known.get(fields["resource"], fields["resource"])
