"""`tracestream export`: every matching record, newest first, as NDJSON or CSV."""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import os
import shutil
import stat
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import orjson
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tracestream.cli.common import Console, UsageError, add_command, output_encoding, reader, settings
from tracestream.cli.record_lines import FILTERS, query_from
from tracestream.query import iter_records, record_json
from tracestream.schema import LogEntry, dump_json
from tracestream.shards import shards
from tracestream.terminal_text import json_safe, visible

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers

CSV_COLUMNS = (
    "timestamp", "severity", "service", "body", "trace_id", "span_id", "attributes", "resource",
    "scope", "code", "exception_type", "exception_message", "record_id", "id",
)  # fmt: skip
BATCH = 1000


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "export",
        run,
        "write matching records as NDJSON or CSV",
        "Write every matching record, newest first. A progress bar shows when stderr is a terminal.",
        FILTERS,
    )
    parser.add_argument("-f", "--format", choices=("ndjson", "csv"), default="ndjson", help="default ndjson")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument(
        "--progress", action="store_true", help="show the progress bar even when stderr is not a terminal"
    )


def run(args: argparse.Namespace) -> int:
    query = query_from(args)
    stream = settings(args).stream
    # Asked before the progress bar stands in for stdout: rich's stand-in has no encoding.
    terminal = output_encoding() if args.output is None and sys.stdout.isatty() else None
    with reader(args) as client, _output(args.output) as out:
        total = sum(int(shard.client.xlen(shard.keys.logs)) for shard in shards(client, stream))
        with _progress(args.progress) as progress:  # once Redis answered: its trouble stays one line
            task = progress.add_task("exporting", total=total)
            records = iter_records(
                client, stream, query, batch=BATCH, on_scanned=lambda count: progress.advance(task, count)
            )
            if args.format == "csv":
                written = _write_csv(records, out, terminal)
            else:
                written = _write_ndjson(records, out)
            progress.update(task, completed=total)
    print(f"exported {written} records", file=sys.stderr)
    return 0


def _write_ndjson(records: Iterator[LogEntry], out: IO[bytes]) -> int:
    written = 0
    for entry in records:
        out.write(json_safe(orjson.dumps(record_json(entry))) + b"\n")
        written += 1
    return written


def _write_csv(records: Iterator[LogEntry], out: IO[bytes], terminal: str | None) -> int:
    """Exact UTF-8 in a file or a pipe; on a terminal, in its encoding (`terminal`), with control
    characters and what that encoding cannot take as escapes, as every command shows text there."""
    encoding = terminal or "utf-8"
    cell: Callable[[str], str] = functools.partial(visible, encoding=encoding) if terminal else str
    text = io.TextIOWrapper(out, encoding=encoding, newline="", write_through=True)
    writer = csv.DictWriter(text, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    written = 0
    for entry in records:
        row = record_json(entry)
        row["attributes"] = dump_json(row["attributes"])
        row["resource"] = dump_json(row["resource"])
        writer.writerow({key: cell(value) if isinstance(value, str) else value for key, value in row.items()})
        written += 1
    text.detach()
    return written


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    """stdout, or FILE. A regular FILE is replaced only when the export succeeds: records go to a
    new file beside it, renamed over it at the end, so a failed export leaves FILE as it was.
    Anything else (`/dev/null`, a FIFO, a terminal) is written in place."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(os.path.realpath(path))
    with _cannot_write(path):
        if target.exists() and not stat.S_ISREG(target.stat().st_mode):
            partial = None
            file = open(target, "wb")  # noqa: SIM115
        else:
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
            file = open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")  # noqa: SIM115
    try:
        with file:
            yield file
        if partial is not None:
            with _cannot_write(path):
                if target.exists():
                    shutil.copymode(target, partial)  # FILE keeps its permissions
                partial.replace(target)
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _cannot_write(path: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None


def _progress(forced: bool) -> Progress:
    """Shown when stderr is a terminal, or `forced`: whether it is one is asked of the file, not of
    rich, which FORCE_COLOR persuades."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not (forced or sys.stderr.isatty()),
        transient=not forced,
    )
