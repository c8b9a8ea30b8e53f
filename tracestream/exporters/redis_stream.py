"""Redis Stream exporters for OTel log records and spans.

Each batch goes to Redis in one round trip: a server-side script appends every entry,
updates the per-trace index and trims by age. The launcher builds exporters with no
arguments, so they read their settings from the environment.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import redis
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from redis.exceptions import NoScriptError

from tracestream import schema
from tracestream._internal_log import internal_logger
from tracestream.connection import CLUSTER_ERRORS, Client, ProcessLocalClient, Tls, node_for, refresh_topology
from tracestream.exporters.shaping import RowShaper
from tracestream.otel_setup.pending import PendingLogRecord
from tracestream.redis_errors import is_transient
from tracestream.settings import Settings
from tracestream.spool import Spool, spool_for
from tracestream.status import STATUS_TTL, status_key

# One call per batch. The batch travels as a single JSON argument: packing thousands of
# small arguments costs the client more than the server spends decoding one. Rows that carry
# the call's resource (all of a process's own) travel with "" in its place (ARGV[10..11]):
# decoding that escaped JSON again for every row was a fifth of the script's time.
# Log batches also append one digest entry (KEYS[2..4]; see docs/stream-schema.md) so a
# search reads a line per record instead of whole entries. The digest is trimmed with
# write-only commands, so a producer that may not read its streams can still run this.
#
# A retried call stores each record once. A script that fails midway keeps what it wrote,
# so every key is checked before the first write, with commands that fail on a key of the
# wrong type and change nothing (a write-only producer may run them; docs/security.md), and
# nothing after the XADDs can fail. Only a stream key of another type refuses the call; a
# digest key of another type costs the records their search digest (the call returns why),
# and a trace index key of another type costs only that trace its index (pcall). Redis
# refuses a script for OOM only at its first write command, here the INCRBY that reads a
# mark, so a call is stored whole or not at all. But a batch of several calls, or a
# connection lost after Redis ran them, leaves some stored, and the whole batch is sent
# again. Record ids are a writer's random prefix and a counter that the writer delivers in
# order, so `<stream>:written:<prefix>` counts up to the first counter not yet stored
# (ARGV[12..13]), and a call's leading rows below it are skipped.
_APPEND_SCRIPT = """
local stream = KEYS[1]
local maxlen = tonumber(ARGV[1])
local min_id_ms = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local index_prefix = ARGV[4]
local member_prefix = ARGV[5]
local trace_pos = tonumber(ARGV[6]) + 1
local names = cjson.decode(ARGV[7])
local rows = cjson.decode(ARGV[8])
local digest_pos = cjson.decode(ARGV[9])
local resource_pos = tonumber(ARGV[10]) + 1
local resource = ARGV[11]
local rid_pos = tonumber(ARGV[12]) + 1
local mark_prefix = ARGV[13]
local function refused(reply) return type(reply) == 'table' and reply.err end
local function oom(reply) return string.sub(reply.err, 1, 3) == 'OOM' end
-- A call's rows come from one writer, in order: only a retry's leading rows, which Redis
-- stored before, are below the mark, so only those and the last row are parsed.
local function parse(row)
  local rid = row[rid_pos]
  local counter = #rid > 16 and tonumber(string.sub(rid, 17), 16)
  if counter then return string.sub(rid, 1, 16), counter end
end
local first = 1
local prefix = parse(rows[1])
local mark_key, mark
if prefix then
  mark_key = mark_prefix .. prefix
  mark = redis.pcall('INCRBY', mark_key, 0)
  if refused(mark) then
    if oom(mark) then return mark end
    prefix = nil
  else
    redis.call('EXPIRE', mark_key, ttl)
    while first <= #rows do
      local row_prefix, counter = parse(rows[first])
      if row_prefix ~= prefix or counter >= mark then break end
      first = first + 1
    end
  end
end
local keep_all = {'stream', 'XTRIM', 'MAXLEN', '9223372036854775807'}
local probes = {keep_all, keep_all}
if maxlen > 0 then probes[3] = {'list', 'LPOP', '0'}; probes[4] = {'count', 'INCRBY', '0'} end
local digest_problem
for k = 1, math.min(#KEYS, #probes) do
  local probe = probes[k]
  local reply = redis.pcall(probe[2], KEYS[k], unpack(probe, 3))
  if refused(reply) then
    if oom(reply) then return reply end
    local problem = KEYS[k] .. ' is not a ' .. probe[1] .. ': ' .. reply.err
    if k == 1 then return redis.error_reply('WRONGTYPE ' .. problem) end
    digest_problem = digest_problem or problem .. '; the search digest is not written'
  end
end
if digest_problem then digest_pos = {} end
if first > #rows then return 0 end
local nfields = #names
local touched = {}
local pairs_ = {}
local lines = {}
local function one_line(text)
  if string.find(text, '\\n', 1, true) or string.find(text, '\\t', 1, true) then
    return (string.gsub(text, '[\\t\\n]', ' '))
  end
  return text
end
for f = 1, nfields do pairs_[2 * f - 1] = names[f] end
local first_id, id
for i = first, #rows do
  local row = rows[i]
  if row[resource_pos] == '' then row[resource_pos] = resource end
  for f = 1, nfields do pairs_[2 * f] = row[f] end
  if maxlen > 0 then
    id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(pairs_))
  else
    id = redis.call('XADD', stream, '*', unpack(pairs_))
  end
  first_id = first_id or id
  local trace = row[trace_pos]
  if trace ~= '' then
    local key = index_prefix .. trace
    if touched[key] ~= false then
      touched[key] = type(redis.pcall('RPUSH', key, member_prefix .. id)) == 'number'
    end
  end
  if #digest_pos > 0 then
    local v = {}
    for p = 1, #digest_pos do v[p] = one_line(row[digest_pos[p]]) end
    lines[#lines + 1] = '\\n' .. v[1] .. '\\t' .. v[2] .. '\\t' .. id
      .. '\\t' .. v[3] .. '\\t' .. v[4] .. '\\t' .. v[5]
  end
end
if prefix then
  local last_prefix, last = parse(rows[#rows])
  if last_prefix == prefix and last >= mark then
    redis.call('INCRBY', mark_key, string.format('%.0f', last + 1 - mark))
  end
end
for key, indexed in pairs(touched) do
  if indexed then redis.call('EXPIRE', key, ttl) end
end
if min_id_ms > 0 then redis.call('XTRIM', stream, 'MINID', '~', min_id_ms) end
if #lines == 0 then return digest_problem or #rows - first + 1 end
-- The digest entry takes the batch's last record id, so stream ids locate it. It fails
-- only if the log stream was deleted and recreated behind it: those records then go unindexed.
local added = redis.pcall('XADD', KEYS[2], id, 'first', first_id, 'n', #lines, 'd', table.concat(lines))
if refused(added) then return #rows - first + 1 end
if min_id_ms > 0 then redis.call('XTRIM', KEYS[2], 'MINID', '~', min_id_ms) end
if maxlen > 0 then
  redis.call('RPUSH', KEYS[3], #lines .. ' ' .. id)
  local total = redis.call('INCRBY', KEYS[4], #lines)
  local cut
  while true do
    local oldest = redis.call('LPOP', KEYS[3])
    if not oldest then break end
    local count, digest_id = string.match(oldest, '^(%d+) (%d+%-%d+)$')
    if count then
      if total - tonumber(count) < maxlen then redis.call('LPUSH', KEYS[3], oldest); break end
      total = redis.call('DECRBY', KEYS[4], count)
      cut = digest_id
    end
  end
  if cut then
    local ms, seq = string.match(cut, '^(%d+)-(%d+)$')
    redis.call('XTRIM', KEYS[2], 'MINID', '~', ms .. '-' .. string.format('%.0f', tonumber(seq) + 1))
  end
end
return #rows - first + 1
"""

# What EVALSHA names the script by, as Redis computes it.
_APPEND_SHA = hashlib.sha1(_APPEND_SCRIPT.encode()).hexdigest()

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


class ResourceCache:
    """Serialise each resource once, not once per record."""

    def __init__(self) -> None:
        self._resource: Resource | None = None
        self._encoded = schema.EncodedResource("{}", "")

    def get(self, resource: Resource) -> schema.EncodedResource:
        if resource is not self._resource:
            self._encoded = schema.EncodedResource.of(resource)
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
    ) -> None:
        self.settings = settings
        self.stream = stream_of(schema.StreamKeys(settings.stream))
        self._stream_of = stream_of
        sharded = settings.shard_by == "service"
        self._keyspace = schema.Keyspace(settings.stream, settings.redis_cluster, sharded)
        self._digest = digest
        positions = [field_names.index(name) + 1 for name in schema.DIGEST_FIELDS] if digest else []
        self._digest_positions = schema.dump_json(positions)
        self._member_prefix = member_prefix
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
        self._failing = threading.Event()
        self._problems_told: set[bytes | str] = set()  # what the script said it could not do, said once

    def encode(self, items: Sequence[Item]) -> list[list[str]]:
        """Entries' values in schema order, within the size limits; runs on the export worker."""
        ids, resources = self._ids, self._resources
        return self._shaper.shape_rows([self._encode(item, ids.next(), resources) for item in items])

    def write(self, items: Sequence[Item]) -> bool:
        """Append a batch; False (never an exception) when Redis did not take it."""
        try:
            return self.write_rows(self.encode(items))
        except (*CLUSTER_ERRORS, OSError) as error:  # refused as they are: only a batch queue sets them aside
            self._report_failure(error, len(items))
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
            self._report_failure(error, len(rows))
            return False
        if self._failing.is_set():
            self._failing.clear()
            internal_logger.warning("Redis at %s is reachable again", self._client.url)
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
        calls: list[ScriptCall] = [
            [*script_keys, *self._script_args(keys, rows[start : start + ROWS_PER_CALL])]
            for start in range(0, len(rows), ROWS_PER_CALL)
        ]
        node = node_for(client, keys.logs)
        missing = self._call_script(node, len(script_keys), calls)
        if missing:
            node.script_load(_APPEND_SCRIPT)
            if self._call_script(node, len(script_keys), missing):
                raise NoScriptError("the append script is missing right after SCRIPT LOAD")

    def _call_script(self, node: redis.Redis, key_count: int, calls: list[ScriptCall]) -> list[ScriptCall]:
        """One round trip; returns the calls the server could not run for want of the script."""
        pipe = node.pipeline(transaction=False)
        for arguments in calls:
            pipe.evalsha(_APPEND_SHA, key_count, *arguments)
        results = pipe.execute(raise_on_error=False)
        missing = []
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, NoScriptError):
                missing.append(call)
            elif isinstance(result, Exception):
                raise result
            elif isinstance(result, (bytes, str)) and result not in self._problems_told:
                self._problems_told.add(result)
                problem = result.decode(errors="replace") if isinstance(result, bytes) else result
                internal_logger.warning("Redis at %s: %s", self._client.url, problem)
        return missing

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

    def _script_args(self, keys: schema.StreamKeys, rows: Sequence[list[str]]) -> list[str | int | bytes]:
        settings = self.settings
        min_id_ms = int((time.time() - settings.max_age) * 1000) if settings.max_age else 0
        resource = rows[0][self._resource_pos]  # the call's resource, sent once
        marks = f"{self._stream_of(keys)}:written:"
        return [
            settings.max_entries,
            min_id_ms,
            max(1, int(settings.max_age)) if settings.max_age else UNBOUNDED_AGE_TTL_S,
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
        ]

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

    def _report_failure(self, error: Exception, count: int) -> None:
        if not self._failing.is_set():
            self._failing.set()
            internal_logger.warning(
                "cannot write %d records to Redis at %s: %s; will retry", count, self._client.url, error
            )

    def make_spool(self) -> Spool | None:
        """Where rows go while Redis is away; None when `spool_max_bytes` is 0."""
        return spool_for(self.settings, self.stream)

    def publish_status(self, signal: str, status: dict[str, int]) -> None:
        """Refresh this process's status hash, which `tracestream doctor` reads; skipped while failing."""
        if self._failing.is_set():
            return
        service = self.settings.service_name or self._resources.get_service()
        key = status_key(self.settings.stream, service, socket.gethostname(), os.getpid())
        fields = {f"{signal}.{name}": value for name, value in status.items()}
        fields["updated_ms"] = int(time.time() * 1000)
        try:
            pipe = self._client.get().pipeline(transaction=False)
            for name, value in fields.items():
                pipe.hset(key, name, value)
            pipe.expire(key, STATUS_TTL)
            pipe.execute()
        except (*CLUSTER_ERRORS, OSError):
            pass  # best effort: the next refresh, or the next export, tells the story

    def close(self) -> None:
        self._client.close()


LogItem = ReadableLogRecord | ReadWriteLogRecord | PendingLogRecord


def _encode_log(item: LogItem, record_id: str, resources: ResourceCache) -> list[str]:
    if isinstance(item, (ReadableLogRecord, ReadWriteLogRecord)):
        return schema.otel_log_values(item, record_id, resources.get(item.resource or Resource.get_empty()))
    return item.stream_values(record_id, resources.get)


def _logs_of(keys: schema.StreamKeys) -> str:
    return keys.logs


def _spans_of(keys: schema.StreamKeys) -> str:
    return keys.spans


def _encode_span(span: ReadableSpan, record_id: str, resources: ResourceCache) -> list[str]:
    return schema.span_values(span, record_id, resources.get(span.resource))


class RedisStreamLogExporter(LogRecordExporter):
    """Writes OTel log records to the log stream and the trace index."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings.load()
        self._writer = StreamWriter(
            settings, _logs_of, schema.LOG_FIELDS, schema.INDEX_LOG, _encode_log, digest=True
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
    """Writes finished spans to the span stream and the trace index."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings.load()
        self._writer = StreamWriter(settings, _spans_of, schema.SPAN_FIELDS, schema.INDEX_SPAN, _encode_span)

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
