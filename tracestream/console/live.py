"""The live tail: ONE Redis reader per console process, fanned out to every viewer.

The reader blocks in `XREAD` on an asyncio connection, so the event loop never waits
on Redis, and each record is read and serialised once no matter how many viewers
watch. Viewers resume after a dropped connection from their last stream id: the gap
is replayed with `XRANGE` and the live queue takes over after the last replayed id,
so there is no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tracestream._internal_log import internal_logger
from tracestream.query import Query, StreamId, _RecentIds, parse_stream_id, record_json
from tracestream.schema import LogEntry

Entries = list[tuple[str, dict[str, str]]]  # what a decoding client returns for XRANGE
REPLAY_PAGE = 500
# Sent when Redis had nothing for a whole block, so proxies keep the stream open and dead
# connections are noticed.
HEARTBEAT: tuple[StreamId, bytes] = ((-1, -1), b": keepalive\n\n")


def _next_id(stream_id: str) -> str:
    """The smallest id after `stream_id`: an exclusive lower bound on any Redis version."""
    ms, seq = parse_stream_id(stream_id)
    return f"{ms}-{seq + 1}"


def sse_event(entry: LogEntry) -> bytes:
    return b"id: %s\ndata: %s\n\n" % (entry.stream_id.encode(), orjson.dumps(record_json(entry)))


@dataclass(eq=False)
class Viewer:
    """One connected browser: its filter and a bounded queue of encoded events."""

    query: Query
    queue: asyncio.Queue[tuple[StreamId, bytes] | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=10_000)
    )


class LiveFeed:
    """The shared reader starts with the first viewer and then idles in XREAD BLOCK until shutdown.

    Keeping it running (one cheap blocked call per block period) keeps its cursor, so a
    later viewer's replay always meets the live feed exactly.
    """

    def __init__(
        self,
        reader: aioredis.Redis,
        replays: aioredis.Redis,
        stream: str,
        *,
        block_ms: int = 5000,
        backlog: int = 50,
    ) -> None:
        self._reader_client = reader  # one connection, blocked in XREAD
        self._client = replays
        self._stream = stream
        self._block_ms = block_ms
        self._backlog = backlog
        self._viewers: set[Viewer] = set()
        self._reader: asyncio.Task[None] | None = None
        self._cursor = "0-0"
        self._starting = asyncio.Lock()
        self._recent = _RecentIds()  # a retried export may have written a record twice

    async def events(self, query: Query, after: str | None) -> AsyncIterator[bytes]:
        """Encoded SSE events for one viewer: the backlog or the gap since `after`, then live."""
        viewer = Viewer(query)
        await self._join(viewer)
        try:
            # The newest id this viewer has seen or skipped: the live queue continues after it.
            last: StreamId = parse_stream_id(after) if after else (0, 0)
            replayed = _RecentIds()
            async for entry in self._catch_up(after):
                last = parse_stream_id(entry.stream_id)
                if replayed.add(entry.record_id) and query.matches(entry):
                    yield sse_event(entry)
            while True:
                item = await viewer.queue.get()
                batch: list[bytes] = []
                while item is not None:
                    stream_id, event = item
                    if item is HEARTBEAT:
                        batch.append(event)
                    elif stream_id > last:  # else already sent by the catch-up
                        batch.append(event)
                        last = stream_id
                    if viewer.queue.empty():
                        break
                    item = viewer.queue.get_nowait()
                if batch:
                    yield b"".join(batch)
                if item is None:  # fell too far behind: the browser reconnects and replays the gap
                    return
        finally:
            self._leave(viewer)

    async def _join(self, viewer: Viewer) -> None:
        async with self._starting:
            if self._reader is None or self._reader.done():
                # Pin the cursor before anyone replays, so the reader starts exactly where replays end.
                latest = cast(Entries, await self._client.xrevrange(self._stream, count=1))
                self._cursor = latest[0][0] if latest else "0-0"
                self._reader = asyncio.create_task(self._read_forever(), name="tracestream-live-reader")
            self._viewers.add(viewer)

    def _leave(self, viewer: Viewer) -> None:
        self._viewers.discard(viewer)

    async def _catch_up(self, after: str | None) -> AsyncIterator[LogEntry]:
        """Every entry after `after`, page by page; without `after`, the last few entries."""
        if after is None:
            recent = cast(Entries, await self._client.xrevrange(self._stream, count=self._backlog))
            for stream_id, fields in reversed(recent):
                yield LogEntry.from_fields(stream_id, fields)
            return
        start = _next_id(after)
        while True:
            page = cast(Entries, await self._client.xrange(self._stream, min=start, count=REPLAY_PAGE))
            for stream_id, fields in page:
                yield LogEntry.from_fields(stream_id, fields)
            if len(page) < REPLAY_PAGE:
                return
            start = _next_id(page[-1][0])

    async def _read_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                found = cast(
                    list[tuple[str, Entries]],
                    await self._reader_client.xread(
                        {self._stream: self._cursor}, count=1000, block=self._block_ms
                    ),
                )
            except RedisError as error:  # a restarted or killed connection: retry from the same cursor
                internal_logger.warning("live reader: %s; retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.1
            if not found:
                self._broadcast(HEARTBEAT)
            for _stream, entries in found or ():
                for stream_id, fields in entries:
                    self._cursor = stream_id
                    self._fan_out(LogEntry.from_fields(stream_id, fields))

    def _fan_out(self, entry: LogEntry) -> None:
        if not self._recent.add(entry.record_id):
            return
        key = parse_stream_id(entry.stream_id)
        event: bytes | None = None
        for viewer in tuple(self._viewers):
            if not viewer.query.matches(entry):
                continue
            event = event or sse_event(entry)
            self._deliver(viewer, (key, event))

    def _broadcast(self, item: tuple[StreamId, bytes]) -> None:
        for viewer in tuple(self._viewers):
            self._deliver(viewer, item)

    def _deliver(self, viewer: Viewer, item: tuple[StreamId, bytes]) -> None:
        try:
            viewer.queue.put_nowait(item)
        except asyncio.QueueFull:  # make room for the sentinel that ends this viewer's stream
            self._viewers.discard(viewer)
            viewer.queue.get_nowait()
            viewer.queue.put_nowait(None)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
