"""Redis Stream exporters for OTel log records and spans.

Each batch goes to Redis in one round trip: a server-side script appends every entry,
updates the per-trace index and trims by age. The launcher builds exporters with no
arguments, so they read their settings from the environment.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import redis
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from redis.exceptions import NoScriptError

from tracestream import schema
from tracestream._internal_log import internal_logger
from tracestream.connection import CLUSTER_ERRORS, Client, ProcessLocalClient, Tls, node_for, refresh_topology
from tracestream.disk_spool import Spool, spool_for
from tracestream.export_status import ERROR_FIELD, LOSS_FIELD, STATUS_TTL, status_key
from tracestream.exporters import encoding, trace_summaries
from tracestream.exporters.pending import PendingLogRecord
from tracestream.exporters.shaping import RowShaper
from tracestream.exporters.write_health import WriteHealth, shared_spells
from tracestream.lua import script_sha, script_source
from tracestream.redis_errors import WHOLE_STREAMS, describe, evictable_keys, is_transient, setup_problem
from tracestream.schema import writer_and_counter
from tracestream.settings import Settings

# Rows per script call: large batches share one round trip, yet Redis is never blocked long.
ROWS_PER_CALL = 512
# How long trace index keys and `<stream>:written:<prefix>` outlive a writer's last call when
# `max_age` is 0 (no age limit); else `max_age`, so neither outweighs the records it serves.
UNBOUNDED_AGE_TTL_S = 7 * 86400
# A writer adds its shard to the registry again this often: a failover to a replica the SADD
# had not reached yet (replication is asynchronous) must not hide a shard from readers for long.
REGISTER_EVERY_S = 60.0

Item = TypeVar("Item")
ScriptCall = list[str | int | bytes]  # the keys, then the arguments, of one script call
NamedCall = tuple[str, int, ScriptCall]  # a script's name, its number of keys, and one call of it
NEVER_RAN_AT = 14  # the append script's ARGV[15]
# Its error reply to a call held back behind the round trip's previous call, which stored nothing.
HELD_BACK = "HELDBACK "
# The append script's reply when the stream was gone under a writer that had stored records in it.
VANISHED = "VANISHED "
# Its reply when the writer's mark was below where the writer left it: `FORGOT <count> <stream>`.
FORGOT = "FORGOT "
# What scripts said they could not do, by Redis: a process's log and span writers meet the same
# (a right their user lacks), and each is said once a process.
_PROBLEMS_TOLD: set[str] = set()
_PROBLEMS_LOCK = threading.Lock()
_DENIED_COMMAND = re.compile(r"no permissions to run the '([\w|]+)' command")


def _held_back(result: object) -> bool:
    """The append script's reply to a call whose round trip's previous call stored nothing."""
    return isinstance(result, redis.ResponseError) and str(result).startswith(HELD_BACK)


def _never_ran(call: NamedCall) -> NamedCall:
    """An append call that met NOSCRIPT ran nothing, while a later call of the same round trip ran
    (another client loaded the script in between) and moved the writer's mark past its rows: they
    are stored whatever the mark says (lua/append.lua). Were some stored by an earlier attempt of
    the batch, they are stored twice, which readers drop by record id; never lost."""
    name, key_count, arguments = call
    if name != "append":
        return call
    arguments = list(arguments)
    arguments[key_count + NEVER_RAN_AT] = "1"
    return name, key_count, arguments


class ResourceCache:
    """Serialise each resource once, not once per record."""

    def __init__(self) -> None:
        self._resource: Resource | None = None
        self._encoded = encoding.EncodedResource("{}", "")

    def get(self, resource: Resource) -> encoding.EncodedResource:
        if resource is not self._resource:
            self._encoded = encoding.EncodedResource.of(resource)
            self._resource = resource
        return self._encoded

    def get_service(self) -> str:
        """The service of the last resource seen, once anything was encoded."""
        return self._encoded.service or "unknown_service"


Encoder = Callable[[Item, str, ResourceCache], list[str]]


class StreamWriter(Generic[Item]):
    """Turns items into entries of one stream and appends a whole batch in one call per shard.

    Encoding (`encode`) and writing (`write_rows`) are separate so the batch queue can
    spool encoded rows while Redis is away and replay them, record ids unchanged.
    """

    def __init__(
        self,
        settings: Settings,
        stream_of: Callable[[schema.StreamKeys], str],
        field_names: tuple[str, ...],
        member_prefix: str,
        encode: Encoder[Item],
        *,
        digest: bool = False,
        error_issues: bool = False,
        trace_list: bool = False,
    ) -> None:
        self.settings = settings
        self.signal = "logs" if member_prefix == schema.INDEX_LOG else "spans"
        self.stream = stream_of(schema.StreamKeys(settings.stream))
        self._stream_of = stream_of
        sharded = settings.shard_by == "service"
        self._keyspace = schema.Keyspace(settings.stream, settings.redis_cluster, sharded)
        self._digest = digest
        self._trace_list = trace_list
        positions = [field_names.index(name) + 1 for name in schema.DIGEST_FIELDS] if digest else []
        self._digest_positions = schema.dump_json(positions)
        self._member_prefix = member_prefix
        self._error_rows = encoding.ErrorRows(field_names) if error_issues else None
        self._encode = encode
        self._shaper = RowShaper(field_names, settings)
        self._trace_pos = field_names.index("trace_id")
        self._service_pos = field_names.index("service")
        self._resource_pos = field_names.index("resource")
        self._rid_pos = field_names.index("rid")
        self._names_json = schema.dump_json(field_names)
        self._ids = schema.RecordIds()
        self._resources = ResourceCache()
        self._client = ProcessLocalClient(
            settings.redis_url, settings.redis_timeout, Tls.of(settings), cluster=settings.redis_cluster
        )
        self._registered: dict[str, float] = {}  # shard -> when this process last added it to the registry
        self._marks: dict[str, _Mark] = {}  # stream -> where this writer left its mark there
        self.health = WriteHealth()
        self._spells = shared_spells(self._client.shown_url, settings.stream)
        self._last_error = ""  # why the last write failed: the status carries it to doctor while failing
        self._last_loss = ""  # the last loss in Redis told: the status carries it to doctor for good
        self._redis_ahead_ms: int | None = None  # Redis's clock less ours, as the last append call found it

    @property
    def failing_because(self) -> str:
        """Why writes fail, while they do; "" once Redis takes them."""
        return self._last_error if self.health.failing else ""

    def encode(self, items: Sequence[Item]) -> list[list[str]]:
        """Entries' values in schema order, within the size limits; runs on the export worker."""
        ids, resources = self._ids, self._resources
        return self._shaper.shape_rows([self._encode(item, ids.next(), resources) for item in items])

    def write(self, items: Sequence[Item]) -> bool:
        """Append a batch; False (never an exception) when Redis did not take it."""
        try:
            return self.write_rows(self.encode(items))
        except (*CLUSTER_ERRORS, OSError) as error:  # refused as they are: only a batch queue sets them aside
            self._report_failure(error)
            return False

    def write_rows(self, rows: Sequence[list[str]]) -> bool:
        """Append encoded rows; False when Redis is out of reach for now (try again later), the
        error itself when Redis refuses them as they are (the batch queue isolates those rows).

        Rows Redis already stored (a batch of several script calls, or several shards of a
        cluster, that failed partway; a lost reply) are skipped when the batch is sent again.
        """
        if not rows:
            return True
        client: Client | None = None
        try:
            client = self._client.get()
            for keys, shard_rows in self._by_shard(rows).items():
                self._write_shard(client, keys, shard_rows)
        except (*CLUSTER_ERRORS, OSError) as error:
            if client is not None:
                refresh_topology(client)  # a failed-over shard has a new master
            if not is_transient(error):
                raise
            self._report_failure(error)
            return False
        if self.health.taken():
            self._report_recovery()
        return True

    def _by_shard(self, rows: Sequence[list[str]]) -> dict[schema.StreamKeys, list[list[str]]]:
        keyspace = self._keyspace
        if not keyspace.shard_by_service:
            return {keyspace.shard(""): list(rows)}
        groups: dict[schema.StreamKeys, list[list[str]]] = {}
        position = self._service_pos
        for row in rows:
            groups.setdefault(keyspace.shard(row[position]), []).append(row)
        return groups

    def _write_shard(self, client: Client, keys: schema.StreamKeys, rows: Sequence[list[str]]) -> None:
        """Every key of a shard is on one server: one round trip of script calls to it, one
        call per ROWS_PER_CALL rows.

        The calls are plain EVALSHAs: a pipeline of registered scripts would ask SCRIPT EXISTS
        first, one more round trip per batch. A server without the script (restarted, or a
        promoted replica) answers NOSCRIPT; it is loaded and only those calls are sent again
        (another process may have loaded it halfway through ours).
        """
        if self._keyspace.cluster:
            self._register(client, keys.logs)
        script_keys = [self._stream_of(keys)]
        if self._digest:
            script_keys += [keys.digest, keys.digest_sizes, keys.digest_lines]
        parts = [rows[start : start + ROWS_PER_CALL] for start in range(0, len(rows), ROWS_PER_CALL)]
        calls: list[NamedCall] = [
            ("append", len(script_keys), [*script_keys, *self._script_args(keys, part, after)])
            for part, after in zip(parts, self._previous_counters(parts), strict=True)
        ]
        if self._trace_list:
            listed = trace_summaries.script_calls(
                keys, rows, self.settings.max_entries, self._ttl(), ROWS_PER_CALL, self._redis_ahead_ms
            )
            calls += [("trace_list", 1, call) for call in listed]
        node = node_for(client, keys.logs)
        missing = self._call_script(node, calls)
        if missing:
            for name in {name for name, _, _ in missing}:
                node.script_load(script_source(name))
            if self._call_script(node, missing):
                raise NoScriptError("a script is missing right after SCRIPT LOAD")
        self._leave_mark(self._stream_of(keys), rows)

    def _leave_mark(self, stream: str, rows: Sequence[list[str]]) -> None:
        """Where the stream's mark for these rows' writer stands now that Redis took them."""
        position = self._rid_pos
        first, last = writer_and_counter(rows[0][position]), writer_and_counter(rows[-1][position])
        if first is None or last is None or first[0] != last[0]:
            return
        writer, counter = last
        before = self._marks.get(stream)
        if before is not None and before.writer == writer:  # older rows replayed leave it where it was
            counter = max(counter, before.value - 1)
        self._marks[stream] = _Mark(writer, counter + 1, time.monotonic())

    def _expected_mark(self, stream: str, rows: Sequence[list[str]]) -> int:
        """Where the mark of these rows' writer should stand, when this exporter left it there
        and it cannot have expired since; else 0, which expects nothing."""
        mark = self._marks.get(stream)
        if mark is None or time.monotonic() - mark.left_at >= self._ttl() - 1:
            return 0
        first = writer_and_counter(rows[0][self._rid_pos])
        return mark.value if first is not None and first[0] == mark.writer else 0

    def _previous_counters(self, parts: Sequence[Sequence[list[str]]]) -> list[str]:
        """For each call of a round trip, the last counter of the previous call of its first row's
        writer, which the append script holds the call back behind ("" for none); only a call whose
        rows are all that writer's moves its mark."""
        position = self._rid_pos
        last_of: dict[str, int] = {}
        previous = []
        for part in parts:
            first, last = writer_and_counter(part[0][position]), writer_and_counter(part[-1][position])
            previous.append(str(last_of.get(first[0], "")) if first is not None else "")
            if first is not None and last is not None and first[0] == last[0]:
                last_of[first[0]] = last[1]
        return previous

    def _call_script(self, node: redis.Redis, calls: list[NamedCall]) -> list[NamedCall]:
        """One round trip; returns the calls the server could not run for want of their script, and
        those held back behind them, the ones followed by a call that ran marked as never run (see
        `_never_ran`). The first other error is raised: a call held back behind a call that ran
        (the mark evicted meanwhile) raises too, so the batch is sent again later."""
        pipe = node.pipeline(transaction=False)
        for name, key_count, arguments in calls:
            pipe.evalsha(script_sha(name), key_count, *arguments)
        results = pipe.execute(raise_on_error=False)
        not_run = [isinstance(result, NoScriptError) or _held_back(result) for result in results]
        last_ran = max((index for index, skipped in enumerate(not_run) if not skipped), default=-1)
        missing: list[NamedCall] = []
        for index, (call, result) in enumerate(zip(calls, results, strict=True)):
            if isinstance(result, NoScriptError) or (missing and _held_back(result)):
                missing.append(_never_ran(call) if index < last_ran else call)
            elif isinstance(result, Exception):
                raise result
            else:
                self._learn_redis_clock(call, result)
                self._tell_problems(node, result)
        return missing

    def _learn_redis_clock(self, call: NamedCall, result: object) -> None:
        """An append call answers with Redis's clock first: the trace list's age limit counts back
        from it, so a host whose clock runs ahead never trims other writers' summaries."""
        clock = result[0] if call[0] == "append" and isinstance(result, list) and result else None
        if isinstance(clock, int) and clock:
            self._redis_ahead_ms = clock - int(time.time() * 1000)

    def _tell_problems(self, node: redis.Redis, result: object) -> None:
        """Say, once each, what a script call could not do though it stored the records: it returns
        a count when all went well, else a line per problem."""
        where = self._client.shown_url
        for told in result if isinstance(result, list) else [result]:
            if not isinstance(told, (bytes, str)):
                continue
            problem = told.decode(errors="replace") if isinstance(told, bytes) else told
            line = _line_for(node, problem)
            if problem.startswith((FORGOT, VANISHED)):
                self._last_loss = line
            if _first_time(f"Redis at {where}: {_forgetting(problem) or line}"):
                internal_logger.warning("Redis at %s: %s", where, line)

    def _register(self, client: Client, shard: str) -> None:
        """Readers find shards in the registry: added before the shard's first rows, then now and then.

        Only the first addition must succeed; a later one that fails (the registry's master is
        down) does not hold up writes to a healthy shard, and is tried again later.
        """
        now = time.monotonic()
        last = self._registered.get(shard)
        if last is not None and now - last < REGISTER_EVERY_S:
            return
        self._registered[shard] = now
        registry = self._keyspace.registry
        try:
            node_for(client, registry).sadd(registry, shard)
        except (*CLUSTER_ERRORS, OSError):
            if last is None:
                del self._registered[shard]
                raise

    def _script_args(
        self, keys: schema.StreamKeys, rows: Sequence[list[str]], after: str = ""
    ) -> list[str | int | bytes]:
        settings = self.settings
        resource = rows[0][self._resource_pos]  # the call's resource, sent once
        stream = self._stream_of(keys)
        marks = f"{stream}:written:"
        errors: list[str | int | bytes] = []
        if self._error_rows is not None:  # ERROR+ rows: kept apart from the stream's trimming, and issues
            side = self._error_rows.side(rows)
            errors = [side, keys.errors, settings.errors_maxlen, keys.issue(""), keys.issues]
            errors.append(schema.ISSUE_TTL_S)
        return [
            settings.max_entries,
            int(settings.max_age * 1000),
            self._ttl(),
            keys.trace_index(""),
            self._member_prefix,
            self._trace_pos,
            self._names_json,
            self._dump_without(resource, rows),
            self._digest_positions,
            self._resource_pos,
            resource,
            self._rid_pos,
            marks,
            keys.resource(""),
            "",  # NEVER_RAN_AT: set only when the call is sent again after NOSCRIPT
            self._expected_mark(stream, rows),
            after,
            *errors,
        ]

    def _ttl(self) -> int:
        max_age = self.settings.max_age
        return max(1, int(max_age)) if max_age else UNBOUNDED_AGE_TTL_S

    def _dump_without(self, resource: str, rows: Sequence[list[str]]) -> bytes:
        """The rows as JSON, "" standing for `resource` (the script puts it back).

        The rows are lent, not copied: they are restored before anyone else sees them (a batch
        Redis did not take goes to the spool whole).
        """
        position = self._resource_pos
        lent = [row for row in rows if row[position] == resource]
        for row in lent:
            row[position] = ""
        try:
            return schema.dump_rows(list(rows))
        finally:
            for row in lent:
                row[position] = resource

    def _report_failure(self, error: Exception) -> None:
        fix = setup_problem(error, cluster=self._client.cluster)
        self._last_error = describe(error) + (f" ({fix})" if fix else "")
        if self.health.failed() and self._spells.starts(self.signal, self._last_error):
            internal_logger.warning(
                "cannot write to Redis at %s: %s; will retry", self._client.shown_url, self._last_error
            )

    def _report_recovery(self) -> None:
        if self._spells.ends(self.signal):
            internal_logger.warning("Redis at %s takes records again", self._client.shown_url)

    def make_spool(self) -> Spool | None:
        """Where rows go while Redis is away; None when `spool_max_bytes` is 0."""
        return spool_for(self.settings, self.stream)

    def publish_status(self, signal: str, status: dict[str, int]) -> None:
        """Refresh this process's status hash, which `tracestream doctor` reads. While writes fail it
        carries why, whenever Redis still takes the status itself (a command a script needs renamed
        or refused by the ACL); when it does not (out of memory, a replica), doctor reads the server.
        Refreshed every few seconds, it also ends a failing spell of a writer with nothing more to write."""
        if self.health.recovered():
            self._report_recovery()
        service = self.settings.service_name or self._resources.get_service()
        key = status_key(self.settings.stream, service, socket.gethostname(), os.getpid())
        fields: dict[str, int | str] = {f"{signal}.{name}": value for name, value in status.items()}
        fields[f"{signal}.{ERROR_FIELD}"] = self.failing_because
        fields[f"{signal}.{LOSS_FIELD}"] = self._last_loss
        fields["updated_ms"] = int(time.time() * 1000)
        try:
            pipe = self._client.get().pipeline(transaction=False)
            for name, value in fields.items():
                pipe.hset(key, name, value)
            pipe.expire(key, STATUS_TTL)
            pipe.execute()
        except redis.exceptions.NoPermissionError as error:  # the records go in; doctor never sees them
            where = self._client.shown_url
            if _first_time(f"Redis at {where} refuses the status"):
                denied = _DENIED_COMMAND.search(str(error))
                internal_logger.warning(
                    "Redis at %s refuses this process's status (%s): `tracestream doctor` cannot show "
                    "this process; docs/security.md lists the rights",
                    where,
                    f"the URL's user lacks +{denied.group(1)}" if denied else describe(error),
                )
        except (*CLUSTER_ERRORS, OSError):
            pass  # best effort: the next refresh, or the next export, tells the story

    def close(self) -> None:
        self._spells.ends(self.signal)
        self._client.close()


def _first_time(problem: str) -> bool:
    with _PROBLEMS_LOCK:
        if problem in _PROBLEMS_TOLD:
            return False
        _PROBLEMS_TOLD.add(problem)
        return True


@dataclass(frozen=True)
class _Mark:
    writer: str  # the record ids' prefix
    value: int  # the counter of the writer's next record
    left_at: float  # time.monotonic()


def _maxmemory_policy(node: redis.Redis) -> str:
    """ "" where this user may not read it (one CONFIG GET: a producer user may not)."""
    try:
        return str(node.config_get("maxmemory-policy").get("maxmemory-policy", ""))
    except (*CLUSTER_ERRORS, OSError):
        return ""


def _forgetting(problem: str) -> str | None:
    """A forgetting is told once a stream, whatever its count: an evicting maxmemory-policy takes
    the mark again and again, each time with a larger count, and nothing need be lost."""
    if problem.startswith(FORGOT):
        return FORGOT + problem.removeprefix(FORGOT).split(" ", 1)[1]
    return None


def _line_for(node: redis.Redis, problem: str) -> str:
    if problem.startswith(VANISHED):
        return _vanished(node, problem.removeprefix(VANISHED))
    if problem.startswith(FORGOT):
        count, stream = problem.removeprefix(FORGOT).split(" ", 1)
        return _forgotten(node, stream, int(count))
    return problem


def _forgotten(node: redis.Redis, stream: str, count: int) -> str:
    """The line for a Redis that forgot records it had taken: its mark for this writer went back."""
    records = "1 record" if count == 1 else f"{count} records"
    policy = _maxmemory_policy(node)
    evicted = f", or the mark alone evicted (maxmemory-policy {policy})" if evictable_keys(policy) else ""
    return (
        f"{stream!r} lost up to {records} this process had stored there: Redis forgot them (restarted "
        f"without persistence, a replica behind its master took over, or FLUSHALL/FLUSHDB){evicted}"
    )


def _vanished(node: redis.Redis, stream: str) -> str:
    """The line for a stream gone under its writer, naming the eviction policy when this user may
    read it."""
    policy = _maxmemory_policy(node)
    evictable = evictable_keys(policy)
    if not policy:
        cause = "evicted (an allkeys-* maxmemory-policy lets Redis) or deleted"
    elif evictable == WHOLE_STREAMS:
        cause = f"most likely evicted: maxmemory-policy {policy} lets Redis evict {evictable} when full"
    else:
        cause = f"deleted (maxmemory-policy {policy} evicts {evictable or 'nothing'}, never a stream)"
    return f"{stream!r} was gone, with the records this process had written to it: {cause}"


LogItem = ReadableLogRecord | ReadWriteLogRecord | PendingLogRecord


def _encode_log(item: LogItem, record_id: str, resources: ResourceCache) -> list[str]:
    if isinstance(item, (ReadableLogRecord, ReadWriteLogRecord)):
        return encoding.otel_log_values(item, record_id, resources.get(item.resource or Resource.get_empty()))
    return item.stream_values(record_id, resources.get)


def _logs_of(keys: schema.StreamKeys) -> str:
    return keys.logs


def _spans_of(keys: schema.StreamKeys) -> str:
    return keys.spans


def _encode_span(span: ReadableSpan, record_id: str, resources: ResourceCache) -> list[str]:
    return encoding.span_values(span, record_id, resources.get(span.resource))


class RedisStreamLogExporter(LogRecordExporter):
    """Writes OTel log records to the log stream and the trace index."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings.load()
        self._writer = StreamWriter(
            settings,
            _logs_of,
            schema.LOG_FIELDS,
            schema.INDEX_LOG,
            _encode_log,
            digest=True,
            error_issues=True,
        )

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        ok = self._writer.write(batch)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    @property
    def writer(self) -> StreamWriter[LogItem]:
        """Takes records still in their captured form too, skipping the OTel objects."""
        return self._writer

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._writer.close()


class RedisStreamSpanExporter(SpanExporter):
    """Writes finished spans to the span stream, the trace index and the trace list."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = _within_otel_span_limits(settings or Settings.load())
        self._writer = StreamWriter(
            settings, _spans_of, schema.SPAN_FIELDS, schema.INDEX_SPAN, _encode_span, trace_list=True
        )

    @property
    def writer(self) -> StreamWriter[ReadableSpan]:
        return self._writer

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = self._writer.write(spans)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._writer.close()


def _within_otel_span_limits(settings: Settings) -> Settings:
    """Spans come held to OTel's span limits (the SDK keeps the newest attributes): where the app
    raised those above ours, a second cut here would keep the oldest and lose what was set last,
    such as `http.response.status_code`. Our limits stay where OTel sets none."""
    limits = SpanLimits()
    count, length = limits.max_span_attributes, limits.max_span_attribute_length
    return replace(
        settings,
        max_attributes=max(settings.max_attributes, count or 0),
        max_attribute_length=max(settings.max_attribute_length, length or 0),
    )
