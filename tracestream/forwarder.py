"""`tracestream forward`: the log and span streams, delivered to an OTLP/HTTP endpoint at least once.

The OpenTelemetry Collector has no Redis Streams receiver, so this is the bridge. Forwarders
read through one consumer group, so several share the load. An entry is acknowledged only
after the endpoint accepted its batch; 429 and 5xx are retried with backoff, honouring
Retry-After; entries a dead forwarder left pending are claimed by the others (XAUTOCLAIM)
once idle for `claim_idle`. A batch the endpoint rejects outright (400, 413, ...) goes to a
dead-letter stream, `<stream>:forward:dead`, so one bad record never blocks the rest and
nothing is lost. Authentication and not-found errors stop the forwarder instead: they are
configuration mistakes, and every entry stays pending for the next run. On a Redis Cluster
each shard's streams have their own consumer group, read on the server holding the shard.
"""

from __future__ import annotations

import http.client
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, cast
from urllib.parse import urlsplit

import redis

from tracestream.connection import (
    CLUSTER_CHANGES,
    CLUSTER_ERRORS,
    Client,
    Tls,
    open_client,
    refresh_topology,
    reply_text,
)
from tracestream.otlp_encoding import Encoded, RawEntry, encode_logs, encode_spans
from tracestream.query import resolve_flat_resources
from tracestream.schema import StreamKeys
from tracestream.settings import shown_url
from tracestream.shards import POLL_INTERVAL, shards

DEFAULT_GROUP = "tracestream-forward"
DEFAULT_ENDPOINT = "http://localhost:4318"
DEAD_LETTER_SUFFIX = ":forward:dead"
DEAD_LETTER_MAX = 100_000
# Wrong credentials or a wrong URL: retrying cannot help and dead-lettering would lose the stream's order.
FATAL_STATUSES = frozenset({401, 403, 404, 405, 407})
_FIRST_BACKOFF = 0.25


class ForwardError(RuntimeError):
    """The endpoint refuses us in a way only a person can fix."""


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class ForwardSettings:
    redis_url: str
    stream: str
    endpoint: str = DEFAULT_ENDPOINT
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=default_consumer)
    batch_size: int = 2000
    block: float = 1.0
    claim_idle: float = 30.0
    timeout: float = 10.0
    max_backoff: float = 30.0
    shutdown_grace: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)
    start_at_end: bool = False
    progress_every: float = 10.0
    tls: Tls | None = None
    cluster: bool = False


@dataclass
class Progress:
    logs: int = 0
    spans: int = 0
    claimed: int = 0
    retries: int = 0
    dead_lettered: int = 0

    def line(self, elapsed: float) -> str:
        rate = (self.logs + self.spans) / elapsed if elapsed > 0 else 0.0
        return (
            f"forwarded {self.logs} logs, {self.spans} spans ({rate:,.0f}/s); claimed {self.claimed}, "
            f"retries {self.retries}, dead-lettered {self.dead_lettered}"
        )


@dataclass(frozen=True)
class Signal:
    """One stream, the server holding it, and where its records go."""

    stream: str
    path: str
    encode: Callable[[Sequence[RawEntry]], Encoded]
    counter: str
    client: redis.Redis
    keys: StreamKeys  # its shard's keys, where the resources its entries name are kept


@dataclass(frozen=True)
class Response:
    status: int
    retry_after: float | None
    body: bytes


class OtlpHttpClient:
    """POSTs protobuf over one persistent connection, reconnecting when the server closed it."""

    def __init__(self, endpoint: str, timeout: float, headers: Mapping[str, str]) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint {endpoint!r} is not an http:// or https:// URL")
        self.endpoint = endpoint.rstrip("/")
        self._base_path = parts.path.rstrip("/")
        self._connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._netloc = parts.netloc
        self._timeout = timeout
        self._headers = {"Content-Type": "application/x-protobuf", **headers}
        self._connection: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes) -> Response:
        """Raises OSError (or http.client.HTTPException) when no answer came."""
        for attempt in (1, 2):
            connection = self._connection or self._connect()
            try:
                connection.request("POST", self._base_path + path, body, self._headers)
                answer = connection.getresponse()
                data = answer.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue  # a keep-alive connection the server had already closed
            if answer.will_close:
                self.close()
            return Response(answer.status, _retry_after(answer.getheader("Retry-After")), data)
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        self._connection = self._connection_class(self._netloc, timeout=self._timeout)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _retry_after(value: str | None) -> float | None:
    """Seconds, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Forwarder:
    """Reads both streams through a consumer group and posts batches until `stop()`."""

    def __init__(
        self,
        settings: ForwardSettings,
        report: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.progress = Progress()
        self._report = report
        timeout = max(5.0, settings.block + 5.0)
        self._redis = open_client(settings.redis_url, timeout, cluster=settings.cluster, tls=settings.tls)
        self._http = OtlpHttpClient(settings.endpoint, settings.timeout, settings.headers)
        # Per shard, its log and span streams: one slot, so one XREADGROUP reads both.
        self._shards: list[tuple[Signal, Signal]] = []
        self._by_stream: dict[bytes, Signal] = {}
        self._stop = threading.Event()
        self._stop_deadline = float("inf")
        # One batch waits while one is sent: memory stays bounded and a slow endpoint slows reading.
        self._outbox: queue.Queue[tuple[Signal, Sequence[RawEntry], Encoded] | None] = queue.Queue(maxsize=1)
        self._failure: Exception | None = None

    def stop(self) -> None:
        """Finish the batch in flight (for at most `shutdown_grace` seconds), then return from `run()`."""
        self._stop_deadline = time.monotonic() + self.settings.shutdown_grace
        self._stop.set()

    def run(self) -> Progress:
        settings = self.settings
        self._discover()
        self._report(
            f"forwarding {', '.join(s.stream for s in self._by_stream.values()) or settings.stream} "
            f"to {self._http.endpoint} as {settings.group}/{settings.consumer}"
        )
        started = last_report = last_claim = time.monotonic()
        claim_every = max(0.2, settings.claim_idle / 2)
        redis_failing = False
        sender = threading.Thread(target=self._send_loop, name="tracestream-forward-send", daemon=True)
        sender.start()
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_claim >= claim_every:
                    self._discover()
                    self._claim_abandoned()
                    last_claim = time.monotonic()
                self._read_and_forward()
                if redis_failing:
                    redis_failing = False
                    self._report("Redis is reachable again")
            except CLUSTER_ERRORS as error:
                if "NOGROUP" in str(error):
                    self._ensure_groups()  # the stream was deleted and recreated
                elif isinstance(error, redis.ResponseError) and not isinstance(error, CLUSTER_CHANGES):
                    raise
                else:
                    refresh_topology(self._redis)
                    if not redis_failing:
                        redis_failing = True
                        self._report(
                            f"cannot read from Redis at {shown_url(settings.redis_url)}: {error}; retrying"
                        )
                    self._stop.wait(1.0)
            if time.monotonic() - last_report >= settings.progress_every:
                last_report = time.monotonic()
                self._report(self.progress.line(last_report - started))
        self._outbox.put(None)
        sender.join()
        self._http.close()
        if self._failure is not None:
            raise self._failure
        self._report(f"stopped: {self.progress.line(time.monotonic() - started)}")
        return self.progress

    def _discover(self) -> None:
        """The shards to read: the one stream pair on a single Redis; on a cluster, every registered one."""
        pairs = []
        for shard in shards(self._redis, self.settings.stream):
            # Entries stay as Redis sends them (flat lists of bytes): making dicts cost more than encoding.
            for command in ("XREADGROUP", "XAUTOCLAIM"):
                shard.client.set_response_callback(command, _raw)
            keys, client = shard.keys, shard.client
            pairs.append(
                (
                    Signal(keys.logs, "/v1/logs", encode_logs, "logs", client, keys),
                    Signal(keys.spans, "/v1/traces", encode_spans, "spans", client, keys),
                )
            )
        new = [signal for pair in pairs for signal in pair if signal.stream.encode() not in self._by_stream]
        self._shards = pairs
        self._by_stream = {signal.stream.encode(): signal for pair in pairs for signal in pair}
        self._ensure_groups(new)

    def _ensure_groups(self, signals: Iterable[Signal] | None = None) -> None:
        for signal in self._by_stream.values() if signals is None else signals:
            try:
                start = "$" if self.settings.start_at_end else "0"
                signal.client.xgroup_create(signal.stream, self.settings.group, id=start, mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    def _read_and_forward(self) -> None:
        """One shard blocks in XREADGROUP; several (a cluster) are polled until one has entries."""
        settings = self.settings
        pairs = self._shards
        block = int(settings.block * 1000) if len(pairs) == 1 else None
        got = 0
        for logs, spans in pairs:
            replies = logs.client.xreadgroup(
                settings.group,
                settings.consumer,
                {logs.stream: ">", spans.stream: ">"},
                count=settings.batch_size,
                block=block,
            )
            # A map under RESP3, a list of pairs under RESP2.
            read = replies.items() if isinstance(replies, dict) else replies or []
            for stream, entries in cast("Iterable[tuple[bytes, list[RawEntry]]]", read):
                got += len(entries)
                self._forward(self._by_stream[stream], entries)
        if block is None and not got:
            self._stop.wait(POLL_INTERVAL)

    def _claim_abandoned(self) -> None:
        """Take over what a dead forwarder read but never acknowledged."""
        self._outbox.join()  # our own batches in flight are idle too: never claim those back
        settings = self.settings
        for signal in self._by_stream.values():
            cursor = b"0-0"
            while not self._stop.is_set():
                cursor, entries, deleted = signal.client.xautoclaim(
                    signal.stream,
                    settings.group,
                    settings.consumer,
                    min_idle_time=int(settings.claim_idle * 1000),
                    start_id=cursor,
                    count=settings.batch_size,
                )[:3]
                live = [(entry_id, flat) for entry_id, flat in entries if flat is not None]
                if live:
                    self.progress.claimed += len(live)
                    self._forward(signal, live)
                if cursor == b"0-0" or not (entries or deleted):
                    break

    def _forward(self, signal: Signal, entries: Sequence[RawEntry]) -> None:
        """Encode here, send on the sender thread: the next batch is read while this one travels."""
        resolve_flat_resources(signal.client, signal.keys, (flat for _, flat in entries if flat is not None))
        self._outbox.put((signal, entries, signal.encode(entries)))

    def _send_loop(self) -> None:
        while (item := self._outbox.get()) is not None:
            try:
                if self._failure is None:  # after a failure, batches stay pending for another forwarder
                    self._deliver(*item)
            except CLUSTER_ERRORS as error:  # not acknowledged: claimed again after claim_idle
                self._report(f"cannot acknowledge in Redis at {shown_url(self.settings.redis_url)}: {error}")
            except Exception as error:
                self._failure = error
                self._stop.set()
            finally:
                self._outbox.task_done()

    def _deliver(self, signal: Signal, entries: Sequence[RawEntry], encoded: Encoded) -> None:
        """Acknowledge a batch only once the endpoint has it (or it is dead-lettered)."""
        dead = [(entries[index], reason) for index, reason in encoded.rejected]
        if encoded.count:
            response = self._post(signal.path, encoded.body)
            if response is None:
                return  # stopping while the endpoint still refuses: the entries stay pending for others
            if response.status >= 300:
                reason = f"HTTP {response.status}: {_excerpt(response.body)}"
                rejected = {index for index, _ in encoded.rejected}
                dead += [(entry, reason) for index, entry in enumerate(entries) if index not in rejected]
            else:
                setattr(self.progress, signal.counter, getattr(self.progress, signal.counter) + encoded.count)
        if dead:
            self._dead_letter(signal, dead)
        signal.client.xack(signal.stream, self.settings.group, *[entry_id for entry_id, _ in entries])

    def _post(self, path: str, body: bytes) -> Response | None:
        """The final answer for a batch: retried while the endpoint is busy, down or failing."""
        backoff = _FIRST_BACKOFF
        while True:
            retry_after: float | None = None
            try:
                response = self._http.post(path, body)
            except (OSError, http.client.HTTPException) as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.status in FATAL_STATUSES:
                    raise ForwardError(
                        f"{self._http.endpoint}{path} answered HTTP {response.status}: "
                        f"{_excerpt(response.body)}; check the endpoint and its credentials"
                    )
                if response.status < 300 or not _retryable(response.status):
                    return response
                problem, retry_after = f"HTTP {response.status}", response.retry_after
            delay = min(self.settings.max_backoff, backoff if retry_after is None else retry_after)
            if self._stop.is_set() and time.monotonic() + delay > self._stop_deadline:
                self._report(f"stopping with a batch undelivered ({problem}); it stays pending")
                return None
            self.progress.retries += 1
            if self.progress.retries == 1 or backoff >= self.settings.max_backoff:
                self._report(f"{self._http.endpoint}{path}: {problem}; retrying in {delay:.1f}s")
            self._wait(delay)
            backoff = min(self.settings.max_backoff, backoff * 2)

    def _wait(self, delay: float) -> None:
        if self._stop.is_set():
            time.sleep(delay)
        else:
            self._stop.wait(delay)

    def _dead_letter(self, signal: Signal, dead: list[tuple[RawEntry, str]]) -> None:
        """Entries the endpoint refused or that cannot be encoded: kept, with the reason, never retried."""
        stream = signal.stream + DEAD_LETTER_SUFFIX
        pipe = signal.client.pipeline(transaction=False)
        for (entry_id, flat), reason in dead:
            fields: dict[Any, Any] = dict(zip(flat[0::2], flat[1::2], strict=False))
            fields.update(forward_source_id=entry_id, forward_error=reason)
            pipe.xadd(stream, fields, maxlen=DEAD_LETTER_MAX, approximate=True)
        pipe.execute()
        self.progress.dead_lettered += len(dead)
        self._report(f"{len(dead)} {signal.counter} not forwarded ({dead[0][1]}); kept in {stream}")


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _excerpt(body: bytes) -> str:
    text = body[:200].decode("utf-8", "replace").strip()
    return text or "(no body)"


# ---------------------------------------------------------------------------
# lag, for `tracestream doctor`


@dataclass(frozen=True)
class StreamLag:
    stream: str
    group: str
    consumers: int
    pending: int
    oldest_pending_age: float | None  # seconds since the oldest unacknowledged entry was written
    undelivered: int | None  # entries no forwarder has read yet; None when Redis cannot tell


def forwarder_lag(client: Client, stream: str, group: str = DEFAULT_GROUP) -> list[StreamLag]:
    """How far the forwarders of `group` are behind, per stream of every shard; empty when none ran."""
    found = []
    for shard in shards(client, stream):
        for key in (shard.keys.logs, shard.keys.spans):
            try:
                groups = shard.client.xinfo_groups(key)
            except redis.ResponseError:
                continue  # no such stream
            info = next((g for g in groups if reply_text(g["name"]) == group), None)
            if info is None:
                continue
            summary = shard.client.xpending(key, group)
            oldest = summary.get("min")
            age = time.time() - int(reply_text(oldest).split("-")[0]) / 1000 if oldest else None
            lag = info.get("lag")
            found.append(
                StreamLag(
                    stream=key,
                    group=group,
                    consumers=int(info["consumers"]),
                    pending=int(summary["pending"]),
                    oldest_pending_age=age,
                    undelivered=int(lag) if lag is not None else None,
                )
            )
    return found


def _raw(response: Any, **options: Any) -> Any:
    return response
