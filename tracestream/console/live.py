"""The live tail: ONE Redis reader per console process, fanned out to every viewer.

The reader blocks in `XREAD` on an asyncio connection, so the event loop never waits
on Redis, and each record is read and serialised once no matter how many viewers
watch. Viewers resume after a dropped connection from their last stream id: the gap
is replayed with `XRANGE` and the live queue takes over after the last replayed id,
so there is no gap and no duplicate. On a Redis Cluster the reader polls every shard
instead, and a viewer's position (its SSE event id) names one stream id per shard.

While Redis is unreachable, viewers stay connected and get a `status` event saying so;
the reader and each waiting viewer retry, and the feed goes on where it stopped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import heapq
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import orjson
import redis.asyncio as aioredis

from tracestream.connection import CLUSTER_ERRORS
from tracestream.console.api import record_view
from tracestream.console.health import UNREACHABLE, RedisHealth
from tracestream.query import Query, QueryError, RecentIds, StreamId, parse_stream_id, resolve_resources_async
from tracestream.query import after as next_id
from tracestream.schema import LogEntry, StreamKeys
from tracestream.shards import POLL_INTERVAL, SHARD_REFRESH_S

Entries = list[tuple[str, dict[str, str]]]  # what a decoding client returns for XRANGE
REPLAY_PAGE = 500
REPLAY_CHUNK = 100  # replayed events a write
Item = tuple[str, StreamId, bytes]  # shard, stream id, the event's data line
NOTICE: StreamId = (-1, -1)  # the stream id of items that are not records: sent as they are
# Sent when Redis had nothing for a whole block, so proxies keep the stream open and dead
# connections are noticed.
HEARTBEAT: Item = ("", NOTICE, b": keepalive\n\n")
RETRY_S = 1.0  # how often the reader, and each viewer waiting for Redis, tries again at the most
_log = logging.getLogger("tracestream.console")


@dataclass(frozen=True)
class LiveShard:
    """One stream to follow: the connection blocked in XREAD, and one for replays."""

    name: str
    reader: aioredis.Redis
    client: aioredis.Redis

    async def resolve(self, entries: Entries) -> None:
        """Entries name their resource by reference: the viewers see the resource itself."""
        await resolve_resources_async(self.client, StreamKeys(self.name), (fields for _, fields in entries))


# The streams to follow; with `True`, after a Redis error (a cluster may have failed over).
ShardSource = Callable[[bool], Awaitable[list[LiveShard]]]


def _data(entry: LogEntry) -> bytes:
    return b"data: %s\n\n" % orjson.dumps(record_view(entry))


def status_event(problem: str) -> bytes:
    """A `status` event: Redis is out or refuses (`problem` says how) or, with no problem, live again."""
    state = "ok" if not problem else "unreachable" if problem.startswith(UNREACHABLE) else "refused"
    return b"event: status\ndata: %s\n\n" % orjson.dumps({"redis": state, "message": problem or "live"})


LIVE_AGAIN: Item = ("", NOTICE, status_event(""))


@dataclass(eq=False)
class Viewer:
    """One connected browser: its filter and a bounded queue of encoded events."""

    query: Query
    queue: asyncio.Queue[Item | None] = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))


class LiveFeed:
    """The shared reader starts with the first viewer and then idles in XREAD BLOCK until shutdown.

    Keeping it running (one cheap blocked call per block period) keeps its cursor, so a
    later viewer's replay always meets the live feed exactly. `shards` lists the streams to
    follow: one on a single Redis, each shard's on a cluster (`cluster=True`).
    """

    def __init__(
        self,
        shards: ShardSource,
        health: RedisHealth,
        *,
        cluster: bool = False,
        block_ms: int = 5000,
        backlog: int = 50,
    ) -> None:
        self._shard_source = shards
        self._health = health
        self._cluster = cluster
        self._block_ms = block_ms
        self._backlog = backlog
        self._viewers: set[Viewer] = set()
        self._reader: asyncio.Task[None] | None = None
        self._cursors: dict[str, str] = {}
        self._known: list[LiveShard] = []
        self._known_at = float("-inf")
        self._starting = asyncio.Lock()
        self._closing = False
        self._recent = RecentIds()  # a retried export may have written a record twice
        self._skipped_any = False

    def parse_position(self, text: str) -> dict[str, StreamId]:
        """A viewer's position from its last event id; `QueryError` names a malformed one."""
        if not self._cluster:
            return {"": parse_stream_id(text)}
        positions = {}
        for part in text.split(","):
            shard, sep, stream_id = part.partition(":")
            try:
                name = base64.urlsafe_b64decode(shard + "=" * (-len(shard) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError):
                name = ""
            if not (sep and name):
                raise QueryError(f"invalid live position {text!r}: pass back an event id the console sent")
            positions[name] = parse_stream_id(stream_id)
        return positions

    def _position_id(self, positions: dict[str, StreamId]) -> bytes:
        if not self._cluster:
            ms, seq = positions.get("", (0, 0))
            return f"{ms}-{seq}".encode()
        return ",".join(
            f"{base64.urlsafe_b64encode(name.encode()).decode().rstrip('=')}:{ms}-{seq}"
            for name, (ms, seq) in sorted(positions.items())
        ).encode()

    def _key(self, shard: LiveShard) -> str:
        """Positions are keyed by shard on a cluster; a single Redis has one, keyed ''."""
        return shard.name if self._cluster else ""

    async def _shards(self, after_error: bool = False) -> list[LiveShard]:
        if after_error or time.monotonic() - self._known_at >= SHARD_REFRESH_S:
            self._known = await self._shard_source(after_error)
            self._known_at = time.monotonic()
        return self._known

    async def events(self, query: Query, after: str | None) -> AsyncIterator[bytes]:
        """Encoded SSE events for one viewer: the backlog or the gap since `after`, then live."""
        viewer = Viewer(query)
        try:
            # The newest id this viewer has seen or skipped, per shard: live events continue after it.
            last = self.parse_position(after) if after else {}
            async for event in self._joined(viewer, last, resume=after is not None):
                yield event
            while not self._closing:
                item = await viewer.queue.get()
                batch: list[bytes] = []
                while item is not None:
                    key, stream_id, data = item
                    if stream_id == NOTICE:
                        batch.append(data)
                    elif stream_id > last.get(key, (0, 0)):  # else already sent by the catch-up
                        last[key] = stream_id
                        batch.append(b"id: %s\n%s" % (self._position_id(last), data))
                    if viewer.queue.empty():
                        break
                    item = viewer.queue.get_nowait()
                if batch:
                    yield b"".join(batch)
                if item is None:  # fell too far behind: the browser reconnects and replays the gap
                    return
        finally:
            self._leave(viewer)

    async def _joined(self, viewer: Viewer, last: dict[str, StreamId], resume: bool) -> AsyncIterator[bytes]:
        """Join the feed and replay the backlog or the gap; through a Redis outage, a status
        event every `RETRY_S` until it answers (and one saying so), then the replay."""
        waited = False
        replayed = RecentIds()
        chunk: list[bytes] = []  # events sent together: one write each, not one an entry
        while True:
            try:
                joined_at = await self._join(viewer)
                async for key, entry in self._catch_up(last if resume else None, last, joined_at):
                    resume = True  # from here on a retry continues after what was sent
                    last[key] = parse_stream_id(entry.stream_id)
                    if replayed.add(entry.record_id) and viewer.query.matches(entry):
                        chunk.append(b"id: %s\n%s" % (self._position_id(last), _data(entry)))
                        if len(chunk) >= REPLAY_CHUNK:
                            yield b"".join(chunk)
                            chunk.clear()
                            # A turn for the loop: a viewer that left is seen before the next
                            # chunk, and other viewers and requests are served meanwhile.
                            await asyncio.sleep(0)
                if chunk:
                    yield b"".join(chunk)
                    chunk.clear()
            except CLUSTER_ERRORS as error:
                waited = True
                # What was read before the error goes first, as `last` says it was sent.
                chunk.append(status_event(self._health.failed(error)))
                yield b"".join(chunk)
                chunk.clear()
                await asyncio.sleep(RETRY_S)
                if self._closing:
                    return
                continue
            if waited:
                self._health.recovered()
                yield status_event("")
            return

    async def _join(self, viewer: Viewer) -> dict[str, str]:
        """Add `viewer` to the live feed; returns the reader's cursors at that moment: every later
        entry reaches the viewer's queue, every earlier one does not."""
        async with self._starting:
            if self._reader is None or self._reader.done():
                # Pin the cursors before anyone replays, so the reader starts exactly where replays end.
                self._known_at = float("-inf")
                for shard in await self._shards():
                    latest = cast(Entries, await shard.client.xrevrange(shard.name, count=1))
                    self._cursors[shard.name] = latest[0][0] if latest else "0-0"
                self._reader = asyncio.create_task(self._read_forever(), name="tracestream-live-reader")
            self._viewers.add(viewer)
            return dict(self._cursors)

    def _leave(self, viewer: Viewer) -> None:
        self._viewers.discard(viewer)

    async def _catch_up(
        self, after: dict[str, StreamId] | None, newest: dict[str, StreamId], joined_at: dict[str, str]
    ) -> AsyncIterator[tuple[str, LogEntry]]:
        """Every entry after `after`, shard by shard; without `after`, the last few entries.

        Without `after`, `newest` gets each shard's newest id, shown or not. With it, a position
        past a shard's end (Redis emptied, an old tab, a made-up id) would hide every new record
        as already seen: it moves back to where the viewer joined the live feed (`joined_at`).
        """
        shards = await self._shards()
        if after is None:
            recent: list[tuple[StreamId, str, LogEntry]] = []
            for shard in shards:
                entries = cast(Entries, await shard.client.xrevrange(shard.name, count=self._backlog))
                await shard.resolve(entries)
                key = self._key(shard)
                if entries:
                    newest[key] = parse_stream_id(entries[0][0])
                recent += [(parse_stream_id(i), key, LogEntry.from_fields(i, f)) for i, f in entries]
            for _, key, entry in reversed(heapq.nlargest(self._backlog, recent, key=lambda item: item[:2])):
                yield key, entry
            return
        for shard in shards:
            key = self._key(shard)
            ms, seq = position = after.get(key, (0, 0))
            start = next_id(f"{ms}-{seq}")
            replayed = False
            while start is not None:
                page = cast(Entries, await shard.client.xrange(shard.name, min=start, count=REPLAY_PAGE))
                await shard.resolve(page)
                for stream_id, fields in page:
                    replayed = True
                    yield key, LogEntry.from_fields(stream_id, fields)
                start = next_id(page[-1][0]) if len(page) == REPLAY_PAGE else None
            if not replayed and position > (0, 0):
                latest = cast(Entries, await shard.client.xrevrange(shard.name, count=1))
                if position > (parse_stream_id(latest[0][0]) if latest else (0, 0)):
                    newest[key] = parse_stream_id(joined_at.get(shard.name, "0-0"))

    async def _read_forever(self) -> None:
        delay = 0.1
        idle_since = time.monotonic()
        failed = False
        while True:
            try:
                shards = await self._shards(after_error=failed)
                # After a failure the first read does not block, so viewers hear at once that Redis answers.
                block = self._block_ms if len(shards) == 1 and not self._cluster and not failed else None
                news: list[tuple[StreamId, str, str, dict[str, str]]] = []
                for shard in shards:
                    cursor = self._cursors.setdefault(shard.name, "0-0")  # a new shard: all of it is new
                    found = cast(
                        list[tuple[str, Entries]],
                        await shard.reader.xread({shard.name: cursor}, count=1000, block=block),
                    )
                    for _stream, entries in found or ():
                        await shard.resolve(entries)
                        news += [(parse_stream_id(i), shard.name, i, fields) for i, fields in entries]
            except CLUSTER_ERRORS as error:  # Redis down, or a killed connection: retry from the same cursor
                if _cancelled():
                    raise asyncio.CancelledError from error
                problem = self._health.failed(error)
                if not failed:
                    self._broadcast(("", NOTICE, status_event(problem)))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_S)
                failed = True
                continue
            if failed:
                self._health.recovered()
                self._broadcast(LIVE_AGAIN)
            delay, failed = 0.1, False
            if news:
                idle_since = time.monotonic()
            elif block is not None or time.monotonic() - idle_since >= self._block_ms / 1000:
                idle_since = time.monotonic()
                self._broadcast(HEARTBEAT)
            else:
                await asyncio.sleep(POLL_INTERVAL)
            for stream_id, name, entry_id, fields in sorted(news):
                self._cursors[name] = entry_id
                try:
                    entry = LogEntry.from_fields(entry_id, fields)
                    self._fan_out(name if self._cluster else "", stream_id, entry)
                except Exception as error:  # one entry, whatever it holds, never ends the feed for all
                    self._skipped(entry_id, error)

    def _skipped(self, entry_id: str, error: Exception) -> None:
        if not self._skipped_any:
            self._skipped_any = True
            _log.warning(
                "tracestream console: live feed skipped entry %s (%s: %s); later ones skipped silently",
                entry_id,
                type(error).__name__,
                error,
            )

    def _fan_out(self, key: str, stream_id: StreamId, entry: LogEntry) -> None:
        if not self._recent.add(entry.record_id):
            return
        data: bytes | None = None
        for viewer in tuple(self._viewers):
            if not viewer.query.matches(entry):
                continue
            data = data or _data(entry)
            self._deliver(viewer, (key, stream_id, data))

    def _broadcast(self, item: Item) -> None:
        for viewer in tuple(self._viewers):
            self._deliver(viewer, item)

    def _deliver(self, viewer: Viewer, item: Item) -> None:
        try:
            viewer.queue.put_nowait(item)
        except asyncio.QueueFull:
            self._end(viewer)

    def _end(self, viewer: Viewer) -> None:
        """Ends `viewer`'s stream after what it has queued; a full queue makes room for the end."""
        self._viewers.discard(viewer)
        if viewer.queue.full():
            viewer.queue.get_nowait()
        viewer.queue.put_nowait(None)

    def end_streams(self) -> None:
        """Ends every viewer's stream, now and from now on: the server is stopping."""
        self._closing = True
        for viewer in tuple(self._viewers):
            self._end(viewer)

    async def close(self) -> None:
        """Cancels the reader until it ends: on Python 3.10 redis-py times its reads out with
        `async_timeout`, which can swallow a cancellation that meets its timeout."""
        reader, self._reader = self._reader, None
        if reader is None:
            return
        while not reader.done():
            reader.cancel()
            await asyncio.wait({reader}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError):
            reader.result()


def _cancelled() -> bool:
    """Whether this task was asked to stop. A read that a cancellation met ends in redis-py's
    own error, which the reader would retry for ever: `asyncio.run()` cancels each task left
    once, then waits for it (Python 3.11 and later count the requests; 3.10 cannot tell)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling is not None and cancelling())
