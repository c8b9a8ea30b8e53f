"""Every stdlib log record, seen below the handler tree.

A handler on the root logger misses what an app's own logging setup does later:
`dictConfig` with a `root` entry removes it, a logger with `propagate=False` never
reaches it, `dictConfig`'s default disables every logger it does not name, and an app
whose root level is WARNING never creates its INFO records at all. It also turns off
`logging.lastResort`, so an app without handlers stops printing its errors.

So no handler is added anywhere. Like Sentry's logging integration we wrap
`logging.Logger` methods, once per process, but none that runs while the app's handlers do:
a handler that walks the stack to find the logging call (loguru's InterceptHandler) must
find only logging's frames above it, as without us.

- `filter`, which `Logger.handle` calls once per record before the app's handlers: a record
  that passed the logger's filters comes to us, then goes on to the handlers as before
  (`handle` does not check levels: a record passed to it directly reaches them as without us).
- `isEnabledFor`, so a record at or above our level is created even where the app's level or
  a disabled logger would skip it. `filter` takes such a record for us alone and stops it
  before the app's handlers, which never see a record the app would not have created, so
  nothing it prints changes. A logger with filters, or of a class that overrides `handle`,
  gets the app's answer: those would run on the record, and could count it. So does a logging
  call whose keyword arguments `_log` or `makeRecord` refuse (`log.info("x", user_id=5)`,
  `extra={"filename": f}`): they check them only for a record they make, and the app's levels
  kept the mistake from raising until now; the first such call is said in one line. A disabled
  logger's `handle` returns before `filter`: the first time we ask one for a record it gets
  a `makeRecord` of ours, which takes its records as they are made.

A server's access line is the one record a request record stands for: the integration that
writes a request's record marks the request's context as it starts (`replace_access_line`).
Servers log the line in that context (uvicorn and hypercorn from the app's `send`, gunicorn
on the thread that ran the app, after it returned), where the mark is taken once, so a
thread that next serves a request we never see does not inherit it. A marked line is kept
out, and not even created when the app's level skips it; an unmarked one (another
framework's app, an excluded URL) reaches the stream as any record does.
"""

from __future__ import annotations

import functools
import logging
import logging.handlers
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from types import FrameType
from typing import Any

from tracestream._internal_log import internal_logger, saying_here

__all__ = [
    "LogCapture",
    "count_seen_records",
    "current",
    "install",
    "replace_access_line",
    "take_access_line_mark",
    "uninstall",
    "was_seen",
    "writing_to_redis",
]

ACCESS_LOGGERS = frozenset({"uvicorn.access", "gunicorn.access", "hypercorn.access", "granian.access"})

_MAX_REMEMBERED_NAMES = 10_000
# Libraries whose INFO or DEBUG lines are made only when the app asks for them, and carry what
# it did not mean to keep: SQLAlchemy's are every statement and its parameters (`echo`);
# Django's database lines each statement with its parameters, and its template engine's the repr
# of the context it failed to resolve a variable in (for a 500 report, every frame's locals and
# the POST data); multiprocessing's (billiard's, in Celery's prefork pool) a line per child
# started, which Celery turns on with `MP_LOG` only. For these `isEnabledFor` answers as the
# app's levels do; what they let through still reaches the stream.
_LOGGED_ON_REQUEST_ONLY = ("sqlalchemy", "django.db.backends", "django.template", "multiprocessing")

# Set while tracestream itself writes to Redis (its export threads, a flush): what redis-py
# logs then is ours, not the app's, and goes to neither the app's handlers nor the stream.
writing_to_redis: ContextVar[bool] = ContextVar("tracestream_writing_to_redis", default=False)
_access_line_replaced: ContextVar[bool] = ContextVar("tracestream_access_line_replaced", default=False)

_is_enabled_for = logging.Logger.isEnabledFor
_make_record = logging.Logger.makeRecord
_filter = logging.Logger.filter
_handle = logging.Logger.handle
_LOG_CODE = logging.Logger._log.__code__
# The logging methods that hand their keyword arguments to `_log` once `isEnabledFor` says yes
# (`exception`, `fatal` and `warn` call one of them; `LoggerAdapter.log` calls `log`).
_LOGGING_CALLS = frozenset(
    getattr(logging.Logger, name).__code__
    for name in ("debug", "info", "warning", "error", "critical", "log")
)
_LOG_KEYWORDS = frozenset(_LOG_CODE.co_varnames[4 : _LOG_CODE.co_argcount])  # after level, msg, args
# The `extra=` keys `makeRecord` refuses: a record's own fields and what formatting adds; and
# those the OTel logging instrumentation's factory adds, where it makes the records.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_OTEL_RECORD_FIELDS = _RECORD_FIELDS | {"otelSpanID", "otelTraceID", "otelTraceSampled", "otelServiceName"}
_prepare = logging.handlers.QueueHandler.prepare
_listener_prepare = logging.handlers.QueueListener.prepare
_make_pickle = logging.handlers.SocketHandler.makePickle
# A record we took that leaves for another process (a multiprocessing queue, a socket) carries
# this; the process that hands it to `Logger.handle` there (the logging cookbook's listener and
# socket receiver) removes it before its handlers run, and does not store the record again.
_TAKEN_ELSEWHERE = "_tracestream_taken"
_PROCESS_QUEUE_MODULES = frozenset({"multiprocessing", "billiard"})
_MOST_HANDLE_OVERRIDES = 16


# Per thread (by ident), the logger and level `isEnabledFor` just answered yes for, for us
# alone. Empty while no thread holds such an answer, so an app's record costs a truth test.
_asked_for_us: dict[int, tuple[logging.Logger, int]] = {}
_get_ident = threading.get_ident
# Loggers the app disabled that we made records for: each has a `makeRecord` of ours.
_disabled_loggers: list[logging.Logger] = []


class LogCapture:
    """Hands records at or above `level` to `handler`, except those of excluded loggers."""

    def __init__(self, handler: logging.Handler, level: int, excluded: Iterable[str] = ()) -> None:
        self.handler = handler
        self.level = level
        self.excluded = tuple(excluded)
        self._wanted: dict[str, bool] = {}
        self._asked_for: dict[str, bool] = {}
        self._told_of_a_lost_record = False
        self._told_of_refused_arguments = False
        # Told of each server's access line that no request record stood for.
        self.unreplaced_access_line: Callable[[logging.LogRecord], object] | None = None

    def wants(self, logger_name: str) -> bool:
        """Loggers repeat, so each name is matched against the exclusions once."""
        wanted = self._wanted.get(logger_name)
        if wanted is None:
            wanted = _remember(self._wanted, logger_name, not _under(logger_name, self.excluded))
        return wanted

    def asks_for(self, logger_name: str) -> bool:
        """Whether records the app's levels skip are made for us from this logger."""
        asked = self._asked_for.get(logger_name)
        if asked is None:
            asked = self.wants(logger_name) and not _under(logger_name, _LOGGED_ON_REQUEST_ONLY)
            _remember(self._asked_for, logger_name, asked)
        return asked

    def take(self, record: logging.LogRecord) -> None:
        try:
            if _seen.counting:
                _seen.note(record)
            if (
                record.levelno >= self.level
                and self.wants(record.name)
                and not (record.name in ACCESS_LOGGERS and self._replaced(record))
                and not saying_here()  # a line of ours the app's stderr logged
            ):
                self.handler.handle(record)
        except Exception as error:  # whatever fails here stays here: the app's logging call goes on
            self._say_a_record_is_lost(error)

    def _replaced(self, access_line: logging.LogRecord) -> bool:
        if take_access_line_mark():
            return True
        if self.unreplaced_access_line is not None:
            self.unreplaced_access_line(access_line)
        return False

    def refused_arguments(self, logger_name: str, level: int, refusal: str) -> None:
        """Said of the first only: the call is the app's mistake, which shows once its levels let
        the record through, and the stream goes without the record until then."""
        if not self._told_of_refused_arguments:
            self._told_of_refused_arguments = True
            internal_logger.warning(
                "a %r %s record is not in the stream: its call passes what logging raises on (%s) "
                "once the app's levels let %s through; said once",
                logger_name,
                logging.getLevelName(level),
                refusal,
                logging.getLevelName(level),
            )

    def _say_a_record_is_lost(self, error: Exception) -> None:
        """Of the first only. The line said is a log record too, and comes back here."""
        if not self._told_of_a_lost_record:
            self._told_of_a_lost_record = True
            internal_logger.warning("cannot take a log record, dropped: %r", error)


class _SeenRecords:
    """The stdlib records the capture saw (taken, or kept out on purpose), counted by thread,
    call site and message, once loguru's sink asks. loguru's InterceptHandler recipe hands each
    on to loguru, whose sink then meets it again: on the logging thread, or later on its
    queue's (`enqueue=True`). A name the capture excludes, a line a request record replaces,
    stay out that way too. Bounded: a record no sink asks about is forgotten in time."""

    def __init__(self) -> None:
        self.counting = False
        self._counts: dict[tuple[int, str, int, str], int] = {}
        self._lock = threading.Lock()

    def note(self, record: logging.LogRecord) -> None:
        key = (_get_ident(), record.pathname, record.lineno, _message_or_nothing(record))
        with self._lock:
            counts = self._counts
            counts[key] = counts.get(key, 0) + 1
            if len(counts) > _MAX_SEEN_RECORDS:
                del counts[next(iter(counts))]

    def take(self, thread: int, path: str, line: int, message: str) -> bool:
        key = (thread, path, line, message)
        with self._lock:
            count = self._counts.pop(key, 0)
            if count > 1:
                self._counts[key] = count - 1
        return count > 0


_MAX_SEEN_RECORDS = 4096
_seen = _SeenRecords()


def count_seen_records() -> None:
    """From now on, remember what the capture sees, for `was_seen`."""
    _seen.counting = True


def was_seen(thread: int, path: str, line: int, message: str) -> bool:
    """Whether the capture saw a stdlib record logged on `thread` at `path:line` with `message`
    that no one asked about yet: it is in the stream already, or kept out of it."""
    return _seen.take(thread, path, line, message)


def _message_or_nothing(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a handler formatting it fails the same way: nothing is handed on
        return ""


def _under(logger_name: str, names: Iterable[str]) -> bool:
    return any(logger_name == name or logger_name.startswith(f"{name}.") for name in names)


def _remember(verdicts: dict[str, bool], logger_name: str, verdict: bool) -> bool:
    if len(verdicts) >= _MAX_REMEMBERED_NAMES:
        verdicts.clear()
    verdicts[logger_name] = verdict
    return verdict


_capture: LogCapture | None = None


def current() -> LogCapture | None:
    return _capture


def replace_access_line() -> None:
    """A request record stands for the access line of the request being served."""
    _access_line_replaced.set(True)


def take_access_line_mark() -> bool:
    """Whether the access line being logged is replaced; the answer is given once."""
    if not _access_line_replaced.get():
        return False
    _access_line_replaced.set(False)
    return True


def install(capture: LogCapture) -> None:
    """Route records to `capture` from now on; the wrappers are put in place once."""
    global _capture
    _capture = capture
    if logging.Logger.filter is not _capturing_filter:
        logging.Logger.isEnabledFor = _capturing_is_enabled_for  # type: ignore[method-assign]
        logging.Logger.filter = _capturing_filter  # type: ignore[method-assign, assignment]
        # The mark's default, on the class: a record's own `__dict__` is read only where it is set.
        setattr(logging.LogRecord, _TAKEN_ELSEWHERE, False)
        logging.handlers.QueueHandler.prepare = _marking_prepare  # type: ignore[method-assign]
        logging.handlers.QueueListener.prepare = _unmarking_prepare  # type: ignore[method-assign]
        logging.handlers.SocketHandler.makePickle = _marking_make_pickle  # type: ignore[method-assign]


def uninstall() -> None:
    """Stop capturing; logging then behaves exactly as it does without us."""
    global _capture
    _capture = None
    logging.Logger.isEnabledFor = _is_enabled_for  # type: ignore[method-assign]
    logging.Logger.filter = _filter  # type: ignore[method-assign]
    logging.handlers.QueueHandler.prepare = _prepare  # type: ignore[method-assign]
    logging.handlers.QueueListener.prepare = _listener_prepare  # type: ignore[method-assign]
    logging.handlers.SocketHandler.makePickle = _make_pickle  # type: ignore[method-assign]
    if _TAKEN_ELSEWHERE in vars(logging.LogRecord):
        delattr(logging.LogRecord, _TAKEN_ELSEWHERE)
    while _disabled_loggers:
        vars(_disabled_loggers.pop()).pop("makeRecord", None)


def _capturing_is_enabled_for(self: logging.Logger, level: int) -> bool:
    if _is_enabled_for(self, level):
        return not _redis_py_writing_for_us(self)
    capture = _capture
    if (
        capture is not None
        and level >= capture.level
        and self.manager.disable < level  # logging.disable() still silences everything
        and capture.asks_for(self.name)
        and not _redis_py_writing_for_us(self)
        and _nothing_of_the_apps_would_run(self)
        and _arguments_logging_takes(self, level, capture)
        and not (self.name in ACCESS_LOGGERS and take_access_line_mark())
    ):
        _asked_for_us[_get_ident()] = (self, level)
        if self.disabled and "makeRecord" not in vars(self):
            # Its `handle` returns before `filter`: the record is taken as it is made.
            self.makeRecord = functools.partial(_made_by_a_disabled_logger, self)  # type: ignore[method-assign]
            _disabled_loggers.append(self)
        return True
    return False


def _redis_py_writing_for_us(logger: logging.Logger) -> bool:
    """redis-py logging on one of our export threads. The record would go nowhere, yet making
    it asks `threading` for the thread, which registers a thread `threading` does not know as
    a dummy `Thread`: the app's `threading.enumerate()` would list it for good, and its own
    threads' default names (`Thread-N`) would skip a number."""
    return logger.name.startswith("redis") and writing_to_redis.get()


def _nothing_of_the_apps_would_run(logger: logging.Logger) -> bool:
    """A record made for us alone meets the logger's own filters, its class's `makeRecord` and
    `handle`, and the record factory: one that counts or lets a message through once (a
    deduplicating filter) would count ours, and swallow the app's line once its level let it
    through; one that numbers records would skip a number for each of ours."""
    cls = type(logger)
    return (
        not logger.filters
        and cls.handle is _handle
        and cls.makeRecord is _make_record
        and _makes_plain_records(logging.getLogRecordFactory())
    )


def _arguments_logging_takes(logger: logging.Logger, level: int, capture: LogCapture) -> bool:
    """Whether the logging call asking passes keyword arguments `_log` and `makeRecord` take. They
    check them only for a record they make, so a call the app's levels skip never met them: a
    mistake there (`log.info("x", user_id=5)`, `extra={"filename": f}`) would raise in the app
    for a record made for us alone. Such a call gets the app's answer. A caller other than a
    logging method (a `LoggerAdapter` asking first, code that branches on the answer) is asked
    about again by the logging method it then calls."""
    caller = sys._getframe(2)  # the one that called our `isEnabledFor`
    if caller.f_code not in _LOGGING_CALLS:
        return True
    kwargs = caller.f_locals["kwargs"]
    refusal = _refusal(kwargs) if kwargs else ""
    if refusal:
        capture.refused_arguments(logger.name, level, refusal)
    return not refusal


def _refusal(kwargs: dict[str, Any]) -> str:
    """What `_log`, `findCaller` or `makeRecord` would raise on among a logging call's keyword
    arguments, in their errors' words where those are plain; "" for none. A plain `extra=` costs
    a few set operations."""
    if not kwargs.keys() <= _LOG_KEYWORDS:
        unknown = next(key for key in kwargs if key not in _LOG_KEYWORDS)
        return f"unexpected keyword argument {unknown!r}"
    stacklevel = kwargs.get("stacklevel", 1)
    if not isinstance(stacklevel, (int, float)):
        return f"stacklevel is a {type(stacklevel).__name__}, not a number"
    extra = kwargs.get("extra")
    if extra is None:
        return ""
    if type(extra) is not dict and not isinstance(extra, Mapping):
        return f"extra is a {type(extra).__name__}, not a mapping"
    try:
        if extra.keys().isdisjoint(_OTEL_RECORD_FIELDS):
            return ""
        fields = _RECORD_FIELDS if logging.getLogRecordFactory() is logging.LogRecord else _OTEL_RECORD_FIELDS
        taken = [key for key in extra if key in fields]
    except Exception as error:  # a mapping whose keys cannot be read
        return f"extra's keys cannot be read: {error!r}"
    return f"Attempt to overwrite {taken[0]!r} in LogRecord" if taken else ""


_OTEL_LOGGING_INSTRUMENTATION = "opentelemetry.instrumentation.logging"


@functools.lru_cache(maxsize=8)
def _makes_plain_records(factory: Callable[..., logging.LogRecord]) -> bool:
    """logging's own factory, or the OTel logging instrumentation's over it, which adds trace
    fields (and which the launcher installs in every process)."""
    if factory is logging.LogRecord:
        return True
    code = getattr(factory, "__code__", None)
    if (
        getattr(factory, "__module__", None) != _OTEL_LOGGING_INSTRUMENTATION
        or code is None
        or "old_factory" not in code.co_freevars
    ):
        return False
    wrapped = factory.__closure__[code.co_freevars.index("old_factory")].cell_contents  # type: ignore[attr-defined, index]
    return _makes_plain_records(wrapped)


def _made_by_a_disabled_logger(logger: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _make_record(logger, *args, **kwargs)
    if _asked_for_us and logger.disabled and _answered_for_us(logger, record):
        _take_after_filters(logger, record)
    return record


def _capturing_filter(self: logging.Logger, record: logging.LogRecord) -> Any:
    if _asked_for_us and _answered_for_us(self, record):
        _take_after_filters(self, record)
        return False  # the app's handlers must not see it
    if writing_to_redis.get() and record.name.startswith("redis"):
        return False
    if record._tracestream_taken:  # type: ignore[attr-defined]  # _TAKEN_ELSEWHERE: sent here, stored
        del record.__dict__[_TAKEN_ELSEWHERE]
        return _filter(self, record)
    return _take_after_filters(self, record)


def _answered_for_us(logger: logging.Logger, record: logging.LogRecord) -> bool:
    """Whether `isEnabledFor` answered yes for us alone for `record`. This thread's answer is
    used up either way. The app may have asked and not logged: the record is still its own
    when its levels now let it through, or when it was not made by a logging call but handed
    to `Logger.handle` (only the logging call's `_log` is a few frames up)."""
    asked = _asked_for_us.pop(_get_ident(), None)
    return (
        asked is not None
        and asked[0] is logger
        and asked[1] == record.levelno
        and not _is_enabled_for(logger, record.levelno)
        and _made_by_a_logging_call()
    )


def _made_by_a_logging_call() -> bool:
    """`_log` above `Logger.handle` and the `handle` overrides of subclasses and mixins calling it,
    with nothing else between: a record handed to `handle` from anywhere else is the app's."""
    frame: FrameType | None = sys._getframe(3)  # this, `_answered_for_us`, our `filter` or `makeRecord`
    for _ in range(_MOST_HANDLE_OVERRIDES):
        if frame is None:
            return False
        if frame.f_code is _LOG_CODE:
            return True
        if frame.f_code.co_name != "handle":
            return False
        frame = frame.f_back
    return False


def _take_after_filters(logger: logging.Logger, record: logging.LogRecord) -> Any:
    """The logger's own filters, then to us; what passed is what `Logger.handle` goes on with."""
    passed = _filter(logger, record)
    capture = _capture
    if passed and capture is not None:
        capture.take(passed if isinstance(passed, logging.LogRecord) else record)
    return passed


def _marking_prepare(self: logging.handlers.QueueHandler, record: logging.LogRecord) -> Any:
    """The copy a queue carries to another process says we took the record. A queue between
    threads is left alone: its `QueueListener` hands records to the app's handlers directly."""
    prepared = _prepare(self, record)
    if (
        isinstance(prepared, logging.LogRecord)
        and type(self.queue).__module__.partition(".")[0] in _PROCESS_QUEUE_MODULES
        and _was_taken(record)
    ):
        prepared.__dict__[_TAKEN_ELSEWHERE] = True
    return prepared


def _unmarking_prepare(self: logging.handlers.QueueListener, record: logging.LogRecord) -> Any:
    """A `QueueListener` hands what a queue carried to its handlers directly, not through
    `Logger.handle`, where the mark comes off: it comes off here (the logging cookbook's
    listener on a multiprocessing queue, Python 3.12's `queue_handler` in `dictConfig`)."""
    prepared = _listener_prepare(self, record)
    if isinstance(prepared, logging.LogRecord):
        prepared.__dict__.pop(_TAKEN_ELSEWHERE, None)
    return prepared


def _marking_make_pickle(self: logging.handlers.SocketHandler, record: logging.LogRecord) -> bytes:
    """The pickle sent says we took the record; the record itself goes on to the app's other
    handlers as it was."""
    if not _was_taken(record):
        return _make_pickle(self, record)
    fields = record.__dict__
    fields[_TAKEN_ELSEWHERE] = True
    try:
        return _make_pickle(self, record)
    finally:
        fields.pop(_TAKEN_ELSEWHERE, None)


def _was_taken(record: logging.LogRecord) -> bool:
    """A record an app's handler sends on passed our `filter` first: we took it when its level
    and logger are ours."""
    capture = _capture
    return capture is not None and record.levelno >= capture.level and capture.wants(record.name)
