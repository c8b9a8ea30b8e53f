"""`tracestream forward`: the log and span streams, delivered to an OTLP/HTTP endpoint at least once.

The OpenTelemetry Collector has no Redis Streams receiver, so this is the bridge. Forwarders
read through one consumer group, so several share the load. An entry is acknowledged only
after the endpoint accepted its batch; 429 and 5xx are retried with backoff, honouring
Retry-After; entries a dead forwarder left pending are claimed by the others (XAUTOCLAIM)
once idle for `claim_idle`. A batch the endpoint rejects outright (400, ...) goes to a
dead-letter stream, `<stream>:forward:dead`, so one bad record never blocks the rest and
nothing is lost; a body too large is split before sending, and halved again on 413. Records
a 2xx answer reports as rejected (OTLP partial success) are counted and said, never retried,
as the OTLP specification requires. Authentication, not-found and redirect answers stop the
forwarder instead: they are configuration mistakes, and every entry stays pending for the
next run. Entries retention trimmed before any forwarder read them are lost past any retry:
Redis 7 counts them (XINFO), and they are counted and said. On a Redis Cluster each shard's
streams have their own consumer group, read on the server holding the shard.
"""

from __future__ import annotations

import http.client
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
from tracestream.lua import script_source
from tracestream.otlp_encoding import Encoded, RawEntry, encode_logs, encode_spans
from tracestream.query import resolve_flat_resources, tolerant_call
from tracestream.schema import StreamKeys, tolerant_text
from tracestream.settings import installing, shown_url
from tracestream.shards import POLL_INTERVAL, shards

DEFAULT_GROUP = "tracestream-forward"
DEFAULT_ENDPOINT = "http://localhost:4318"
DEAD_LETTER_SUFFIX = ":forward:dead"
DEAD_LETTER_MAX = 100_000  # per dead-letter stream, trimmed approximately: about this many newest kept
# Per stream, a hash of what left it and was lost after all, kept for `tracestream doctor`: records a
# partial success rejected, dead letters deleted past the cap, entries trimmed before they were read,
# and since when (ms).
LOSS_COUNTS_SUFFIX = ":forward:lost"
# A batch encoding larger is split: receivers refuse big bodies whole (the Collector past 20 MiB by
# default, others sooner), and a few more requests cost little. A 413 halves a request further.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# Wrong credentials or a wrong URL: retrying cannot help and dead-lettering would lose the stream's order.
FATAL_STATUSES = frozenset({401, 403, 404, 405, 407})
_FIRST_BACKOFF = 0.25
# A receiver's own Retry-After is honoured up to this. Without one, the backoff stops at `max_backoff`
# (5 s): a receiver that comes back is sent to within seconds, one that is down gets a request a turn.
LONGEST_RETRY_AFTER = 30.0
# How a keep-alive connection the server closed while idle fails, before anything reached the server:
# sent again at once. Anything else, a timeout above all, may have reached it, so it is an attempt.
STALE_CONNECTION = (BrokenPipeError, ConnectionResetError)  # http.client.RemoteDisconnected included


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
    max_backoff: float = 5.0
    shutdown_grace: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)
    start_at_end: bool = False
    progress_every: float = 10.0
    tls: Tls | None = None
    cluster: bool = False
    # Per signal, as OTEL_EXPORTER_OTLP_LOGS_ENDPOINT / _TRACES_ENDPOINT: full URLs, used as given.
    logs_endpoint: str | None = None
    traces_endpoint: str | None = None
    # Per signal, as OTEL_EXPORTER_OTLP_LOGS_HEADERS / _TRACES_HEADERS: replace `headers` for that signal.
    logs_headers: Mapping[str, str] | None = None
    traces_headers: Mapping[str, str] | None = None

    def target(self, signal: str) -> tuple[str, Mapping[str, str]]:
        """Where `signal` ("logs" or "spans") is posted, and with which headers."""
        if signal == "logs":
            url, headers, path = self.logs_endpoint, self.logs_headers, "/v1/logs"
        else:
            url, headers, path = self.traces_endpoint, self.traces_headers, "/v1/traces"
        return url or self.endpoint.rstrip("/") + path, self.headers if headers is None else headers


@dataclass
class Progress:
    logs: int = 0
    spans: int = 0
    claimed: int = 0
    retries: int = 0
    dead_lettered: int = 0
    rejected: int = 0  # records a 2xx answer said it dropped (OTLP partial success): not forwarded
    dead_letters_dropped: int = 0  # older dead letters trimmed past DEAD_LETTER_MAX
    trimmed: int = 0  # entries retention removed before any forwarder read them: lost

    def line(self, elapsed: float) -> str:
        rate = (self.logs + self.spans) / elapsed if elapsed > 0 else 0.0
        line = (
            f"forwarded {self.logs} logs, {self.spans} spans ({rate:,.0f}/s); claimed {self.claimed}, "
            f"retries {self.retries}, dead-lettered {self.dead_lettered}"
        )
        if self.rejected:
            line += f", {self.rejected} rejected by the endpoint"
        if self.dead_letters_dropped:
            line += f", {self.dead_letters_dropped} old dead letters deleted past the cap"
        if self.trimmed:
            line += f", {self.trimmed} trimmed by retention before being read (lost)"
        return line


@dataclass(frozen=True)
class Signal:
    """One stream, the server holding it, and where its records go."""

    stream: str
    encode: Callable[[Sequence[RawEntry]], Encoded]
    counter: str
    client: redis.Redis
    keys: StreamKeys  # its shard's keys, where the resources its entries name are kept


@dataclass(frozen=True)
class Response:
    status: int
    retry_after: float | None
    body: bytes
    content_type: str = ""
    location: str | None = None


class OtlpHttpClient:
    """POSTs protobuf to one URL over one persistent connection, reconnecting when the server closed it."""

    def __init__(self, url: str, timeout: float, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint {url!r} is not an http:// or https:// URL")
        self.url = url
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._netloc = parts.netloc
        self._timeout = timeout
        self._headers = {"Content-Type": "application/x-protobuf", **headers}
        self._connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> Response:
        """Raises OSError (or http.client.HTTPException) when no answer came."""
        reused = self._connection is not None
        try:
            return self._exchange(body)
        except STALE_CONNECTION:
            if not reused:
                raise
        return self._exchange(body)  # on a new connection: the server had closed the kept one

    def _exchange(self, body: bytes) -> Response:
        connection = self._connection or self._connect()
        try:
            connection.request("POST", self._path, body, self._headers)
            answer = connection.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if answer.will_close:
            self.close()
        return Response(
            answer.status,
            _retry_after(answer.getheader("Retry-After")),
            data,
            answer.getheader("Content-Type", ""),
            answer.getheader("Location"),
        )

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
        self._answers = _answer_classes()
        self._http = {signal: _client(settings, signal) for signal in ("logs", "spans")}
        self._outages: dict[str, tuple[float, int]] = {}  # per URL: since when, retries so far
        self._warnings: dict[str, str] = {}  # per URL: the last partial-success message said
        self._trims_said: set[str] = set()  # streams whose first entries trimmed unread were said
        self._trims_countable = True  # until Redis shows it keeps no count of entries added (before 7.0)
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
            f"from {shown_url(settings.redis_url)} to {self._http['logs'].url} and {self._http['spans'].url} "
            f"as {settings.group}/{settings.consumer}"
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
        for client in self._http.values():
            client.close()
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
                    Signal(keys.logs, encode_logs, "logs", client, keys),
                    Signal(keys.spans, encode_spans, "spans", client, keys),
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
        """Every shard is read without waiting; with nothing new, one shard then blocks in XREADGROUP,
        several (a cluster) are polled until one has entries."""
        pairs = self._shards
        if sum(self._read(logs, spans) for logs, spans in pairs):
            return
        if len(pairs) == 1:
            self._read(*pairs[0], block=int(self.settings.block * 1000))
        else:
            self._stop.wait(POLL_INTERVAL)

    def _read(self, logs: Signal, spans: Signal, block: int | None = None) -> int:
        """Entries read and forwarded. Without waiting, the read shares a transaction with counting what
        retention trimmed unread, so it never reads past a gap uncounted; a blocked read starts caught up."""
        settings = self.settings
        counted = block is None and self._trims_countable
        pipe = logs.client.pipeline(transaction=counted)
        if counted:
            for signal in (logs, spans):
                keys = (signal.stream, signal.stream + LOSS_COUNTS_SUFFIX)
                pipe.eval(script_source("forward_trimmed"), 2, *keys, settings.group, int(time.time() * 1000))
        pipe.xreadgroup(
            settings.group,
            settings.consumer,
            {logs.stream: ">", spans.stream: ">"},
            count=settings.batch_size,
            block=block,
        )
        *trimmed, replies = pipe.execute()
        for signal, count in zip((logs, spans), trimmed, strict=False):
            self._said_trimmed(signal, int(count))
        got = 0
        # A map under RESP3, a list of pairs under RESP2.
        read = replies.items() if isinstance(replies, dict) else replies or []
        for stream, entries in cast("Iterable[tuple[bytes, list[RawEntry]]]", read):
            got += len(entries)
            self._forward(self._by_stream[stream], entries)
        return got

    def _said_trimmed(self, signal: Signal, count: int) -> None:
        """Entries gone before any forwarder read them: said once per stream, then counted in progress."""
        if count < 0:
            if self._trims_countable:
                self._trims_countable = False
                self._report(
                    "this Redis keeps no count of the entries added to a stream (Redis 7.0 does): entries "
                    "retention trims before a forwarder reads them are lost without a count; size "
                    "retention for the longest outage (docs/scale-out.md)"
                )
            return
        self.progress.trimmed += count
        if count and signal.stream not in self._trims_said:
            self._trims_said.add(signal.stream)
            self._report(
                f"{count} {signal.counter} of {signal.stream} were trimmed by retention (max_entries, "
                f"max_age) before a forwarder read them: lost, counted in "
                f"{signal.stream + LOSS_COUNTS_SUFFIX}; the progress line counts any more; size retention "
                f"for the longest outage (docs/scale-out.md)"
            )

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
        for piece, encoded in _pieces(signal, entries, MAX_REQUEST_BYTES):
            self._outbox.put((signal, piece, encoded))

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
            refused = self._send(signal, entries, encoded)
            if refused is None:
                return  # stopping while the endpoint still refuses: the entries stay pending for others
            dead += refused
        if dead:
            self._dead_letter(signal, dead)
        signal.client.xack(signal.stream, self.settings.group, *[entry_id for entry_id, _ in entries])

    def _send(
        self, signal: Signal, entries: Sequence[RawEntry], encoded: Encoded
    ) -> list[tuple[RawEntry, str]] | None:
        """The entries the endpoint refused, to dead-letter; None when stopping before it answered."""
        client = self._http[signal.counter]
        response = self._post(client, encoded.body)
        if response is None:
            return None
        skipped = {index for index, _ in encoded.rejected}
        sent = [entry for index, entry in enumerate(entries) if index not in skipped]
        if response.status == 413 and len(sent) > 1:
            # A receiver with a smaller limit than ours: each half may fit, one record alone always tries.
            refused: list[tuple[RawEntry, str]] = []
            for piece, smaller in _pieces(signal, sent, len(encoded.body) // 2):
                more = self._send(signal, piece, smaller)
                if more is None:
                    return None
                refused += more
            return refused
        if response.status >= 300:
            reason = f"HTTP {response.status}: {_excerpt(response.body)}"
            return [(entry, reason) for entry in sent]
        self._count_accepted(signal, client.url, encoded.count, response)
        return []

    def _count_accepted(self, signal: Signal, url: str, count: int, response: Response) -> None:
        """A 2xx may still drop records (OTLP partial success): counted and said, not retried (the spec)."""
        rejected, message = _partial_success(self._answers[signal.counter], response)
        rejected = min(rejected, count)
        setattr(self.progress, signal.counter, getattr(self.progress, signal.counter) + count - rejected)
        self.progress.rejected += rejected
        if rejected:
            _count_loss(signal, "rejected", rejected)
        if not (rejected or message) or self._warnings.get(url) == message:
            return
        self._warnings[url] = message
        what = f"rejected {rejected} of {count} {signal.counter}" if rejected else "accepted the batch"
        self._report(
            f"{url} {what}: {message or '(no error_message)'}; not retried (OTLP partial success), "
            f"said again when the message changes"
        )

    def _post(self, client: OtlpHttpClient, body: bytes) -> Response | None:
        """The final answer for a batch: retried while the endpoint is busy, down or failing."""
        backoff = min(_FIRST_BACKOFF, self.settings.max_backoff)
        while True:
            retry_after: float | None = None
            try:
                response = client.post(body)
            except (OSError, http.client.HTTPException) as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                _refuse_misconfiguration(client.url, response)
                if not _retryable(response.status):
                    self._outage_over(client.url)
                    return response
                problem, retry_after = f"HTTP {response.status}", response.retry_after
            delay = backoff if retry_after is None else min(LONGEST_RETRY_AFTER, retry_after)
            if self._stop.is_set() and time.monotonic() + delay > self._stop_deadline:
                self._report(f"stopping with a batch undelivered ({problem}); it stays pending")
                return None
            self.progress.retries += 1
            self._outage(client.url, problem, delay)
            self._wait(delay)
            backoff = min(self.settings.max_backoff, backoff * 2)

    def _outage(self, url: str, problem: str, delay: float) -> None:
        """Each outage says its cause once, when it starts; the progress line counts the retries."""
        since, retries = self._outages.get(url, (time.monotonic(), 0))
        if not retries:
            self._report(
                f"{url}: {problem}; retrying in {delay:.1f}s, backing off to "
                f"{self.settings.max_backoff:.0f}s until it answers"
            )
        self._outages[url] = (since, retries + 1)

    def _outage_over(self, url: str) -> None:
        if url in self._outages:
            since, retries = self._outages.pop(url)
            self._report(f"{url} answers again after {time.monotonic() - since:.1f}s and {retries} retries")

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
            pipe.xadd(stream, fields)
        # Trimmed apart from XADD, whose reply cannot say what it trimmed: XTRIM counts what is lost.
        pipe.xtrim(stream, maxlen=DEAD_LETTER_MAX, approximate=True)
        dropped = int(pipe.execute()[-1])
        self.progress.dead_lettered += len(dead)
        self._report(f"{len(dead)} {signal.counter} not forwarded ({dead[0][1]}); kept in {stream}")
        if dropped:
            self.progress.dead_letters_dropped += dropped
            _count_loss(signal, "dead_letters_deleted", dropped)
            self._report(
                f"{stream} is past its cap of {DEAD_LETTER_MAX:,} dead letters: the oldest {dropped} "
                f"were deleted; read them out sooner (docs/scale-out.md)"
            )


def _count_loss(signal: Signal, kind: str, count: int) -> None:
    """Losses outlive the forwarder's output: `doctor` reads them until someone deletes the hash."""
    pipe = signal.client.pipeline(transaction=False)
    key = signal.stream + LOSS_COUNTS_SUFFIX
    pipe.hsetnx(key, "since_ms", int(time.time() * 1000))
    pipe.hincrby(key, kind, count)
    pipe.execute()


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _refuse_misconfiguration(url: str, response: Response) -> None:
    """Wrong credentials, URL or scheme: retrying cannot help, and dead-lettering would empty the stream."""
    if 300 <= response.status < 400:
        raise ForwardError(
            f"{url} answered HTTP {response.status}, redirecting to {response.location or '(no Location)'}; "
            f"forward does not follow redirects: point the endpoint there"
        )
    if response.status in FATAL_STATUSES:
        raise ForwardError(
            f"{url} answered HTTP {response.status}: {_excerpt(response.body)}; "
            f"check the endpoint and its credentials"
        )


def _pieces(
    signal: Signal, entries: Sequence[RawEntry], limit: int
) -> list[tuple[Sequence[RawEntry], Encoded]]:
    """Requests of at most `limit` bytes, or one entry each: a receiver refuses an over-large body whole."""
    encoded = signal.encode(entries)
    if len(encoded.body) <= limit or len(entries) < 2:
        return [(entries, encoded)]
    middle = len(entries) // 2
    return _pieces(signal, entries[:middle], limit) + _pieces(signal, entries[middle:], limit)


def _client(settings: ForwardSettings, signal: str) -> OtlpHttpClient:
    url, headers = settings.target(signal)
    return OtlpHttpClient(url, settings.timeout, headers)


AnswerClass = Any  # a generated ExportLogsServiceResponse / ExportTraceServiceResponse class


def _answer_classes() -> dict[str, tuple[AnswerClass, str]]:
    """Per signal, its 2xx answer and rejected-count field; opentelemetry-proto is in the otlp extra."""
    try:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
    except ImportError:
        raise ValueError(
            f"tracestream forward needs the otlp extra (opentelemetry-proto): {installing('otlp')}"
        ) from None
    return {
        "logs": (ExportLogsServiceResponse, "rejected_log_records"),
        "spans": (ExportTraceServiceResponse, "rejected_spans"),
    }


def _partial_success(answer: tuple[AnswerClass, str], response: Response) -> tuple[int, str]:
    """(records rejected, the receiver's message) from a 2xx body, protobuf or JSON as OTLP/HTTP allows."""
    if not response.body:
        return 0, ""
    message_class, rejected_field = answer
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError

    try:
        if response.content_type.split(";")[0].strip().lower() == "application/json":
            parsed = json_format.Parse(response.body, message_class(), ignore_unknown_fields=True)
        else:
            parsed = message_class.FromString(response.body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as error:
        return 0, f"unreadable {message_class.__name__} ({error}); taken as accepted"
    partial = parsed.partial_success
    return int(getattr(partial, rejected_field)), partial.error_message


def _excerpt(body: bytes) -> str:
    text = body[:200].decode("utf-8", "replace").strip()
    return text or "(no body)"


# ---------------------------------------------------------------------------
# lag and losses, for `tracestream doctor`


@dataclass(frozen=True)
class StreamLag:
    stream: str
    group: str
    consumers: int
    pending: int
    oldest_pending_age: float | None  # seconds since the oldest unacknowledged entry was written
    undelivered: int | None  # entries still there that no forwarder has read yet; None when Redis cannot tell
    trimmed_unread: int | None  # entries retention removed before the group read them, not yet counted


def _signal_streams(client: Client, stream: str) -> Iterator[tuple[redis.Redis, str]]:
    """The log and span streams of every shard, each with the server holding it."""
    for shard in shards(client, stream):
        for key in (shard.keys.logs, shard.keys.spans):
            yield shard.client, key


def forwarder_lag(client: Client, stream: str, group: str = DEFAULT_GROUP) -> list[StreamLag]:
    """How far the forwarders of `group` are behind, per stream of every shard; empty when none ran."""
    found = []
    for node, key in _signal_streams(client, stream):
        try:
            groups = node.xinfo_groups(key)
        except redis.ResponseError:
            continue  # no such stream
        info = next((g for g in groups if reply_text(g["name"]) == group), None)
        if info is None:
            continue
        summary = node.xpending(key, group)
        oldest = summary.get("min")
        age = time.time() - int(reply_text(oldest).split("-")[0]) / 1000 if oldest else None
        lag = info.get("lag")
        trimmed = trimmed_unread(tolerant_call(node, "XINFO STREAM", key), info)
        found.append(
            StreamLag(
                stream=key,
                group=group,
                consumers=int(info["consumers"]),
                pending=int(summary["pending"]),
                oldest_pending_age=age,
                undelivered=int(lag) - (trimmed or 0) if lag is not None else None,
                trimmed_unread=trimmed,
            )
        )
    return found


def trimmed_unread(stream: Mapping[str, Any], group: Mapping[str, Any]) -> int | None:
    """What lua/forward_trimmed.lua would count, from XINFO STREAM and the group's XINFO GROUPS:
    Redis's own lag still counts those entries as unread. None where Redis cannot tell."""
    added, read, first = stream.get("entries-added"), group.get("entries-read"), stream.get("first-entry")
    if added is None or read is None:
        return None
    if first and _stream_id(stream["max-deleted-entry-id"]) >= _stream_id(first[0]):
        return None
    return max(0, int(added) - int(stream["length"]) - int(read))


def _stream_id(text: str | bytes) -> tuple[int, int]:
    milliseconds, _, sequence = reply_text(text).partition("-")
    return int(milliseconds), int(sequence)


def _raw(response: Any, **options: Any) -> Any:
    return response


@dataclass(frozen=True)
class ForwardLosses:
    """What forwarders could not deliver from one stream: kept as dead letters, or lost."""

    stream: str
    dead_letters: int  # kept in `stream + DEAD_LETTER_SUFFIX`
    newest_dead_letter: str  # its `forward_error`, "" when none are kept
    rejected: int  # records a 2xx answer said it dropped
    dead_letters_deleted: int  # dead letters trimmed past DEAD_LETTER_MAX
    trimmed: int  # entries retention removed before a forwarder read them
    since_ms: int | None  # when the first loss was counted


def forward_losses(client: Client, stream: str) -> list[ForwardLosses]:
    """Per stream of every shard that has any: dead letters kept, and records lost after all."""
    found = []
    for node, key in _signal_streams(client, stream):
        pipe = node.pipeline(transaction=False)
        pipe.xlen(key + DEAD_LETTER_SUFFIX)
        pipe.hgetall(key + LOSS_COUNTS_SUFFIX)
        kept, counts = pipe.execute()
        lost = tolerant_text(counts)
        if not kept and not lost:
            continue
        found.append(
            ForwardLosses(
                stream=key,
                dead_letters=int(kept),
                newest_dead_letter=_newest_reason(node, key + DEAD_LETTER_SUFFIX) if kept else "",
                rejected=_count(lost.get("rejected")),
                dead_letters_deleted=_count(lost.get("dead_letters_deleted")),
                trimmed=_count(lost.get("trimmed")),
                since_ms=_count(lost.get("since_ms")) or None,
            )
        )
    return found


def _newest_reason(client: redis.Redis, dead_letters: str) -> str:
    """The newest dead letter's reason; its other fields are the entry's, whatever their bytes."""
    newest = tolerant_text(tolerant_call(client, "XREVRANGE", dead_letters, "+", "-", "COUNT", 1))
    reason = newest[0][1].get("forward_error", "") if newest else ""
    return str(reason) or "(no reason kept)"


def _count(text: str | None) -> int:
    """A count as stored; anything else another program left there reads as none."""
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0
