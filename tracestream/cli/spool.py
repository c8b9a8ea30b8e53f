"""`tracestream spool list|replay|discard`: what this machine's spool holds, and what to do with it.

A process replays its own spool, and the next process on the same destination replays what a
dead one left. Rows for a destination nobody writes to any more stay on disk: these commands
show them, send them to their Redis now, or delete them.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from tracestream.cli.common import Console, UsageError, add_command, error_line, print_json, settings, shown
from tracestream.disk_spool import (
    Backlog,
    DeadLetters,
    Destination,
    Spool,
    backlogs,
    dead_letters,
    describe,
    process_directory,
    replay_command,
    spool_base,
)
from tracestream.settings import BatchSettings, Settings

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers

REPLAY_TIMEOUT_S = 60.0
# Replay reads the spool only: nothing is queued.
_REPLAY_BATCH = BatchSettings(schedule_delay=1.0, max_queue_size=1, max_export_batch_size=1)


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "spool",
        run,
        "list, replay or discard records spooled on this machine while Redis was away",
        "list: every spooled backlog and dead-letter file under the spool directory "
        "($TRACESTREAM_SPOOL_DIR). replay: send what dead processes left for the destination of "
        "--redis-url/--stream to it now (or what they left for --id, spooled for a URL since "
        "corrected, to --redis-url/--stream). discard: delete what dead processes left for that "
        "destination (or for --id, as list shows it), and with --dead-letters its refused records.",
    )
    parser.add_argument("action", choices=("list", "replay", "discard"), nargs="?", default="list")
    parser.add_argument(
        "--id", action="append", default=[], metavar="KEY", help="a destination, as list shows it"
    )
    parser.add_argument("--dead-letters", action="store_true", help="discard: the refused records too")


def run(args: argparse.Namespace) -> int:
    config = settings(args)
    base = spool_base(config)
    if args.action == "list":
        return _list(base, args.json)
    keys = set(args.id) or {Destination.of(config, stream).key for stream in _streams(config)}
    if args.action == "replay":
        return _replay(config, base, _sources(base, keys, args) if args.id else None)
    return _discard(base, keys, args.dead_letters)


def _sources(base: Path, keys: set[str], args: argparse.Namespace) -> list[Destination]:
    """The destinations `--id` names, whose backlogs go to another: only to one the command names."""
    if args.redis_url is None:
        raise UsageError(
            "replay --id sends a backlog to the Redis of --redis-url and --stream, which the command "
            "must name: records never go to another Redis by default"
        )
    ended = {backlog.folder.name: backlog for backlog in backlogs(base) if not backlog.live}
    unknown = sorted(keys - set(ended))
    if unknown:
        raise UsageError(
            f"no backlog left by an ended process has the id {unknown[0]!r} (`tracestream spool list` "
            "shows them; a running process sends its own)"
        )
    return [ended[key].destination or Destination(unquote(key.rpartition("@")[0])) for key in sorted(keys)]


def _streams(config: Settings) -> tuple[str, ...]:
    """The spooled streams of one configured stream name: its logs and its spans."""
    return (config.stream, f"{config.stream}:spans")


def _list(base: Path, as_json: bool) -> int:
    spooled, refused = backlogs(base), dead_letters(base)
    if as_json:
        for backlog in spooled:
            print_json(_backlog_json(backlog))
        for letters in refused:
            print_json(_dead_letters_json(letters))
        return 0
    console = Console(highlight=False, soft_wrap=True)  # a line each, also in a pipe or a log
    if not spooled and not refused:
        console.print(f"nothing spooled under {base}")
    for backlog in spooled:
        console.print(shown(_backlog_line(backlog)))
    for letters in refused:
        where = describe(letters.destination)
        line = f"{letters.records} records Redis refused for {where}: {letters.summary()}"
        console.print(shown(f"dead letters: {line}; id {letters.folder.name}, file {letters.folder}"))
    return 0


def _backlog_line(backlog: Backlog) -> str:
    """What waits, and the commands that send or delete it; a running process sends its own."""
    head = f"{backlog.records} records ({backlog.size} B) for {describe(backlog.destination)}"
    if backlog.live:
        return (
            f"{head}: its process is running and sends them once Redis takes them; id {backlog.folder.name}"
        )
    discard = f"`tracestream spool discard --id {backlog.folder.name}`"
    replay = replay_command(backlog.destination)
    send = f"send them with `{replay}` or " if replay else ""
    return f"{head}, left by a process that ended: {send}delete them with {discard}"


def _backlog_json(backlog: Backlog) -> dict[str, object]:
    return {
        **_json_head("spool", backlog.folder, backlog.destination),
        "live": backlog.live,
        "segments": backlog.segments,
        "bytes": backlog.size,
        "records": backlog.records,
        "replay": None if backlog.live else replay_command(backlog.destination),
    }


def _dead_letters_json(letters: DeadLetters) -> dict[str, object]:
    head = _json_head("dead-letters", letters.folder, letters.destination)
    return {**head, "records": letters.records, "reasons": letters.reasons}


def _json_head(kind: str, folder: Path, destination: Destination | None) -> dict[str, object]:
    return {"kind": kind, "id": folder.name, "path": str(folder), "destination": describe(destination)}


@dataclass
class _Replayed:
    records: int = 0
    dead_lettered: int = 0
    torn: int = 0


def _replay(config: Settings, base: Path, sources: list[Destination] | None) -> int:
    """Through the exporter's own queue, so refused records are isolated as they are in a service.
    What was spooled for `sources` (default: the configured destination) goes to the configured one."""
    # The writer's floor, loaded only to replay: the other spool commands read, and load no OTel SDK.
    from tracestream.exporters import RedisStreamLogExporter, RedisStreamSpanExporter
    from tracestream.otel_setup.pipeline import BatchQueue

    done = _Replayed()
    complete, failing = True, False
    for exporter in (RedisStreamLogExporter(config), RedisStreamSpanExporter(config)):
        writer = exporter.writer
        target = Destination.of(config, writer.stream)
        for source in [target] if sources is None else [d for d in sources if d.is_spans == target.is_spans]:
            spool = Spool(process_directory(base), source, config.spool_max_bytes, say_takeover=False)
            queue: BatchQueue[Any] = BatchQueue(
                f"replay {writer.stream}", writer.write_rows, _REPLAY_BATCH, encode=writer.encode, spool=spool
            )
            complete = queue.flush(REPLAY_TIMEOUT_S) and complete
            failing = failing or writer.health.failing
            done.records += queue.counters.replayed
            done.dead_lettered += queue.counters.dead_lettered
            done.torn += queue.counters.dropped_torn
        writer.close()
    where = Destination.of(config, config.stream).server_url
    print(
        f"replayed {done.records} records to {where} ({done.dead_lettered} refused and dead-lettered,"
        f" {done.torn} lost in torn frames)"
    )
    if not complete:
        # A failing Redis ends the replay at once, having said why; a slow one, at the timeout.
        why = "its writes failed, as said above" if failing else f"not in {REPLAY_TIMEOUT_S:.0f}s"
        error_line(f"Redis at {where} did not take everything ({why}); the rest stays spooled")
        return 1
    return 0


def _discard(base: Path, keys: set[str], with_dead_letters: bool) -> int:
    removed = 0
    for backlog in backlogs(base):
        if backlog.folder.name in keys and not backlog.live:
            removed += backlog.records
            shutil.rmtree(backlog.folder, ignore_errors=True)
    refused = 0
    if with_dead_letters:
        for letters in dead_letters(base):
            if letters.folder.name in keys:
                refused += letters.records
                shutil.rmtree(letters.folder, ignore_errors=True)
    print(f"discarded {removed} spooled records and {refused} dead-lettered records")
    return 0
