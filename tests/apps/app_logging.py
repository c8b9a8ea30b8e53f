"""An app that owns its logging, the ways real apps do, after tracestream is set up.

Usage: python -m tests.apps.app_logging SCENARIO [--tracestream]

Each scenario logs `app <scenario> <level>` lines at INFO, WARNING and ERROR from loggers
the app configured, plus an ERROR with a traceback. Run with and without `--tracestream`,
the terminal output must be the same; with it, every line is in the stream exactly once.
"""

from __future__ import annotations

import argparse
import atexit
import inspect
import itertools
import logging
import logging.config
import logging.handlers
import sys
import tempfile
import textwrap
from collections.abc import Callable
from queue import Queue
from typing import Any

BEFORE = logging.getLogger("shop.before")  # exists before the app's config: dictConfig disables it


def dict_config_with_root() -> list[logging.Logger]:
    """The Django docs' first example: a console handler on root, at WARNING."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler"}},
            "root": {"handlers": ["console"], "level": "WARNING"},
        }
    )
    return [logging.getLogger("shop.views")]


def dict_config_disabling() -> list[logging.Logger]:
    """dictConfig's default `disable_existing_loggers: True`, with a root entry."""
    logging.config.dictConfig(
        {
            "version": 1,
            "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
            "root": {"handlers": ["console"], "level": "INFO"},
        }
    )
    return [BEFORE, logging.getLogger("shop.after")]


def non_propagating() -> list[logging.Logger]:
    """A logger with `propagate: False` and a handler of its own."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "[%(name)s] %(message)s"}},
            "handlers": {
                "console": {"class": "logging.StreamHandler", "formatter": "plain"},
                "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"},
            },
            "loggers": {"shop.audit": {"handlers": ["stdout"], "level": "INFO", "propagate": False}},
            "root": {"handlers": ["console"], "level": "INFO"},
        }
    )
    return [logging.getLogger("shop.audit"), logging.getLogger("shop.views")]


def file_config() -> list[logging.Logger]:
    ini = textwrap.dedent(
        """
        [loggers]
        keys=root,shop
        [handlers]
        keys=console
        [formatters]
        keys=plain
        [logger_root]
        level=WARNING
        handlers=console
        [logger_shop]
        level=INFO
        handlers=
        qualname=shop.views
        [handler_console]
        class=StreamHandler
        args=(sys.stderr,)
        formatter=plain
        [formatter_plain]
        format=%(levelname)s:%(name)s:%(message)s
        """
    )
    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as file:
        file.write(ini)
    logging.config.fileConfig(file.name)
    return [logging.getLogger("shop.views"), BEFORE]


def basic_config_force() -> list[logging.Logger]:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", force=True)
    return [logging.getLogger("shop.views")]


def root_at_debug() -> list[logging.Logger]:
    """Everything printed, libraries' DEBUG lines included: tracestream's own Redis client's
    lines are not the app's and must not appear."""
    logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s %(message)s")
    return [logging.getLogger("shop.views")]


def no_handlers() -> list[logging.Logger]:
    """No logging setup at all: WARNING and above print through `logging.lastResort`."""
    return [logging.getLogger("shop.views")]


def handlers_changed_later() -> list[logging.Logger]:
    root = logging.getLogger()
    first = logging.StreamHandler(sys.stdout)
    root.addHandler(first)
    root.removeHandler(first)
    root.addHandler(logging.StreamHandler(sys.stderr))
    root.setLevel(logging.INFO)
    return [logging.getLogger("shop.views")]


def queue_handler() -> list[logging.Logger]:
    """The logging cookbook's non-blocking setup: a `QueueHandler` on root, the printing done by a
    `QueueListener` thread."""
    printing = logging.StreamHandler(sys.stderr)
    printing.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    queue: Queue[logging.LogRecord] = Queue()
    listener = logging.handlers.QueueListener(queue, printing)
    logging.getLogger().addHandler(logging.handlers.QueueHandler(queue))
    logging.getLogger().setLevel(logging.INFO)
    listener.start()
    atexit.register(listener.stop)
    return [logging.getLogger("shop.views")]


class InterceptHandler(logging.Handler):
    """loguru's docs ("Entirely compatible with standard logging"): stdlib records into loguru,
    attributed to the logging call found by walking up the stack past logging's own frames."""

    def emit(self, record: logging.LogRecord) -> None:
        from loguru import logger

        level: str | int
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = inspect.currentframe(), 0
        while frame:
            filename = frame.f_code.co_filename
            is_logging = filename == logging.__file__
            is_frozen = "importlib" in filename and "_bootstrap" in filename
            if depth > 0 and not (is_logging or is_frozen):
                break
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


def _loguru_on_stderr() -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, format="{level} | {name}:{function}:{line} - {message}", diagnose=False)


def loguru_intercepting() -> list[logging.Logger]:
    """loguru prints every stdlib record, with the caller's location."""
    _loguru_on_stderr()
    logging.basicConfig(handlers=[InterceptHandler()], level=0, force=True)
    return [logging.getLogger("shop.views")]


def loguru_intercepting_into_its_sink() -> list[logging.Logger]:
    """The same with tracestream's loguru sink added, as docs/frameworks.md shows it."""
    from loguru import logger

    from tracestream.integrations.loguru import otel_sink

    loguru_intercepting()
    logger.add(otel_sink, level="INFO")
    return [logging.getLogger("shop.views")]


def loguru_intercepting_into_an_enqueued_sink() -> list[logging.Logger]:
    """The same with the sink behind loguru's queue (`enqueue=True`, from loguru's docs)."""
    from loguru import logger

    from tracestream.integrations.loguru import otel_sink

    loguru_intercepting()
    logger.add(otel_sink, level="INFO", enqueue=True)
    return [logging.getLogger("shop.views")]


def loguru_intercepting_behind_a_queue() -> list[logging.Logger]:
    """The logging cookbook's `QueueHandler`, its `QueueListener` handing records to the
    InterceptHandler, tracestream's sink added: loguru meets them on the listener's thread."""
    from loguru import logger

    from tracestream.integrations.loguru import otel_sink

    _loguru_on_stderr()
    queue: Queue[logging.LogRecord] = Queue()
    listener = logging.handlers.QueueListener(queue, InterceptHandler())
    logging.getLogger().addHandler(logging.handlers.QueueHandler(queue))
    logging.getLogger().setLevel(logging.INFO)
    listener.start()
    atexit.register(listener.stop)
    logger.add(otel_sink, level="INFO")
    return [logging.getLogger("shop.views")]


class Rewriting(logging.Filter):
    """A filter on a handler that rewrites the message, as an app that redacts there does."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = str(record.msg).replace("app ", "APP ")
        return True


def loguru_intercepting_through_a_rewriting_filter() -> list[logging.Logger]:
    """The InterceptHandler behind such a filter, tracestream's sink added."""
    from loguru import logger

    from tracestream.integrations.loguru import otel_sink

    _loguru_on_stderr()
    handler = InterceptHandler()
    handler.addFilter(Rewriting())
    logging.basicConfig(handlers=[handler], level=0, force=True)
    logger.add(otel_sink, level="INFO")
    return [logging.getLogger("shop.views")]


class HandingOn:
    """The logging cookbook's network receiver: records made elsewhere, handed to the named
    logger's `handle()`, which does not check the logger's level (WARNING here)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def log(self, level: int, msg: str, *args: object, exc_info: object = None) -> None:
        record = logging.makeLogRecord(
            {"name": self.name, "levelno": level, "levelname": logging.getLevelName(level), "msg": msg}
        )
        record.args, record.exc_info = args, sys.exc_info() if exc_info else None
        logging.getLogger(self.name).handle(record)

    def exception(self, msg: str, *args: object) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=True)


def records_handed_on() -> list[HandingOn]:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s", force=True)
    return [HandingOn("shop.views")]


def asked_then_raised() -> list[logging.Logger]:
    """A library asks whether INFO is on and does not log (SQLAlchemy, Celery); the app then
    turns INFO on: its next INFO line is the app's, to print."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s", force=True)
    views = logging.getLogger("shop.views")
    views.isEnabledFor(logging.INFO)
    views.setLevel(logging.INFO)
    return [views]


def asked_then_handed_on() -> list[HandingOn]:
    """An answer left unused, then a record made elsewhere and handed on at that level."""
    records_handed_on()
    logging.getLogger("shop.views").isEnabledFor(logging.INFO)
    return [HandingOn("shop.views")]


class _Tagging(logging.Logger):
    def handle(self, record: logging.LogRecord) -> None:
        record.tenant = "acme"
        super().handle(record)


class _Counting(logging.Logger):
    handled = 0

    def handle(self, record: logging.LogRecord) -> None:
        _Counting.handled += 1
        print(f"{self.name} handled {_Counting.handled} records")
        super().handle(record)


class _TenantLogger(_Tagging, _Counting):
    """The cookbook's `setLoggerClass` customisation, built of mixins that each override `handle`."""


def logger_class_of_mixins() -> list[logging.Logger]:
    return [_made_of_class(_TenantLogger, "shop.tenants")]


def _made_of_class(logger_class: type[logging.Logger], name: str) -> logging.Logger:
    """A logger made while `setLoggerClass` names `logger_class`, root at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s", force=True)
    original = logging.getLoggerClass()
    logging.setLoggerClass(logger_class)
    try:
        return logging.getLogger(name)
    finally:
        logging.setLoggerClass(original)


class _Once(logging.Filter):
    """Lets each message through once: a deduplicating filter."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def logger_with_a_filter() -> list[logging.Logger]:
    """A deduplicating filter on a logger whose INFO line came once while INFO was off."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s", force=True)
    deprecations = logging.getLogger("shop.deprecations")
    deprecations.addFilter(_Once())
    deprecations.info("app shop.deprecations INFO")  # hidden: root is at WARNING
    deprecations.setLevel(logging.INFO)  # an operator turns INFO on
    return [deprecations]


def record_factory_numbering() -> list[logging.Logger]:
    """The logging cookbook's "Using LogRecord factories", the field it adds a sequence number."""
    logging.basicConfig(level=logging.WARNING, format="#%(seq)d %(levelname)s %(message)s", force=True)
    made = itertools.count(1)
    plain = logging.getLogRecordFactory()

    def numbered(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = plain(*args, **kwargs)
        record.seq = next(made)
        return record

    logging.setLogRecordFactory(numbered)
    return [logging.getLogger("shop.numbered")]


class _CountingRecords(logging.Logger):
    """A `setLoggerClass` customisation that counts the records it makes."""

    made = 0

    def makeRecord(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        _CountingRecords.made += 1
        print(f"{self.name} made {_CountingRecords.made} records")
        return super().makeRecord(*args, **kwargs)


def logger_class_making_records() -> list[logging.Logger]:
    return [_made_of_class(_CountingRecords, "shop.counted")]


def mistakes_at_a_skipped_level() -> list[logging.LoggerAdapter[logging.Logger]]:
    """Logging calls whose arguments logging refuses, at levels the app's loggers skip: stdlib checks
    them only for a record it makes, so the app runs fine with them. structlog-style keywords on a
    stdlib logger, `extra=` keys a LogRecord has (through `log`, `exception`, a `LoggerAdapter`'s
    extra, and structlog's stdlib path, which hands its key/values on as `extra=`), an `extra` that
    is no mapping, a `stacklevel` that is no number. The app's own lines then go through an adapter
    whose extra is fine, INFO still skipped."""
    import structlog

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s", force=True)
    views = logging.getLogger("shop.views")
    views.info("user created", user_id=5)
    views.log(logging.INFO, "saved", extra={"message": "m"})
    views.info("uploading", extra={"filename": "report.pdf"})
    views.info("listed", extra="oops")
    views.info("deep", stacklevel="2")
    logging.LoggerAdapter(views, {"module": "billing"}).info("billed")
    quiet = logging.getLogger("shop.quiet")
    quiet.setLevel(logging.CRITICAL)
    quiet.warning("retrying", attempt=2)
    try:
        {}["missing"]
    except KeyError:
        quiet.exception("lookup failed", extra={"name": "orders"})
    structlog.configure(
        processors=[structlog.stdlib.render_to_log_kwargs],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    structlog.get_logger("shop.events").info("upload", filename="report.pdf")
    return [logging.LoggerAdapter(views, {"tenant": "acme"})]


SCENARIOS: dict[
    str, Callable[[], list[logging.Logger] | list[HandingOn] | list[logging.LoggerAdapter[logging.Logger]]]
] = {
    "dict_config_with_root": dict_config_with_root,
    "dict_config_disabling": dict_config_disabling,
    "non_propagating": non_propagating,
    "file_config": file_config,
    "basic_config_force": basic_config_force,
    "root_at_debug": root_at_debug,
    "no_handlers": no_handlers,
    "handlers_changed_later": handlers_changed_later,
    "loguru_intercepting": loguru_intercepting,
    "loguru_intercepting_into_its_sink": loguru_intercepting_into_its_sink,
    "loguru_intercepting_into_an_enqueued_sink": loguru_intercepting_into_an_enqueued_sink,
    "loguru_intercepting_behind_a_queue": loguru_intercepting_behind_a_queue,
    "loguru_intercepting_through_a_rewriting_filter": loguru_intercepting_through_a_rewriting_filter,
    "records_handed_on": records_handed_on,
    "asked_then_raised": asked_then_raised,
    "asked_then_handed_on": asked_then_handed_on,
    "queue_handler": queue_handler,
    "logger_class_of_mixins": logger_class_of_mixins,
    "logger_with_a_filter": logger_with_a_filter,
    "record_factory_numbering": record_factory_numbering,
    "logger_class_making_records": logger_class_making_records,
    "mistakes_at_a_skipped_level": mistakes_at_a_skipped_level,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--tracestream", action="store_true", help="configure() before the app's logging")
    args = parser.parse_args()
    telemetry = None
    if args.tracestream:
        import tracestream

        telemetry = tracestream.configure()
    for logger in SCENARIOS[args.scenario]():
        for level in (logging.INFO, logging.WARNING, logging.ERROR):
            logger.log(level, "app %s %s", logger.name, logging.getLevelName(level))
        try:
            {}["missing"]
        except KeyError:
            logger.exception("app %s failed", logger.name)
    if telemetry is not None:
        telemetry.force_flush()


if __name__ == "__main__":
    main()
