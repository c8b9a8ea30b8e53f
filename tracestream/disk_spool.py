"""An on-disk spool for encoded stream rows that Redis could not take, kept per destination.

Layout: `<base>/<pid>-<token>/<destination key>/<sequence>.seg`. The destination key names
the stream and hashes where it lives (server or cluster seed, database, TLS; never the
password), so rows are replayed only into the Redis they were written for; the folder's
`destination.json` says where that is, for `tracestream spool list`. Each process owns one
directory, held with an exclusive `flock` for its whole life; the kernel drops the lock when
the process dies (even on `kill -9`), so a directory whose lock can be taken is an orphan, and
the next process that spools to the same destination adopts and replays it. Directories are
private to the user (0700, files 0600).

A segment is a sequence of frames: a 4-byte magic, the payload's length, its CRC32 and its
row count, then the zlib-compressed JSON array of rows. Frames are appended; a failed append
is cut off again, so no frame lands behind a torn one. A frame torn anyway (the process died
mid-write) is skipped: replay resynchronises on the next magic, and the rows its header
announced are counted as dropped. How far a segment was replayed is kept in `<sequence>.done`
after every frame, and a segment is deleted once all its frames are in Redis, so the next
process replays nothing twice (bar the one frame in flight when a process died).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import shlex
import shutil
import stat
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlsplit

import orjson

from tracestream._internal_log import internal_logger
from tracestream.forks import renew_in_child
from tracestream.schema import StreamKeys, dump_rows
from tracestream.settings import Settings, redis_database

Rows = list[list[str]]

_MAGIC = b"TSf2"
_HEADER = struct.Struct(">4sIII")  # magic, payload length, payload CRC32, rows
_LOCK_FILE = "lock"
_DESTINATION_FILE = "destination.json"
_SEGMENT_SUFFIX = ".seg"
_DONE_SUFFIX = ".done"
DEAD_LETTERS = "dead-letters"
_DEAD_LETTER_FILE = "records.jsonl"
SEGMENT_BYTES = 1 << 20


@dataclass(frozen=True)
class Destination:
    """Where spooled rows belong: the Redis server (or cluster seed), database, TLS and stream key."""

    stream: str
    server: str = ""  # "host:port" or a unix socket path; "" when the spool's maker did not say
    db: int = 0
    tls: bool = False
    cluster: bool = False

    @classmethod
    def of(cls, settings: Settings, stream: str) -> Destination:
        parts = urlsplit(settings.redis_url)
        if parts.scheme == "unix":
            server = parts.path
        else:
            server = f"{(parts.hostname or '').lower()}:{parts.port or 6379}"
        cluster = settings.redis_cluster
        db = 0 if cluster else redis_database(settings.redis_url)
        return cls(stream, server, db, parts.scheme == "rediss", cluster)

    @property
    def is_spans(self) -> bool:
        """Its rows go to a span stream, `<name>:spans`."""
        owner = self.stream.rpartition(":")[0]
        return bool(owner) and StreamKeys(owner).spans == self.stream

    @property
    def sibling(self) -> Destination:
        """The span spool's destination for a log spool's, and the other way round."""
        stream = self.stream_name if self.is_spans else StreamKeys(self.stream).spans
        return replace(self, stream=stream)

    @property
    def stream_name(self) -> str:
        """The stream name services set and `--stream` takes; a span spool's rows go to its span stream."""
        return self.stream.rpartition(":")[0] if self.is_spans else self.stream

    @property
    def url(self) -> str:
        """A URL that reaches the server without credentials, as `--redis-url` takes it; "" unrecorded."""
        if not self.server:
            return ""
        if self.server.startswith("/"):
            return f"{self._scheme}://{self.server}?db={self.db}"
        host, _, port = self.server.rpartition(":")
        host = f"[{host}]" if ":" in host else host
        return f"{self._scheme}://{host}:{port}/{self.db}"

    @property
    def server_url(self) -> str:
        """The server without credentials, as a URL (`unix:///run/redis.sock?db=2` for a socket)."""
        if not self.server:
            return "an unrecorded Redis"
        return self.url + self._cluster

    @property
    def _cluster(self) -> str:
        return " (cluster)" if self.cluster else ""

    @property
    def _scheme(self) -> str:
        return "unix" if self.server.startswith("/") else ("rediss" if self.tls else "redis")

    @property
    def key(self) -> str:
        """The folder name: readable stream, hashed server identity."""
        name = quote(self.stream, safe="")
        if not self.server:
            return f"{name}@unrecorded"
        # as folders have been named from the start
        identity = f"{self._scheme}://{self.server}/{self.db}{self._cluster}\n{self.stream}".encode()
        return f"{name}@{hashlib.sha256(identity).hexdigest()[:16]}"

    def describe(self, what: str = "") -> str:
        """Named as services and `--stream` name it: `tracestream:spans` reads `'tracestream' (spans)`;
        `what` in place of the signal."""
        signal = what or ("spans" if self.is_spans else "logs")
        return f"stream {self.stream_name!r} ({signal}) on {self.server_url}"


def spool_for(settings: Settings, stream: str) -> Spool | None:
    """The spool for `stream` at the configured Redis; None when `spool_max_bytes` is 0."""
    if not settings.spool_max_bytes:
        return None
    base = spool_base(settings)
    if not _writable_or_said(base):
        return None
    directory = process_directory(base, default=not settings.spool_dir)
    return Spool(directory, Destination.of(settings, stream), settings.spool_max_bytes)


# Each base checked, by the user checking it, and whether it was found unwritable.
_unwritable: dict[tuple[int, Path], bool] = {}


def _writable_or_said(base: Path) -> bool:
    """Checked at start, and said once a base: found out only in an outage, a spool that
    cannot be written lost at exit every record Redis had not taken. Without one the records
    wait in memory, as the line says, and no failing write to it is said again."""
    checked = (os.getuid(), base)
    if checked not in _unwritable:
        why = why_unwritable(base)
        _unwritable[checked] = why is not None
        if why is not None:
            internal_logger.warning(
                "the spool at %s cannot be written (%s): while Redis is down, records wait in memory "
                "only, and are lost at exit; TRACESTREAM_SPOOL_DIR names a writable directory",
                base,
                why,
            )
    return not _unwritable[checked]


def spool_base(settings: Settings) -> Path:
    return Path(settings.spool_dir) if settings.spool_dir else default_base()


def encode_frame(rows: Rows) -> bytes:
    payload = zlib.compress(dump_rows(rows), 1)
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload), len(rows)) + payload


@dataclass(frozen=True)
class Frame:
    end: int  # the offset just past the frame (or, for a torn one, of the next magic)
    rows: Rows | None  # None: torn or corrupt, skipped
    announced: int  # the row count in the header; 0 when the header itself is torn


def read_frames(path: Path, offset: int = 0) -> Iterator[tuple[int, Rows]]:
    """(offset after the frame, rows) for each intact frame from `offset` on."""
    return ((frame.end, frame.rows) for frame in scan_frames(path, offset) if frame.rows is not None)


def scan_frames(path: Path, offset: int = 0, end: int | None = None) -> Iterator[Frame]:
    """Every frame between `offset` and `end` (at most the end of the file), torn ones as `rows=None`."""
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        limit = size if end is None else min(end, size)
        file.seek(offset)
        while offset < limit:
            header = file.read(min(_HEADER.size, limit - offset))
            frame = _intact_frame(file, offset, header, limit) or _torn_frame(file, offset, header, limit)
            if frame.rows is None:
                internal_logger.warning(
                    "spool segment %s has a torn frame at byte %d (%d rows lost); replay goes on after it",
                    path,
                    offset,
                    frame.announced,
                )
            offset = frame.end
            file.seek(offset)
            yield frame


def announced_rows(path: Path, offset: int, end: int) -> int:
    """The rows the frame headers between `offset` and `end` announce, payloads unread; counting
    stops at a torn frame."""
    rows = 0
    if offset + _HEADER.size > end:  # all replayed: no file to open
        return rows
    try:
        with path.open("rb") as file:
            while offset + _HEADER.size <= end:
                file.seek(offset)
                magic, length, _, count = _HEADER.unpack(file.read(_HEADER.size))
                if magic != _MAGIC:
                    break
                rows += count
                offset += _HEADER.size + length
    except (OSError, struct.error):  # gone, or cut short
        pass
    return rows


def _intact_frame(file: BinaryIO, offset: int, header: bytes, limit: int) -> Frame | None:
    if len(header) < _HEADER.size:
        return None
    magic, length, checksum, count = _HEADER.unpack(header)
    end = offset + _HEADER.size + length
    if magic != _MAGIC or end > limit:
        return None
    payload = file.read(length)
    if len(payload) < length or zlib.crc32(payload) != checksum:
        return None
    try:
        rows = orjson.loads(zlib.decompress(payload))
    except (zlib.error, orjson.JSONDecodeError):
        return None
    return Frame(end, rows, count)


def _torn_frame(file: BinaryIO, offset: int, header: bytes, limit: int) -> Frame:
    """Skips to the next magic after `offset`, or to `limit`."""
    announced = _HEADER.unpack(header)[3] if len(header) == _HEADER.size and header[:4] == _MAGIC else 0
    file.seek(offset + 1)
    rest = file.read(limit - offset - 1)
    found = rest.find(_MAGIC)
    return Frame(offset + 1 + (found if found >= 0 else len(rest)), None, announced)


class ProcessDirectory:
    """This process's spool directory, created and locked only when something is first spooled.

    It also claims orphans: directories whose lock nobody holds. A claim is shared by every
    spool in this process, since `flock` would refuse a second claim from the same process.
    """

    def __init__(self, base: Path, *, default: bool = False) -> None:
        """`default`: `base` is the default location, which depends on the user."""
        self.base = base
        self._default = default
        self._user = os.getuid()
        self._writable = True  # as checked where the spool was made
        self._start()
        renew_in_child(self._start)

    def _start(self) -> None:
        """Also a forked child's start: the parent's directory and claims stay the parent's (closing
        the child's copies of their locks leaves the parent's held)."""
        self._mutex = threading.Lock()
        self._path: Path | None = None
        self._orphans: dict[Path, int] | None = None
        self._unreadable = False
        self._takeovers_said: set[tuple[str, str]] = set()

    def usable(self) -> bool:
        """Whether this process may spool here. A process whose user changed since (gunicorn's and
        uWSGI's `--user`, which a worker takes once forked from a root master) looks again: the
        default location is then the new user's, and one it cannot write is said in one line."""
        with self._mutex:
            user = os.getuid()
            if user != self._user:
                self._user = user
                if self._default:
                    self.base = default_base()
                self._writable = _writable_or_said(self.base)
            return self._writable

    def first_takeover(self, destination: Destination) -> bool:
        """True once per stream and Redis: the log and span spools' takeovers are said in one line."""
        said = (destination.server_url, destination.stream_name)
        with self._mutex:
            first = said not in self._takeovers_said
            self._takeovers_said.add(said)
            return first

    @property
    def path(self) -> Path | None:
        return self._path

    def ensure(self) -> Path:
        with self._mutex:
            if self._path is None:
                make_private_directory(self.base)
                name = f"{os.getpid()}-{secrets.token_hex(4)}"
                staging = self.base / f".{name}"  # adopters skip dot-directories
                staging.mkdir(mode=0o700)
                try:
                    _lock(staging / _LOCK_FILE, wait=True)  # held until this process ends
                    staging.rename(self.base / name)
                except OSError:  # out of file descriptors, say: the next write tries again
                    with contextlib.suppress(OSError):  # calls that need no descriptor
                        (staging / _LOCK_FILE).unlink(missing_ok=True)
                        staging.rmdir()
                    raise
                self._path = self.base / name
            return self._path

    def orphans(self, name: str) -> list[Path]:
        """Directories of dead processes holding a destination folder `name`, oldest first,
        claimed for this process (other destinations' orphans are left to their own writers);
        empty ones go."""
        if not self.usable():
            return []
        with self._mutex:
            if self._orphans is None:
                self._orphans = {}
            claimed = self._orphans
            try:
                folders = process_folders(self.base)
            except OSError as error:  # another user's base: this process spools, if it can, without them
                if not self._unreadable and not _unwritable.get((os.getuid(), self.base)):  # said once
                    internal_logger.warning("cannot look for spools that ended processes left: %s", error)
                self._unreadable = True
                folders = []
            for folder in folders:
                if folder in claimed or folder == self._path:
                    continue
                try:
                    claim = _claim_if_orphan(folder, name)
                except OSError:  # another user's, unreadable: not ours to take
                    continue
                if claim is not None:
                    claimed[folder] = claim
            return [folder for folder in claimed if (folder / name).is_dir()]

    def dead_holding(self, name: str) -> set[Path]:
        """Directories of dead processes holding a destination folder `name`, claimed by this
        process or by none, without claiming them: what another spool of this process will take."""
        with self._mutex:
            claimed = self._orphans or {}
            try:
                folders = process_folders(self.base)
            except OSError:
                return set()
            found = set()
            for folder in folders:
                if folder == self._path or not (folder / name).is_dir():
                    continue
                if folder in claimed:
                    found.add(folder)
                    continue
                try:
                    lock = _lock(folder / _LOCK_FILE, wait=False)
                except OSError:
                    continue
                if lock is not None:  # free, so its process is dead: let go again at once
                    os.close(lock)
                    found.add(folder)
            return found

    def release(self, stream_folder: Path) -> None:
        """A replayed orphan's destination folder goes; its directory too once nothing else is left."""
        shutil.rmtree(stream_folder, ignore_errors=True)
        folder = stream_folder.parent
        with self._mutex:
            if self._orphans is None or folder not in self._orphans:
                return
            if _holds_nothing(folder):
                shutil.rmtree(folder, ignore_errors=True)
                os.close(self._orphans.pop(folder))


def _elsewhere(error: OSError) -> str:
    """The hint for what another directory would mend (not a process out of file descriptors)."""
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR):
        return " (TRACESTREAM_SPOOL_DIR names another directory)"
    return ""


_directories: dict[Path, ProcessDirectory] = {}


def process_directory(base: Path, *, default: bool = False) -> ProcessDirectory:
    """One per base directory and process, shared by the log and span spools."""
    if base not in _directories:
        _directories[base] = ProcessDirectory(base, default=default)
    return _directories[base]


def default_base() -> Path:
    """`$XDG_STATE_HOME/tracestream/spool`, else under `~/.local/state`. Where that is no absolute
    path this user can write (a container's arbitrary uid has no home, or `/nonexistent`; a
    read-only root filesystem), a directory of this user's own in the temporary directory: the
    home's spool was a relative `~` directory in the working one, or none at all."""
    state = os.environ.get("XDG_STATE_HOME", "")
    home = os.path.expanduser("~")
    if not os.path.isabs(state):  # as the XDG spec says of a relative one
        state = os.path.join(home, ".local", "state")
    base = Path(state) / "tracestream" / "spool"
    if base.is_absolute() and why_unwritable(base) is None and _is_directory(home):
        return base
    try:
        temporary = tempfile.gettempdir()
    except OSError:  # none this user can write in either: the home's, which says why in a line
        return base
    own = Path(temporary) / f"tracestream-{os.getuid()}"
    with contextlib.suppress(OSError):  # there already, or no temporary directory to write in
        own.mkdir(mode=0o700)
    with contextlib.suppress(OSError):
        status = own.lstat()
        if stat.S_ISDIR(status.st_mode) and status.st_uid == os.getuid() and not status.st_mode & 0o077:
            return own / "spool"
    return base  # another user's in a shared temporary directory: not ours to write in


def why_unwritable(base: Path) -> str | None:
    """Why this process could not make or write `base`; None when it can."""
    existing = base
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as error:  # a directory on the way this user may not enter
        return f"{existing.parent} cannot be entered: {error.strerror}"
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is {'read-only' if _read_only_mount(existing) else 'not writable by this user'}"
    return None


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _is_directory(path: str) -> bool:
    """A home that is not there (Debian's `/nonexistent`) is not made, even by root, who could."""
    try:
        return os.path.isdir(path)
    except OSError:
        return False


def make_private_directory(path: Path) -> None:
    """Create `path` readable by this user only; an existing one of ours loses group and other rights.
    Parents it needs are made writable by this user alone, whatever the umask (`~/.local` made
    writable by others would let them plant programs the user runs)."""
    missing = [parent for parent in path.parents if not parent.exists()]
    for parent in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            parent.mkdir(mode=0o755)
    path.mkdir(exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):  # not ours: its owner decides who reads it
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)


def process_folders(base: Path) -> list[Path]:
    """Every process directory under `base` (live or orphaned), oldest first."""
    if not base.is_dir():
        return []
    folders = [f for f in base.iterdir() if not f.name.startswith(".") and _has_lock_file(f)]
    return sorted(folders, key=_age)


def _has_lock_file(folder: Path) -> bool:
    try:
        return (folder / _LOCK_FILE).exists()
    except OSError:  # another user's, unreadable
        return False


def is_orphan(folder: Path) -> bool:
    """No live process holds the directory (the lock is taken and given back at once)."""
    claim = _lock(folder / _LOCK_FILE, wait=False)
    if claim is None:
        return False
    os.close(claim)
    return True


def _claim_if_orphan(folder: Path, name: str) -> int | None:
    """The lock of a dead process's directory holding a folder `name`; one holding nothing goes."""
    if not (folder / name).is_dir() and not _holds_nothing(folder):
        return None
    claim = _lock(folder / _LOCK_FILE, wait=False)
    if claim is not None and _holds_nothing(folder):
        shutil.rmtree(folder, ignore_errors=True)
        os.close(claim)
        return None
    return claim


def _holds_nothing(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name != _LOCK_FILE]


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


def _write_private(path: Path, data: bytes) -> None:
    """Replace `path` whole (a crash leaves the old or the new content), mode 0600."""
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, data)
    finally:
        os.close(descriptor)
    staging.replace(path)


def describe(destination: Destination | None) -> str:
    """Where a destination folder's rows belong, in plain words."""
    return destination.describe() if destination else "a destination its writer did not record"


def replay_command(destination: Destination | None) -> str | None:
    """The command that sends a destination's rows to its Redis now; None when it was not recorded."""
    if destination is None or not destination.server:
        return None
    cluster = " --cluster" if destination.cluster else ""
    url, stream = shlex.quote(destination.url), shlex.quote(destination.stream_name)
    return f"tracestream spool replay --redis-url {url} --stream {stream}{cluster}"


def read_destination(folder: Path) -> Destination | None:
    """What a destination folder's `destination.json` records; None for an older spool without it."""
    try:
        return Destination(**orjson.loads((folder / _DESTINATION_FILE).read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None


def done_offset(segment: Path) -> int:
    """How far `segment` was replayed, as its `.done` file says."""
    try:
        return int(segment.with_suffix(_DONE_SUFFIX).read_text())
    except (OSError, ValueError):
        return 0


@dataclass
class _Segment:
    path: Path
    size: int
    read_offset: int = 0
    adopted: bool = False


@dataclass
class TornFrames:
    """Frames replay had to skip, and the rows their headers announced (now counted as dropped)."""

    frames: int = 0
    rows: int = 0


class Spool:
    """A size-capped FIFO of row batches on disk for one destination, used by one worker thread."""

    def __init__(
        self,
        directory: ProcessDirectory,
        destination: Destination | str,
        max_bytes: int,
        *,
        say_takeover: bool = True,
    ) -> None:
        """`say_takeover`: a service says it sends what ended processes left before its own
        records; `tracestream spool replay`, which sends nothing else, says what it sent instead."""
        self._directory = directory
        self.destination = destination if isinstance(destination, Destination) else Destination(destination)
        self._name = self.destination.key
        self.max_bytes = max_bytes
        self._say_takeover = say_takeover
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._segments: list[_Segment] = []
        self._writing: _Segment | None = None
        self._sequence = 0
        self._adopted = False
        self._peeked_end = 0
        self.torn = TornFrames()

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._start()  # the parent's segments are the parent's to replay

    @property
    def size(self) -> int:
        """Bytes on disk, replayed frames of a live segment included."""
        return sum(segment.size for segment in self._segments)

    def rows_waiting(self) -> int:
        """Rows not yet replayed, taken-over ones included: read off the frames' headers on disk."""
        self._check_fork()
        return sum(announced_rows(part.path, part.read_offset, part.size) for part in self._segments)

    def __bool__(self) -> bool:
        self._check_fork()
        self._adopt_orphans()
        return any(segment.size > segment.read_offset for segment in self._segments)

    def append(self, rows: Rows) -> bool:
        """Store a batch at the tail; False when the spool is full or the disk refuses it.

        A write that fails halfway is cut off again, so the next frame never lands behind
        a torn one; if even that fails, the segment takes no more frames.
        """
        self._check_fork()
        if not self._directory.usable():
            return False
        self._adopt_orphans()
        frame = encode_frame(rows)
        if self.size + len(frame) > self.max_bytes:
            return False
        try:
            segment = self._tail(len(frame))
        except OSError as error:
            internal_logger.warning("cannot write to the spool: %s%s", error, _elsewhere(error))
            return False
        try:
            _append_private(segment.path, frame)
        except OSError as error:
            internal_logger.warning("cannot write to the spool: %s%s", error, _elsewhere(error))
            try:
                os.truncate(segment.path, segment.size)
            except OSError:
                self._writing = None
            return False
        segment.size += len(frame)
        return True

    def _tail(self, incoming: int) -> _Segment:
        writing = self._writing
        if writing is None or (writing.size and writing.size + incoming > SEGMENT_BYTES):
            folder = self._folder(self._directory.ensure())
            writing = _Segment(folder / f"{self._sequence:016d}{_SEGMENT_SUFFIX}", 0)
            self._sequence += 1
            self._segments.append(writing)
            self._writing = writing
        return writing

    def _folder(self, parent: Path) -> Path:
        """This destination's folder under `parent`, recording where its rows belong."""
        folder = parent / self._name
        if not folder.is_dir():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.destination.server:
                _write_private(folder / _DESTINATION_FILE, orjson.dumps(asdict(self.destination)))
        return folder

    def peek(self) -> Rows | None:
        """The oldest batch not yet replayed, or None; torn frames on the way are counted and passed."""
        self._check_fork()
        self._adopt_orphans()
        while self._segments:
            head = self._segments[0]
            for frame in scan_frames(head.path, head.read_offset, head.size):
                if frame.rows is not None:
                    self._peeked_end = frame.end
                    return frame.rows
                self.torn.frames += 1
                self.torn.rows += frame.announced
                self._replayed_to(head, frame.end)
            if head is self._writing:
                return None
            self._discard_head()
        return None

    def pop(self) -> None:
        """The batch `peek` returned is in Redis: move past it, on disk too."""
        head = self._segments[0]
        self._replayed_to(head, self._peeked_end)
        if head.read_offset >= head.size:
            self._discard_head()

    def _replayed_to(self, segment: _Segment, offset: int) -> None:
        segment.read_offset = offset
        if offset < segment.size:
            try:
                _write_private(segment.path.with_suffix(_DONE_SUFFIX), str(offset).encode())
            except OSError as error:  # the next process would replay this segment's frames again
                internal_logger.warning("cannot record spool replay progress: %s", error)

    def _discard_head(self) -> None:
        head = self._segments.pop(0)
        if head is self._writing:
            self._writing = None  # the next batch starts a new segment
        head.path.unlink(missing_ok=True)
        head.path.with_suffix(_DONE_SUFFIX).unlink(missing_ok=True)
        if head.adopted and not any(s.path.parent == head.path.parent for s in self._segments):
            self._directory.release(head.path.parent)

    def _adopt_orphans(self) -> None:
        """Once per process: put the segments of dead processes for this destination first in line."""
        if self._adopted:
            return
        self._adopted = True
        adopted: list[_Segment] = []
        left_by = set()
        for folder in self._directory.orphans(self._name):
            stream_folder = folder / self._name
            segments = sorted(stream_folder.glob(f"*{_SEGMENT_SUFFIX}"))
            if not segments:
                self._directory.release(stream_folder)
                continue
            left_by.add(folder)
            adopted += [
                _Segment(path, path.stat().st_size, done_offset(path), adopted=True) for path in segments
            ]
        if adopted and self._say_takeover and self._directory.first_takeover(self.destination):
            # One line for the stream's logs and spans: the processes that left either (a
            # gunicorn master's records are logs alone, its workers' spans too).
            left_by |= self._directory.dead_holding(self.destination.sibling.key)
            internal_logger.warning(
                "took over the spool that %s left for stream %r on %s: its records are sent before "
                "this process's own",
                "1 ended process" if len(left_by) == 1 else f"{len(left_by)} ended processes",
                self.destination.stream_name,
                self.destination.server_url,
            )
        self._segments[0:0] = adopted

    def dead_letter(self, rows: Rows, reason: str) -> bool:
        """Keep rows Redis refused: a line `{"reason": …, "rows": […]}` appended to
        `<base>/dead-letters/<destination key>/records.jsonl`."""
        if not self._directory.usable():
            return False
        line = b'{"reason":' + orjson.dumps(reason) + b',"rows":' + dump_rows(rows) + b"}\n"
        try:
            make_private_directory(self._directory.base / DEAD_LETTERS)
            folder = self._folder(self._directory.base / DEAD_LETTERS)
            _append_private(folder / _DEAD_LETTER_FILE, line)
        except OSError as error:
            internal_logger.warning("cannot write dead letters to the spool: %s", error)
            return False
        return True


def _append_private(path: Path, data: bytes) -> None:
    """Append all of `data` to `path` (created 0600); an OSError may leave part of it written."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class Backlog:
    """Rows spooled for one destination in one process directory, not yet replayed."""

    folder: Path
    destination: Destination | None  # None: written by a tracestream that did not record it
    live: bool  # its process is still running (and will replay it itself)
    segments: int
    size: int  # bytes not yet replayed
    records: int


def backlogs(base: Path) -> list[Backlog]:
    """What waits under `base`, oldest process first; destination folders that replay emptied are left out."""
    found = []
    for process in process_folders(base):
        live = not is_orphan(process)
        for folder in sorted(path for path in process.iterdir() if path.is_dir()):
            segments = [(path, done_offset(path)) for path in sorted(folder.glob(f"*{_SEGMENT_SUFFIX}"))]
            size = sum(path.stat().st_size - done for path, done in segments)
            if size <= 0:
                continue
            records = sum(len(rows) for path, done in segments for _, rows in read_frames(path, done))
            found.append(Backlog(folder, read_destination(folder), live, len(segments), size, records))
    return found


@dataclass(frozen=True)
class DeadLetters:
    """Records Redis refused for one destination, by reason."""

    folder: Path
    destination: Destination | None
    reasons: dict[str, int]

    @property
    def records(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        """`<records>: <reason>` for each reason."""
        return "; ".join(f"{count}: {reason}" for reason, count in self.reasons.items())


def dead_letters(base: Path) -> list[DeadLetters]:
    found = []
    root = base / DEAD_LETTERS
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        reasons: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError), (folder / _DEAD_LETTER_FILE).open("rb") as lines:
            for line in lines:
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:  # a line cut short by a crash
                    continue
                reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + len(entry["rows"])
        found.append(DeadLetters(folder, read_destination(folder), reasons))
    return found
