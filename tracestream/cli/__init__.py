"""The `tracestream` command.

Adding a command takes two steps:

1. Write `tracestream/cli/<name>.py` with one function::

       from tracestream.cli.common import Subparsers, add_command

       def register(subparsers: Subparsers) -> None:
           parser = add_command(subparsers, "name", run, "one line for --help", "a sentence or two")
           parser.add_argument(...)

       def run(args: argparse.Namespace) -> int:  # the exit status
           ...

   `add_command` adds --redis-url, --stream and --json (`common.OPTIONS`); `common.settings(args)`
   and `common.reader(args)` turn them into Settings and a decoding Redis client.
2. Add the module name to `COMMANDS` below.

Errors need no handling in commands: `UsageError`/`ConfigError`/`QueryError` print one line and exit 2,
Redis errors print one line and exit 1, a closed pipe (`| head`) and Ctrl-C exit quietly. Anything
else is a bug or the machine's trouble (a full disk): one line naming it, exit 1, never a traceback.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import sys
from collections.abc import Sequence

from tracestream.cli.common import ArgumentParser, UsageError, describe_redis_error, error_line, not_a_stream
from tracestream.connection import CLUSTER_ERRORS
from tracestream.query import QueryError
from tracestream.settings import ConfigError
from tracestream.terminal_text import visible

COMMANDS: tuple[str, ...] = (
    "tail",
    "search",
    "trace",
    "traces",
    "services",
    "stats",
    "export",
    "errors",
    "doctor",
    "console",
    "demo",
    "scrub-check",
    "forward",
    "spool",
    "alerts",
)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="tracestream", description="Search, tail and trace OpenTelemetry records in Redis streams."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"tracestream.cli.{name.replace('-', '_')}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status; `--help` too returns it, so `main` can be called in-process."""
    if sys.stderr is None:  # closed (`2>&-`): print() would put our lines in stdout, among the records
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process
    if sys.stdout is None:  # closed (`>&-`)
        error_line("stdout is closed: there is nowhere to print what was asked for")
        return 1
    _escape_what_the_terminal_cannot_show()
    try:
        try:
            args = build_parser().parse_args(_as_text(sys.argv[1:] if argv is None else argv))
        except SystemExit as done:  # --help printed what was asked for
            return done.code if isinstance(done.code, int) else 0
        status: int = args.run(args)
        sys.stdout.flush()
    except (UsageError, ConfigError, QueryError) as error:
        error_line(str(error))
        return 2
    except CLUSTER_ERRORS as error:
        if wrong := not_a_stream(args, error):  # a stream name another program's key holds
            error_line(wrong)
            return 2
        error_line(describe_redis_error(error))
        return 1
    except BrokenPipeError:
        # The reader left (`| head`): stop quietly; point stdout at devnull so the final flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:  # a file or directory this user cannot use
        error_line(f"{error.strerror}: {error.filename}" if error.filename else str(error))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        error_line(f"unexpected {type(error).__name__}: {error}")
        return 1
    return status


def _as_text(argv: Sequence[str]) -> list[str]:
    """The arguments as text. Outside UTF-8 mode (`LC_ALL=C PYTHONUTF8=0`) Python keeps the bytes its
    locale cannot decode as lone surrogates, which no filter matches and redis-py refuses: they are
    the terminal's UTF-8, and are read as such. Bytes that are not UTF-8 either are bad input."""
    return [_decoded(argument) if _UNDECODED.search(argument) else argument for argument in argv]


# Bytes the locale could not decode, as `surrogateescape` keeps them.
_UNDECODED = re.compile("[\udc80-\udcff]")


def _decoded(argument: str) -> str:
    try:
        return os.fsencode(argument).decode("utf-8")
    except UnicodeError:
        as_bytes = _UNDECODED.sub(lambda byte: f"\\x{ord(byte.group()) - 0xDC00:02x}", argument)
        raise UsageError(
            f"the argument '{visible(as_bytes)}' is not text: its bytes are neither UTF-8 nor"
            f" {sys.getfilesystemencoding()} (this locale's encoding)"
        ) from None


def _escape_what_the_terminal_cannot_show() -> None:
    """Text a terminal that is not UTF-8 cannot take (a C locale, PYTHONIOENCODING=ascii) and that
    no command escaped first is printed as `\\u2615`, not refused with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        # A C locale's stdout is `surrogateescape`, which refuses all but undecodable bytes.
        if isinstance(stream, io.TextIOWrapper) and stream.errors in ("strict", "surrogateescape"):
            stream.reconfigure(errors="backslashreplace")
