"""`tracestream doctor`: is the configuration usable, can we reach Redis, and what is in it.

Each finding says in plain words what is wrong and what to try; the exit status is 1
when any check failed.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlsplit

import redis
from rich.text import Text

from tracestream.alerts.delivery import failed_deliveries
from tracestream.alerts.store import home_stream
from tracestream.cli.common import (
    Console,
    add_command,
    describe_redis_error,
    print_json,
    shown,
    shows,
    some_of,
)
from tracestream.connection import CLUSTER_ERRORS, Client, client_for, node_for, primaries
from tracestream.disk_spool import (
    backlogs,
    dead_letters,
    describe,
    replay_command,
    spool_base,
    why_unwritable,
)
from tracestream.export_status import ProcessStatus, read_statuses
from tracestream.forwarder import DEAD_LETTER_SUFFIX, LOSS_COUNTS_SUFFIX, forward_losses, forwarder_lag
from tracestream.query.replies import tolerant_call
from tracestream.redis_errors import advice, evictable_keys
from tracestream.settings import ConfigError, Settings, shown_url
from tracestream.shards import Shard, shards
from tracestream.timeparse import iso_utc

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers

QUIET_AFTER_S = 600  # no record for this long: probably nobody exports here
MARKS = {"ok": "✓", "warn": "!", "fail": "✗"}
PLAIN_MARKS = {"ok": "ok", "warn": "!", "fail": "FAIL"}  # for a terminal that cannot show MARKS
COLOURS = {"ok": "green", "warn": "yellow", "fail": "red"}
# RDB snapshots without an AOF (appendfsync everysec by default)
_SNAPSHOTS_ONLY = "a crash loses what came after the last one; appendonly yes loses at most a second"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok, warn or fail
    detail: str


def register(subparsers: Subparsers) -> None:
    add_command(
        subparsers,
        "doctor",
        run,
        "check configuration and Redis, explain what is wrong",
        "Check settings and Redis connectivity; show stream lengths, memory and retention.",
    )


def run(args: argparse.Namespace) -> int:
    findings = list(diagnose(args.redis_url, args.stream, args.cluster))
    if args.json:
        for finding in findings:
            print_json(finding.__dict__)
    else:
        console = Console(highlight=False, soft_wrap=True)  # a line each, also in a pipe or a log
        marks = MARKS if shows("".join(MARKS.values())) else PLAIN_MARKS
        for finding in findings:
            # Stream names, Redis replies and exporters' status text are shown, never obeyed.
            console.print(
                Text.assemble(
                    (f"{marks[finding.status]} ", COLOURS[finding.status]),
                    shown(finding.check, "bold"),
                    ": ",
                    shown(finding.detail),
                )
            )
    return 1 if any(finding.status == "fail" for finding in findings) else 0


def diagnose(redis_url: str | None, stream: str | None, cluster: bool | None = None) -> list[Finding]:
    try:
        config = Settings.load(redis_url=redis_url, stream=stream, redis_cluster=cluster)
    except ConfigError as error:
        return [Finding("configuration", "fail", str(error))]
    findings = [Finding("configuration", "ok", _describe(config)), *_local_spool(config)]
    try:
        client = client_for(config, decode=True)
        _ping(client)
    except CLUSTER_ERRORS as error:
        return [*findings, Finding("redis", "fail", _connection_advice(config, error))]
    with client:
        try:
            for server in primaries(client):
                findings += _server(server)
            findings += _streams(client, config)
            findings += _forwarders(client, config)
            findings += _forward_losses(client, config)
            findings += _alert_deliveries(client, config)
        except CLUSTER_ERRORS as error:
            findings.append(Finding("redis", "fail", describe_redis_error(error)))
    return findings


def _ping(client: Client) -> None:
    """Redis answers: MISCONF, which a Redis whose last save failed answers PING with, is an
    answer too, and the persistence check says what it means."""
    try:
        client.ping()
    except redis.ResponseError as error:
        if not str(error).startswith("MISCONF"):
            raise


def _describe(config: Settings) -> str:
    parts = urlsplit(config.redis_url)
    shown = shown_url(config.redis_url)
    tls = "TLS" if parts.scheme == "rediss" else "no TLS"
    if parts.scheme == "rediss" and config.redis_ca:
        tls += f", CA {config.redis_ca}"
    query = parse_qs(parts.query)
    username = parts.username or query.get("username", [""])[-1]
    password = parts.password or query.get("password", [""])[-1]
    user = f"user {username}" if username else ("password only" if password else "no auth")
    cluster = f", Redis Cluster, shard by {config.shard_by}" if config.redis_cluster else ""
    return f"{shown} ({tls}, {user}{cluster}); stream {config.stream!r}"


def _connection_advice(config: Settings, error: Exception) -> str:
    parts = urlsplit(config.redis_url)
    where = f"{parts.hostname}:{parts.port or 6379}" if parts.scheme != "unix" else parts.path
    text = str(error)
    lowered = text.lower()
    if "noauth" in lowered or "authentication required" in lowered:
        return f"Redis at {where} needs a password: put it in the URL, redis://USER:PASSWORD@{where}/0"
    if isinstance(error, redis.AuthenticationError) or "wrongpass" in lowered:
        return f"Redis at {where} refused the user name or password in the URL ({text})"
    if "db index is out of range" in lowered:
        return f"Redis at {where} has no database {parts.path.strip('/')}: pick a lower number in the URL"
    if "ssl" in lowered or "certificate" in lowered or "tls" in lowered:
        tls = (
            "check TRACESTREAM_REDIS_CA (and client cert/key) and the server's TLS port"
            if parts.scheme == "rediss"
            else "the server may expect TLS: use rediss://"
        )
        return f"TLS handshake with {where} failed: {text}; {advice(error) or tls}"
    if "refused" in lowered or "no such file" in lowered:
        return f"nothing accepts connections at {where}: is redis-server running there?"
    hint = advice(error)
    if isinstance(error, redis.TimeoutError):
        return f"no answer from {where} within {config.redis_timeout:g}s: {hint}"
    return f"cannot use Redis at {where}: {text}" + (f" ({hint})" if hint else "")


def _server(client: redis.Redis) -> list[Finding]:
    try:
        info: dict[str, Any] = client.info()
    except redis.ResponseError as refused:  # the read-only user of docs/security.md may not run INFO
        unread = (
            f"cannot read INFO from Redis at {_address(client)} ({refused}): its version, memory and "
            "eviction policy go unchecked; run doctor as an administrator (docs/security.md)"
        )
        return [Finding("server", "warn", unread), _persistence(client, {})]
    if info.get("redis_mode") == "sentinel":
        sentinel = (
            f"{_address(client)} is a Sentinel, not a Redis to write to: point the URL at the master it "
            "names (SENTINEL GET-MASTER-ADDR-BY-NAME <name>)"
        )
        return [Finding("server", "fail", sentinel)]
    detail = (
        f"Redis {info.get('redis_version')}, {info.get('used_memory_human')} used, "
        f"maxmemory {info.get('maxmemory_human', info.get('maxmemory'))}, "
        f"policy {info.get('maxmemory_policy')}"
    )
    replica = info.get("role") == "slave"
    if replica:
        detail += (
            f"; a replica of {info.get('master_host')}:{info.get('master_port')}, so services writing"
            " here fail (READONLY) or write what the next sync drops: point TRACESTREAM_REDIS_URL at"
            " the master"
        )
    findings = [Finding("server", "fail" if replica else "ok", detail), *_replicas_to_write(client, info)]
    policy = str(info.get("maxmemory_policy", ""))
    evicted = evictable_keys(policy)
    if evicted:
        count = int(info.get("evicted_keys", 0) or 0)
        so_far = f"; it has evicted {count} keys since it started (INFO evicted_keys)" if count else ""
        findings.append(
            Finding(
                "eviction",
                "warn",
                f"maxmemory-policy {policy} lets Redis evict {evicted} when memory runs out{so_far}; "
                "prefer noeviction (records wait in the spool while Redis is full) and bound the "
                "streams with TRACESTREAM_MAX_ENTRIES or TRACESTREAM_MAX_AGE",
            )
        )
    maxmemory, used = int(info.get("maxmemory", 0) or 0), int(info.get("used_memory", 0))
    # A batch needs room for itself: Redis at 95% refuses it, and is back under its limit when
    # doctor looks. What it refused for memory since it started tells (INFO errorstats, 6.2+).
    refused_for_memory = int((info.get("errorstat_OOM") or {}).get("count", 0))
    near_full = bool(maxmemory) and used > 0.9 * maxmemory
    full = bool(maxmemory) and (used >= maxmemory or (near_full and refused_for_memory > 0))
    if full and (policy == "noeviction" or policy.startswith("volatile-")):
        # volatile-* evicts only keys with an expiry, and the streams have none: once those are
        # gone, Redis refuses as noeviction does, and the exporters' status keys went first.
        so_far = (
            f"; it has refused {refused_for_memory} writes for memory since it started"
            if refused_for_memory
            else ""
        )
        findings.append(
            Finding(
                "memory",
                "fail",
                f"Redis is full ({info.get('used_memory_human')} used of maxmemory"
                f" {info.get('maxmemory_human')}, {policy}{so_far}): it refuses every write it cannot"
                " make room for (OOM) and services keep their records in the spool until memory is"
                " freed or maxmemory raised",
            )
        )
    elif near_full:
        findings.append(Finding("memory", "warn", "Redis uses over 90% of maxmemory: writes may soon fail"))
    return [*findings, _persistence(client, info)]


def _address(client: redis.Redis) -> str:
    """host:port or socket path: a cluster's findings are one per server."""
    options = client.connection_pool.connection_kwargs
    return str(options.get("path") or f"{options.get('host')}:{options.get('port')}")


def _replicas_to_write(client: redis.Redis, info: dict[str, Any]) -> list[Finding]:
    """A master set to take writes only with replicas in sync (`min-replicas-to-write`, which INFO
    shows by `min_slaves_good_slaves`) and short of them refuses every write (NOREPLICAS)."""
    good = info.get("min_slaves_good_slaves")
    if good is None:
        return []
    try:
        wanted = int(client.config_get("min-replicas-to-write").get("min-replicas-to-write") or 0)
    except redis.ResponseError:  # a user that may not run CONFIG GET
        return []
    if int(good) >= wanted:
        return []
    where = f"Redis at {_address(client)}"
    detail = (
        f"{where} takes a write only while {wanted} replicas are in sync (min-replicas-to-write) and has"
        f" {good}: it refuses every write (NOREPLICAS) and services keep their records in the spool;"
        " bring its replicas up, or lower min-replicas-to-write"
    )
    return [Finding("replicas", "fail", detail)]


def _persistence(client: redis.Redis, info: dict[str, Any]) -> Finding:
    """Whether a restart keeps the records: from the server's settings, else from what its INFO says
    it did (managed Redis services and least-privilege users often refuse CONFIG)."""
    where = f"Redis at {_address(client)}"
    failed = [name for name in ("rdb_last_bgsave_status", "aof_last_write_status") if info.get(name) == "err"]
    if failed:
        return Finding(
            "persistence",
            "fail",
            f"{where} failed to write to disk (INFO {failed[0]}:err): while stop-writes-on-bgsave-error is"
            " yes it refuses every write (MISCONF) and services keep their records in the spool; look in"
            " its log for why (a full disk, its dir not writable), then BGSAVE",
        )
    try:
        save = str(client.config_get("save").get("save", "")).strip()
        appendonly = client.config_get("appendonly").get("appendonly") == "yes"
    except redis.ResponseError as refused:
        return _persistence_from_info(where, info, refused)
    if appendonly:
        return Finding("persistence", "ok", f"{where} writes every record to its AOF (appendonly yes)")
    if save:
        return Finding("persistence", "ok", f"{where} saves RDB snapshots (save {save}): {_SNAPSHOTS_ONLY}")
    return Finding(
        "persistence",
        "warn",
        f"{where} keeps nothing on disk (no RDB save points, appendonly no): a restart loses every "
        "record; turn on appendonly yes (CONFIG SET appendonly yes, and in its redis.conf)",
    )


def _persistence_from_info(where: str, info: dict[str, Any], refused: redis.ResponseError) -> Finding:
    if int(info.get("aof_enabled", 0)):
        return Finding("persistence", "ok", f"{where} writes every record to its AOF (INFO aof_enabled:1)")
    # Save points run in the background: a duration of -1 means none ran since Redis started.
    if int(info.get("rdb_last_bgsave_time_sec", -1)) >= 0:
        return Finding(
            "persistence", "ok", f"{where} saved an RDB snapshot since it started: {_SNAPSHOTS_ONLY}"
        )
    unknown = (
        "its AOF is off and it saved no snapshot since it started, but this user may not run CONFIG GET"
        " to read its save points"
        if info
        else "this user may run neither INFO nor CONFIG GET"
    )
    return Finding(
        "persistence",
        "warn",
        f"cannot tell whether {where} keeps records on disk: {unknown} ({refused}); run doctor as an"
        " administrator (docs/security.md)",
    )


def _streams(client: Client, config: Settings) -> list[Finding]:
    findings: list[Finding] = []
    found = shards(client, config.stream)
    if not found:
        problem = f"no shard of {config.stream!r} is registered: nothing was exported to this cluster yet"
        findings.append(Finding("log stream", "warn", problem))
    statuses = read_statuses(client, config.stream)
    for shard in found:
        findings += _shard_findings(shard, statuses)
    findings.append(
        Finding(
            "retention",
            "ok",
            f"{config.retention_summary} (as set in this environment; services apply their own settings)",
        )
    )
    return findings + _exporters(statuses, config)


def _exporters(statuses: list[ProcessStatus], config: Settings) -> list[Finding]:
    """From each live process's status key: healthy ones on one line, each troubled one on its own."""
    if not statuses:
        return [Finding("exporters", "warn", f"no process reported exporting to {config.stream!r} lately")]
    healthy, findings = [], []
    for status in statuses:
        level, problems = status.problems()
        if level == "ok":
            healthy.append(status.line())
        else:
            findings.append(Finding("exporter", level, f"{status.process}: {'; '.join(problems)}"))
    if healthy:
        findings.insert(0, Finding("exporters", "ok", "; ".join(healthy)))
    return findings


def _local_spool(config: Settings) -> list[Finding]:
    """What this machine's spool holds: records a running process cannot write now, records no
    running process will replay, and refused records."""
    base = spool_base(config)
    if (why := why_unwritable(base)) is not None:
        return [
            Finding(
                "spool",
                "warn",
                f"the spool at {base} cannot be written by this user ({why}): while Redis is down, a"
                " service run so keeps its records in memory only; TRACESTREAM_SPOOL_DIR names another",
            )
        ]
    findings = []
    for backlog in backlogs(base):
        where = describe(backlog.destination)
        if backlog.live and backlog.records:
            findings.append(
                Finding(
                    "spool",
                    "fail",
                    f"{backlog.records} records for {where} wait in {backlog.folder}: their process is"
                    " running but cannot write them to Redis now (its stderr says why); it sends them"
                    " once Redis takes them",
                )
            )
        elif not backlog.live:
            replay = replay_command(backlog.destination)
            findings.append(
                Finding(
                    "spool",
                    "warn",
                    f"{backlog.records} records for {where} left in {backlog.folder} by a process that"
                    " ended; the next process exporting there replays them"
                    + (f", or run `{replay}`" if replay else "")
                    + f", or `tracestream spool discard --id {backlog.folder.name}`",
                )
            )
    for letters in dead_letters(base):
        where = describe(letters.destination)
        findings.append(
            Finding(
                "dead letters",
                "warn",
                f"Redis refused {letters.records} records for {where} ({letters.summary()}); they are in"
                f" {letters.folder}; `tracestream spool discard --dead-letters --id {letters.folder.name}`"
                " deletes them",
            )
        )
    return findings


def _shard_findings(shard: Shard, statuses: list[ProcessStatus]) -> list[Finding]:
    findings: list[Finding] = []
    client, keys = shard.client, shard.keys
    for label, key, signal in (("log stream", keys.logs, "logs"), ("span stream", keys.spans, "spans")):
        kind = str(client.type(key))
        if kind == "none":
            findings.append(Finding(label, "warn", _missing_stream(key, signal, statuses)))
            continue
        if kind != "stream":
            problem = f"{key!r} holds a {kind}, not a stream: pick another name"
            findings.append(Finding(label, "fail", problem))
            continue
        findings.append(_stream_finding(client, label, key))
    return findings


def _missing_stream(key: str, signal: str, statuses: list[ProcessStatus]) -> str:
    """Why a stream is missing: no process wrote here, or those that write here send none of its signal."""
    if statuses and not any(status.counts(signal) for status in statuses):
        variable = "OTEL_TRACES_EXPORTER" if signal == "spans" else "OTEL_LOGS_EXPORTER"
        return (
            f"{key!r} does not exist: no live process writing here ({some_of([s.process for s in statuses])})"
            f" has exported {signal}: they made none yet, or their {variable} names no redis_stream"
        )
    return (
        f"{key!r} does not exist: nothing was exported here yet. Services must use the same "
        "TRACESTREAM_REDIS_URL (including the /db number) and TRACESTREAM_STREAM"
    )


def _stream_finding(client: redis.Redis, label: str, key: str) -> Finding:
    length = int(client.xlen(key))
    try:
        memory = int(client.memory_usage(key) or 0)
    except redis.ResponseError:  # MEMORY may be forbidden to this user
        memory = 0
    # An entry another program wrote may hold bytes that are not UTF-8.
    newest = cast(list[Any], tolerant_call(client, "XREVRANGE", key, "+", "-", "COUNT", 1))
    oldest = cast(list[Any], tolerant_call(client, "XRANGE", key, "-", "+", "COUNT", 1))
    detail = f"{key!r}: {length} entries"
    if memory:
        detail += f", {memory / 2**20:.1f} MiB ({memory / max(length, 1):.0f} B per entry)"
    if newest and oldest:
        first_ms, last_ms = (int(entries[0][0].split("-")[0]) for entries in (oldest, newest))
        detail += f", from {iso_utc(first_ms * 1_000_000)} to {iso_utc(last_ms * 1_000_000)}"
        idle = time.time() - last_ms / 1000
        if idle > QUIET_AFTER_S:
            detail += f"; nothing new for {idle / 60:.0f} minutes: are services running?"
            return Finding(label, "warn", detail)
    return Finding(label, "ok", detail)


# ---------------------------------------------------------------------------
# `tracestream forward` lag (owned with tracestream/forwarder.py; see docs/scale-out.md)

FORWARD_BEHIND_S = 300  # the oldest unacknowledged entry is this old: forwarders are stuck or too few


def _alert_deliveries(client: Client, config: Settings) -> list[Finding]:
    """Alert notifications given up on (docs/alerts.md); their URLs are stored masked."""
    home = home_stream(config.stream, config.redis_cluster)
    return [
        Finding(
            "alerts",
            "warn",
            f"notification {delivery['id']} to {delivery['target']} ({delivery['url'] or 'no URL'}) "
            f"given up on after {delivery['attempt']} attempts: {delivery['error']}",
        )
        for delivery in failed_deliveries(node_for(client, home), home, limit=5)
    ]


def _forwarders(client: Client, config: Settings) -> list[Finding]:
    findings = []
    for lag in forwarder_lag(client, config.stream):
        detail = f"{lag.stream!r} group {lag.group}: {lag.consumers} consumers, {lag.pending} pending"
        if lag.oldest_pending_age is not None:
            detail += f", oldest written {lag.oldest_pending_age:.0f}s ago"
        if lag.undelivered is not None:
            detail += f", {lag.undelivered} not yet read"
        if lag.trimmed_unread:
            detail += (
                f"; {lag.trimmed_unread} more were trimmed by retention before it read them: lost, "
                f"and the next forwarder to read counts them in {lag.stream + LOSS_COUNTS_SUFFIX!r} "
                "(docs/scale-out.md: size retention)"
            )
        behind = (lag.oldest_pending_age or 0) > FORWARD_BEHIND_S
        if behind:
            detail += "; is the endpoint refusing, or are too few forwarders running?"
        findings.append(Finding("forwarder", "warn" if behind or lag.trimmed_unread else "ok", detail))
    return findings


def _forward_losses(client: Client, config: Settings) -> list[Finding]:
    """What forwarders could not deliver: dead letters waiting for a person, and records lost."""
    findings = []
    for losses in forward_losses(client, config.stream):
        if losses.dead_letters:
            findings.append(
                Finding(
                    "forwarder",
                    "warn",
                    f"{losses.dead_letters} entries of {losses.stream!r} kept as dead letters in "
                    f"{losses.stream + DEAD_LETTER_SUFFIX!r}, the newest for: {losses.newest_dead_letter}; "
                    "read them out and delete them (docs/scale-out.md)",
                )
            )
        lost = []
        if losses.rejected:
            lost.append(f"{losses.rejected} records rejected by the endpoint (OTLP partial success)")
        if losses.dead_letters_deleted:
            lost.append(f"{losses.dead_letters_deleted} dead letters deleted past the cap")
        if losses.trimmed:
            lost.append(f"{losses.trimmed} records trimmed by retention before a forwarder read them")
        if lost:
            since = f" since {iso_utc(losses.since_ms * 1_000_000)}" if losses.since_ms else ""
            findings.append(
                Finding(
                    "forwarder",
                    "warn",
                    f"{' and '.join(lost)} from {losses.stream!r}{since}: not forwarded; "
                    f"`DEL {losses.stream + LOSS_COUNTS_SUFFIX}` resets this count",
                )
            )
    return findings
