"""What every command shares: the common options, settings, the Redis reader and error wording."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

import orjson
import redis
import rich.console
from redis.exceptions import InvalidResponse
from rich.text import Text

from tracestream._internal_log import say
from tracestream.connection import CLUSTER_ERRORS, Client, client_for
from tracestream.redis_errors import advice, is_wrong_type
from tracestream.settings import Settings, parse_duration, shown_url
from tracestream.shards import shards
from tracestream.terminal_text import encodable, json_safe, visible
from tracestream.timeparse import iso_utc, local_offset, parse_time_ms, without_offset


class Console(rich.console.Console):
    """rich's, but a reader that leaves (`| head`) ends the command as it ends a plain print:
    BrokenPipeError, which `main` turns into status 0 (rich exits with 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


if TYPE_CHECKING:
    Subparsers: TypeAlias = "argparse._SubParsersAction[ArgumentParser]"


class UsageError(ValueError):
    """Bad input from the command line: one line on stderr, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line naming the problem, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


OPTIONS = ArgumentParser(add_help=False)
OPTIONS.add_argument(
    "--redis-url", metavar="URL", help="Redis to read from (default: $TRACESTREAM_REDIS_URL or localhost)"
)
OPTIONS.add_argument(
    "--stream", metavar="KEY", help="stream key (default: $TRACESTREAM_STREAM or tracestream)"
)
OPTIONS.add_argument(
    "--cluster",
    action="store_true",
    default=None,
    help="the URL names a node of a Redis Cluster (default: $TRACESTREAM_REDIS_CLUSTER)",
)
OPTIONS.add_argument("--json", action="store_true", help="print NDJSON, one object per line")


def whole_number(low: int, high: int = sys.maxsize) -> Callable[[str], int]:
    """An argparse type for counts and ports: a whole number from `low` to `high`, else a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
        return value

    return parse


SHORTEST_DURATION = 0.001


def duration_up_to(longest: float) -> Callable[[str], float]:
    """A duration argument from 1 ms to `longest` seconds, so Redis and the clock can hold it,
    and a step, tick or timeout of 0 never spins; argparse would show a ValueError's type, so the
    message is kept here."""

    def parse_argument(text: str) -> float:
        try:
            seconds = parse_duration(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
        if seconds > longest:
            raise argparse.ArgumentTypeError(f"{text!r} is longer than {longest:g} seconds")
        if seconds < SHORTEST_DURATION:
            raise argparse.ArgumentTypeError(f"{text!r} is shorter than 1ms")
        return seconds

    return parse_argument


PORT = whole_number(1, 65535)


# How `--help` describes a time; the CLI prints UTC, so a time copied from its output means the same.
TIME_FORMS = (
    "ISO 8601 (a time without an offset is UTC: 2024-05-01T12:00, 2024-05-01T14:00+02:00) or how long ago"
)
# A `--since` this far ahead of this machine's clock is taken as the clocks' difference, not a mistake.
CLOCK_ALLOWANCE_MS = 60_000


def time_argument(text: str) -> str:
    """`--until`, checked as argparse reads it: an empty `--until "$UNTIL"` is an error, not a
    query without that bound. The text is kept: `15m` means 15 minutes before the query runs."""
    _time_ms(text, int(time.time() * 1000))
    return text


def since_argument(text: str) -> str:
    """`--since`, checked as `time_argument` checks `--until`, and not in the future: nothing is
    stored there yet, and a local time east of Greenwich (`date` in Kolkata), read as UTC, lands
    there, finding nothing and saying nothing (`tail` would wait hours)."""
    now_ms = int(time.time() * 1000)
    since_ms = _time_ms(text, now_ms)
    if since_ms > now_ms + CLOCK_ALLOWANCE_MS:
        raise argparse.ArgumentTypeError(_in_the_future(text, since_ms, now_ms))
    return text


def _time_ms(text: str, now_ms: int) -> int:
    try:
        return parse_time_ms(text, now_ms)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _in_the_future(text: str, since_ms: int, now_ms: int) -> str:
    """How `text` was read (in UTC), and this machine's offset when that explains it."""
    read_as = iso_utc(since_ms * 1_000_000)[:19].replace("T", " ")
    ahead = _how_long(since_ms - now_ms)
    line = f"{text!r} is {read_as} UTC, {ahead} in the future: nothing is stored after it yet"
    offset = local_offset(now_ms)
    if offset and without_offset(text):
        line += (
            f"; a time without an offset is UTC (this machine's local time is UTC{offset}: add {offset}"
            " for a local time, or give how long ago, as 30m)"
        )
    return line


def _how_long(milliseconds: int) -> str:
    """`4h59m`, `3d2h`: to the minute."""
    days, minutes = divmod(milliseconds // 60_000, 24 * 60)
    parts = ((days, "d"), (minutes // 60, "h"), (minutes % 60, "m"))
    return "".join(f"{count}{unit}" for count, unit in parts if count) or "under a minute"


def add_command(
    subparsers: Subparsers,
    name: str,
    run: Callable[[argparse.Namespace], int],
    summary: str,
    description: str,
    *parents: ArgumentParser,
) -> ArgumentParser:
    """A subcommand with the common options (and `parents`); `run(args)` returns the exit status."""
    parser = subparsers.add_parser(name, parents=[OPTIONS, *parents], help=summary, description=description)
    parser.set_defaults(run=run)
    return parser


def settings(args: argparse.Namespace) -> Settings:
    """The exporter's settings, so the CLI reads exactly where services write."""
    return Settings.load(redis_url=args.redis_url, stream=args.stream, redis_cluster=args.cluster)


def reader(args: argparse.Namespace, timeout: float | None = None) -> Client:
    return client_for(settings(args), decode=True, timeout=timeout)


def describe_redis_error(error: Exception) -> str:
    """Plain words for what usually went wrong, and what to check where the error does not say."""
    if isinstance(error, redis.AuthenticationError):
        return f"Redis refused the credentials: {error} (check the user and password in the URL)"
    hint = advice(error)
    return f"{_what_failed(error)}: {error}" + (f" ({hint})" if hint else "")


def _what_failed(error: Exception) -> str:
    if isinstance(error, redis.TimeoutError):
        return "Redis did not answer in time"
    if isinstance(error, (redis.ConnectionError, InvalidResponse)):
        return "cannot reach Redis"
    return "Redis error"


def output_encoding() -> str:
    """stdout's encoding: what it cannot take is escaped before rich measures it, and our own
    symbols are ASCII (a latin-1 or EUC-JP terminal, `PYTHONIOENCODING=ascii`)."""
    return getattr(sys.stdout, "encoding", None) or "utf-8"


def printable(text: str) -> str:
    """Text from the streams for stdout: control characters and what its encoding cannot take as escapes."""
    return visible(text, output_encoding())


def shown(text: str, style: str = "") -> Text:
    """Text from the streams for a terminal: `printable`, and never read as Rich markup."""
    return Text(printable(text), style=style)


def shows(text: str) -> bool:
    """stdout's encoding can take every character of `text`."""
    return encodable(text, output_encoding())


def our_symbol(preferred: str, plain: str) -> str:
    """One of tracestream's own symbols (`█`, a sparkline's bars: all of it or none), or its ASCII
    stand-in where stdout cannot show it."""
    return preferred if shows(preferred) else plain


def print_json(value: Any) -> None:
    """One NDJSON line on stdout: the exact value, with no byte that drives a terminal."""
    sys.stdout.buffer.write(json_safe(orjson.dumps(value)) + b"\n")


def error_line(message: str) -> None:
    """One line on stderr, whatever the message holds (a Redis reply, a user's text)."""
    say(f"tracestream: {message}")


def nothing_found(args: argparse.Namespace, client: Client, what: str, reason: str = "") -> None:
    """`what` was not found, as one line on stderr naming the Redis and stream read (its password
    masked), or saying the stream does not exist there: with the URL unset a reader reads
    localhost, and a wrong Redis would otherwise look like one with nothing in it. A stream
    name another program's key holds is bad input: the scripted readers read such a key as
    empty."""
    config = settings(args)
    where = shown_url(config.redis_url)
    if wrong := _not_a_stream(client, config):
        raise UsageError(wrong)
    if _stream_missing(client, config.stream):
        error_line(f"{what}: stream {config.stream} does not exist on {where}")
    else:
        error_line(f"{what} in stream {config.stream} on {where}{reason}")


def not_a_stream(args: argparse.Namespace, error: BaseException) -> str | None:
    """For a `WRONGTYPE` error: which of the stream's keys holds what instead, where one does."""
    if not is_wrong_type(error):
        return None
    try:
        with reader(args) as client:
            return _not_a_stream(client, settings(args))
    except CLUSTER_ERRORS:
        return None


def _not_a_stream(client: Client, config: Settings) -> str | None:
    try:
        for shard in shards(client, config.stream):
            for key in (shard.keys.logs, shard.keys.spans):
                kind = str(shard.client.type(key))  # the client decodes its replies
                if kind not in ("stream", "none"):
                    return (
                        f"{key!r} on {shown_url(config.redis_url)} holds a {kind}, not a stream: "
                        "name another stream (--stream, TRACESTREAM_STREAM)"
                    )
    except redis.exceptions.NoPermissionError:
        return None
    return None


def _stream_missing(client: Client, stream: str) -> bool:
    """No shard holds the log or the span stream; False when Redis does not let this user ask
    (EXISTS is no right of the documented read-only user)."""
    try:
        return not any(
            shard.client.exists(shard.keys.logs, shard.keys.spans) for shard in shards(client, stream)
        )
    except redis.exceptions.NoPermissionError:
        return False


SHOWN_ERROR_LENGTH = 200  # characters of an error's text a table shows
# What a rich table adds between two columns: one divider and a space of padding either side.
TABLE_SPACING = 3


def column_width(header: str, cells: Iterable[str]) -> int:
    """The width a column's widest line takes, its header's included."""
    return max([len(header), *(len(line) for cell in cells for line in cell.split("\n"))])


def abridged(error: str) -> str:
    """An error's text as a table shows it (`--json` has it whole): a traceback logged as the
    message (granian's line about an app's exception) would fill the screen. A cut text ends
    with "…", so it does not pass for the whole of it."""
    if len(error) <= SHOWN_ERROR_LENGTH:
        return error
    return error[: SHOWN_ERROR_LENGTH - 1] + our_symbol("…", "...")


def some_of(names: list[str], first: int = 2) -> str:
    """The first names and how many more: `api, web +3 more`; a cell that cannot crowd out the
    rest of a table however many services share an error."""
    more = len(names) - first
    return ", ".join(names[:first]) + (f" +{more} more" if more > 0 else "")
