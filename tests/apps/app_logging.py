"""An app that owns its logging, the ways real apps do, after tracestream is set up.

Usage: python -m tests.apps.app_logging SCENARIO [--tracestream]

Each scenario logs `app <scenario> <level>` lines at INFO, WARNING and ERROR from loggers
the app configured, plus an ERROR with a traceback. Run with and without `--tracestream`,
the terminal output must be the same; with it, every line is in the stream exactly once.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import sys
import tempfile
import textwrap
from collections.abc import Callable

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


SCENARIOS: dict[str, Callable[[], list[logging.Logger]]] = {
    "dict_config_with_root": dict_config_with_root,
    "dict_config_disabling": dict_config_disabling,
    "non_propagating": non_propagating,
    "file_config": file_config,
    "basic_config_force": basic_config_force,
    "no_handlers": no_handlers,
    "handlers_changed_later": handlers_changed_later,
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
