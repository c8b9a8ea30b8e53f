"""Counts over a time range: per service, per minute and severity, and top error groups.

Counting happens inside Redis, chunk by chunk, so only the counts cross the wire. A
service's instances are its distinct resources: each process serialises its resource
once, so equal resource text means the same process.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from tracestream.connection import Client
from tracestream.query import before, run_script
from tracestream.schema import LOG_FIELDS
from tracestream.shards import shards

ERROR_FLOOR = 17  # OTel severity number of ERROR
# Entries and bytes summarised per script call, read a page at a time: Redis is never blocked
# for long, however long the entries are.
SCAN_CHUNK = 20_000
SCAN_BYTES = 4_000_000
PAGE = 256
MESSAGE_LIMIT = 1024  # bytes of an error group's message: a foreign entry's body may be megabytes
MINUTE_MS = 60_000

# Returns {last, 1 when the range ran out, services, minutes, groups}: services as {name,
# last_ms, count, errors, {resource sha, ...}}, minutes as {minute, service, severity, count},
# groups as {exception type, code, count, last_ms, service, message}. Redis arrays, not JSON
# with joined keys: names may hold any byte, tabs and text that is not UTF-8 included, and each
# string is decoded on its own. If not done, the next call starts below `last`.
_SUMMARY_SCRIPT = """
local P = cjson.decode(ARGV[4])
local error_floor = tonumber(ARGV[5])
local byte_budget, page = tonumber(ARGV[6]), tonumber(ARGV[7])
local message_limit = tonumber(ARGV[8])
local services, minutes, groups, resources = {}, {}, {}, {}
local function get(f, pos, name)
  if f[pos - 1] == name then return f[pos] end
  for j = 1, #f, 2 do if f[j] == name then return f[j + 1] end end
  return ''
end
local function count(id, f)
  local ms = tonumber(string.match(id, '^(%d+)'))
  local service = get(f, P.service, 'service')
  local severity = get(f, P.severity, 'severity')
  local number = tonumber(get(f, P.severity_number, 'severity_number')) or 0
  local s = services[service]
  if not s then
    s = {ms, 0, 0}
    services[service], resources[service], minutes[service] = s, {}, {}
  end
  s[2] = s[2] + 1
  resources[service][get(f, P.resource, 'resource')] = true
  local minute = ms - ms % 60000
  local per_severity = minutes[service][minute]
  if not per_severity then per_severity = {}; minutes[service][minute] = per_severity end
  per_severity[severity] = (per_severity[severity] or 0) + 1
  if number >= error_floor then
    s[3] = s[3] + 1
    local exception_type = get(f, P.exception_type, 'exception_type')
    local by_code = groups[exception_type]
    if not by_code then by_code = {}; groups[exception_type] = by_code end
    local code = get(f, P.code, 'code')
    local g = by_code[code]
    if not g then
      local message = get(f, P.exception_message, 'exception_message')
      if message == '' then message = get(f, P.body, 'body') end
      if #message > message_limit then
        -- cut, and drop a character the cut may have split
        message = (string.gsub(string.sub(message, 1, message_limit), '[\\192-\\255][\\128-\\191]*$', ''))
      end
      g = {0, ms, service, message}
      by_code[code] = g
    end
    g[1] = g[1] + 1
  end
end
-- Pages from ARGV[1] down; after the first, each starts at the last id read, which is skipped.
local high, last, scanned, bytes, done = ARGV[1], '', 0, 0, 0
while scanned < tonumber(ARGV[3]) and bytes < byte_budget do
  local entries = redis.call('XREVRANGE', KEYS[1], high, ARGV[2], 'COUNT', page + (last == '' and 0 or 1))
  local first = (entries[1] and entries[1][1] == last) and 2 or 1
  for i = first, #entries do
    local f = entries[i][2]
    count(entries[i][1], f)
    for j = 2, #f, 2 do bytes = bytes + #f[j] end
  end
  scanned = scanned + #entries - first + 1
  if #entries - first + 1 < page then done = 1; break end
  last = entries[#entries][1]
  high = last
end
local out_services, out_minutes, out_groups = {}, {}, {}
for service, s in pairs(services) do
  local shas = {}
  for text in pairs(resources[service]) do shas[#shas + 1] = redis.sha1hex(text) end
  out_services[#out_services + 1] = {service, s[1], s[2], s[3], shas}
  for minute, per_severity in pairs(minutes[service]) do
    for severity, n in pairs(per_severity) do
      out_minutes[#out_minutes + 1] = {minute, service, severity, n}
    end
  end
end
for exception_type, by_code in pairs(groups) do
  for code, g in pairs(by_code) do
    out_groups[#out_groups + 1] = {exception_type, code, g[1], g[2], g[3], g[4]}
  end
end
return {last, done, out_services, out_minutes, out_groups}
"""
_POSITIONS = orjson.dumps({name: 2 * index + 2 for index, name in enumerate(LOG_FIELDS)}).decode()


@dataclass
class ServiceStatus:
    """One service over the summary's window."""

    service: str
    last_seen_ms: int = 0
    records: int = 0
    errors: int = 0
    instances: set[str] = field(default_factory=set)
    records_per_minute: float = 0.0


@dataclass
class ErrorGroup:
    """Error records with the same exception type and code location."""

    exception_type: str
    code: str
    count: int
    last_seen_ms: int
    service: str
    message: str


@dataclass
class Summary:
    since_ms: int
    until_ms: int
    services: dict[str, ServiceStatus] = field(default_factory=dict)
    per_minute: Counter[tuple[int, str, str]] = field(
        default_factory=Counter
    )  # (minute ms, service, severity)
    error_groups: dict[tuple[str, str], ErrorGroup] = field(default_factory=dict)

    def by_severity(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (_, _, severity), count in self.per_minute.items():
            counts[severity] += count
        return counts

    def top_errors(self, count: int = 10) -> list[ErrorGroup]:
        return sorted(self.error_groups.values(), key=lambda group: (-group.count, -group.last_seen_ms))[
            :count
        ]

    def _merge(self, services: list[Any], minutes: list[Any], groups: list[Any]) -> None:
        for name, last_ms, records, errors, shas in services:
            status = self.services.setdefault(name, ServiceStatus(name))
            status.last_seen_ms = max(status.last_seen_ms, int(last_ms))
            status.records += int(records)
            status.errors += int(errors)
            status.instances.update(shas)
        for minute, service, severity, count in minutes:
            self.per_minute[int(minute), service, severity] += int(count)
        for exception_type, code, count, last_ms, service, message in groups:
            group = self.error_groups.get((exception_type, code))
            if group is None:
                self.error_groups[exception_type, code] = ErrorGroup(
                    exception_type, code, int(count), int(last_ms), service, message
                )
            else:
                group.count += int(count)


def summarize(client: Client, stream: str, since_ms: int, until_ms: int | None = None) -> Summary:
    """Everything between two times (stream id milliseconds), every shard; rates per minute."""
    until = int(time.time() * 1000) if until_ms is None else until_ms
    summary = Summary(since_ms, until)
    for shard in shards(client, stream):
        script = shard.client.register_script(_SUMMARY_SCRIPT)
        high = f"{until}-{2**64 - 1}"
        while True:
            args: list[str | int] = [
                high,
                f"{since_ms}-0",
                SCAN_CHUNK,
                _POSITIONS,
                ERROR_FLOOR,
                SCAN_BYTES,
                PAGE,
                MESSAGE_LIMIT,
            ]
            last, done, *part = cast(list[Any], run_script(script, [shard.keys.logs], args))
            summary._merge(*part)
            if done or not last:
                break
            high = before(last)
    minutes = max(1.0, (until - since_ms) / MINUTE_MS)
    for status in summary.services.values():
        status.records_per_minute = status.records / minutes
    return summary


def service_status(client: Client, stream: str, window_s: float = 3600.0) -> list[ServiceStatus]:
    """Every service seen in the window (default: the last hour), most recently seen first."""
    now = int(time.time() * 1000)
    summary = summarize(client, stream, now - int(window_s * 1000), now)
    return sorted(summary.services.values(), key=lambda status: -status.last_seen_ms)
