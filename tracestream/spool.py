"""An on-disk spool for encoded stream rows that Redis could not take.

Layout: `<base>/<pid>-<token>/<stream key, quoted>/<sequence>.seg`. Each process owns one
directory, held with an exclusive `flock` for its whole life; the kernel drops the lock
when the process dies (even on `kill -9`), so a directory whose lock can be taken is an
orphan, and the next process that spools to the same stream adopts and replays it.

A segment is a sequence of frames: a 4-byte length, a 4-byte CRC32 and a zlib-compressed
JSON array of rows. Frames are appended and never rewritten; a segment is deleted once all
its frames are in Redis. A frame cut short by a crash fails its length or checksum and is
skipped, so a torn write loses only the batch being written when the process died. After a
crash the half-replayed head segment is replayed again: the copies carry the same record
ids, which readers drop.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import orjson

from tracestream._internal_log import internal_logger
from tracestream.schema import dump_rows

Rows = list[list[str]]

_HEADER = struct.Struct(">II")
_LOCK_FILE = "lock"
_SEGMENT_SUFFIX = ".seg"
SEGMENT_BYTES = 1 << 20


def encode_frame(rows: Rows) -> bytes:
    payload = zlib.compress(dump_rows(rows), 1)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(path: Path, offset: int = 0) -> Iterator[tuple[int, Rows]]:
    """(offset after the frame, rows) for each intact frame from `offset` on."""
    with path.open("rb") as file:
        file.seek(offset)
        while True:
            header = file.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            length, checksum = _HEADER.unpack(header)
            payload = file.read(length)
            if len(payload) < length or zlib.crc32(payload) != checksum:
                internal_logger.warning("spool segment %s has a torn frame at byte %d; skipped", path, offset)
                return
            offset = file.tell()
            yield offset, orjson.loads(zlib.decompress(payload))


class ProcessDirectory:
    """This process's spool directory, created and locked only when something is first spooled.

    It also claims orphans: directories whose lock nobody holds. A claim is shared by every
    spool in this process, since `flock` would refuse a second claim from the same process.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self._mutex = threading.Lock()
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._path: Path | None = None
        self._orphans: dict[Path, int] | None = None

    def _check_fork(self) -> None:
        """A forked child starts afresh; closing its copy of the parent's lock leaves the parent's held."""
        if self._pid != os.getpid():
            self._start()

    @property
    def path(self) -> Path | None:
        self._check_fork()
        return self._path

    def ensure(self) -> Path:
        with self._mutex:
            self._check_fork()
            if self._path is None:
                self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
                name = f"{os.getpid()}-{secrets.token_hex(4)}"
                staging = self.base / f".{name}"  # adopters skip dot-directories
                staging.mkdir(mode=0o700)
                _lock(staging / _LOCK_FILE, wait=True)  # held until this process ends
                staging.rename(self.base / name)
                self._path = self.base / name
            return self._path

    def orphans(self) -> list[Path]:
        """Directories of dead processes, oldest first, claimed for this process."""
        with self._mutex:
            self._check_fork()
            if self._orphans is None:
                self._orphans = {}
                folders = sorted(self.base.iterdir(), key=_age) if self.base.is_dir() else []
                for folder in folders:
                    if folder.name.startswith(".") or not (folder / _LOCK_FILE).exists():
                        continue
                    claim = _lock(folder / _LOCK_FILE, wait=False)
                    if claim is not None:
                        self._orphans[folder] = claim
            return list(self._orphans)

    def release(self, stream_folder: Path) -> None:
        """A replayed orphan's stream folder goes; its directory too once nothing else is left."""
        shutil.rmtree(stream_folder, ignore_errors=True)
        folder = stream_folder.parent
        with self._mutex:
            if self._orphans is None or folder not in self._orphans:
                return
            if not [p for p in folder.iterdir() if p.name != _LOCK_FILE]:
                shutil.rmtree(folder, ignore_errors=True)
                os.close(self._orphans.pop(folder))


_directories: dict[Path, ProcessDirectory] = {}


def process_directory(base: Path) -> ProcessDirectory:
    """One per base directory and process, shared by the log and span spools."""
    return _directories.setdefault(base, ProcessDirectory(base))


def default_base() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "tracestream" / "spool"


def _age(folder: Path) -> float:
    try:
        return folder.stat().st_mtime
    except OSError:
        return 0.0


def _lock(path: Path, *, wait: bool) -> int | None:
    """An exclusive flock on `path`, or None if another live process holds it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


@dataclass
class _Segment:
    path: Path
    size: int
    read_offset: int = 0
    adopted: bool = False


class Spool:
    """A size-capped FIFO of row batches on disk for one stream, used by one worker thread."""

    def __init__(self, directory: ProcessDirectory, stream: str, max_bytes: int) -> None:
        self._directory = directory
        self._name = quote(stream, safe="")
        self.max_bytes = max_bytes
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._segments: list[_Segment] = []
        self._writing: _Segment | None = None
        self._sequence = 0
        self._adopted = False

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._start()  # the parent's segments are the parent's to replay

    @property
    def size(self) -> int:
        """Bytes on disk, replayed frames of a live segment included."""
        return sum(segment.size for segment in self._segments)

    def __bool__(self) -> bool:
        self._check_fork()
        self._adopt_orphans()
        return any(segment.size > segment.read_offset for segment in self._segments)

    def append(self, rows: Rows) -> bool:
        """Store a batch at the tail; False when the spool is full or the disk refuses it."""
        self._check_fork()
        self._adopt_orphans()
        frame = encode_frame(rows)
        if self.size + len(frame) > self.max_bytes:
            return False
        try:
            segment = self._tail(len(frame))
            with segment.path.open("ab") as file:
                file.write(frame)
        except OSError as error:
            internal_logger.warning("cannot write to the spool: %s", error)
            return False
        segment.size += len(frame)
        return True

    def _tail(self, incoming: int) -> _Segment:
        writing = self._writing
        if writing is None or (writing.size and writing.size + incoming > SEGMENT_BYTES):
            folder = self._directory.ensure() / self._name
            folder.mkdir(exist_ok=True)
            writing = _Segment(folder / f"{self._sequence:016d}{_SEGMENT_SUFFIX}", 0)
            self._sequence += 1
            self._segments.append(writing)
            self._writing = writing
        return writing

    def peek(self) -> Rows | None:
        """The oldest batch not yet replayed, or None."""
        self._check_fork()
        self._adopt_orphans()
        while self._segments:
            head = self._segments[0]
            for _, rows in read_frames(head.path, head.read_offset):
                return rows
            if head is self._writing:
                return None
            self._discard_head()
        return None

    def pop(self) -> None:
        """The batch `peek` returned is in Redis: move past it."""
        head = self._segments[0]
        for offset, _ in read_frames(head.path, head.read_offset):
            head.read_offset = offset
            break
        if head.read_offset >= head.size and head is not self._writing:
            self._discard_head()

    def _discard_head(self) -> None:
        head = self._segments.pop(0)
        head.path.unlink(missing_ok=True)
        if head.adopted and not any(s.path.parent == head.path.parent for s in self._segments):
            self._directory.release(head.path.parent)

    def _adopt_orphans(self) -> None:
        """Once per process: put the segments of dead processes for this stream first in line."""
        if self._adopted:
            return
        self._adopted = True
        adopted: list[_Segment] = []
        for folder in self._directory.orphans():
            stream_folder = folder / self._name
            if not stream_folder.is_dir():
                continue
            segments = sorted(stream_folder.glob(f"*{_SEGMENT_SUFFIX}"))
            if not segments:
                self._directory.release(stream_folder)
                continue
            internal_logger.warning("replaying %d spool segment(s) left by %s", len(segments), folder.name)
            adopted += [_Segment(path, path.stat().st_size, adopted=True) for path in segments]
        self._segments[0:0] = adopted
