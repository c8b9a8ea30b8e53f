"""The CLI in the environments users really have, each run as a real process: a local time zone
that is not UTC, a C locale outside UTF-8 mode, a terminal whose encoding is not UTF-8, a narrow
terminal, FORCE_COLOR with stderr in a file."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from subprocess import PIPE
from zoneinfo import ZoneInfo

import pytest
from opentelemetry import trace

from tests.seeded_records import RecordWriter, tracer_provider
from tests.support import RedisHandle
from tests.test_cli import TIMEOUT, TRACESTREAM, ndjson
from tests.test_cli_terminal import terminal_output
from tracestream.embedded_redis import EmbeddedRedis

# Python outside UTF-8 mode in the C locale: arguments it cannot decode arrive as lone surrogates.
C_LOCALE = {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
KOLKATA = "Asia/Kolkata"
TAIL_RUNS_FOR = 15  # seconds: a tail that was not refused follows until it is stopped
FAILURE = ("ValueError", "card declined", "Traceback")


def side_by_side(
    runs: Sequence[tuple[Sequence[str | bytes], dict[str, str]]], timeout: float = TIMEOUT
) -> list[subprocess.CompletedProcess[bytes]]:
    """Each (arguments, environment) as its own `tracestream` process, all at once (start-up
    dominates); one still running after `timeout` seconds is stopped and reported as status None."""
    processes = [
        (args, subprocess.Popen([TRACESTREAM, *args], env=env, stdout=PIPE, stderr=PIPE))
        for args, env in runs
    ]
    done = []
    for args, process in processes:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            status: int | None = process.returncode
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            status = None
        done.append(subprocess.CompletedProcess(list(args), status, stdout, stderr))  # type: ignore[arg-type]
    return done


def one_line(done: subprocess.CompletedProcess[bytes], status: int) -> str:
    """stderr, which is one line, and the command's exit `status`."""
    stderr = done.stderr.decode("utf-8", "replace")
    assert (done.returncode, done.stdout) == (status, b""), (done.args, done.returncode, stderr)
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr, (done.args, stderr)
    return stderr


def help_for(option: str, text: str) -> str:
    """What `--help` says of `option`: from its name to the next option, whitespace made single."""
    words = " ".join(text.split())
    found = re.search(rf"(?:^| ){re.escape(option)} [A-Z]+ (.*?)(?= -{{1,2}}[a-z]|$)", words)
    assert found, (option, text)
    return found.group(1)


# --- --since and --until: UTC unless they say otherwise ---------------------------------------


def test_a_since_read_as_utc_that_lies_in_the_future_is_refused_saying_how_it_was_read(
    stream: RedisHandle, writer: RecordWriter
) -> None:
    """`date +%FT%T -d '-30 min'` in Kolkata, read as UTC, is 5 hours ahead: every command found
    nothing and said nothing of why, and `tail` waited for those 5 hours."""
    writer.log("written just now")
    local = datetime.now(ZoneInfo(KOLKATA)) - timedelta(minutes=30)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    as_read = local.replace(tzinfo=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    kolkata = stream.env(TZ=KOLKATA)
    commands = (["search"], ["export"], ["stats"], ["errors"], ["traces"], ["tail"], ["alerts", "test", "x"])
    ahead = (datetime.now(timezone.utc) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")
    refused = [
        (["search", "--since", ahead], stream.env(TZ="UTC")),  # the zone is UTC: no offset to name
        (["search", "--since", ahead + "Z"], kolkata),  # an offset given: read as written
        (["search", "--since", "2999-01-01"], kolkata),
    ]
    soon = datetime.now(timezone.utc) + timedelta(seconds=20)
    within = (["search", "--since", soon.isoformat()], kolkata)  # within the clocks' allowance
    runs = [([*command, "--since", text], kolkata) for command in commands] + refused + [within]
    done = side_by_side(runs, timeout=TAIL_RUNS_FOR)
    for command in done[: len(commands)]:
        line = one_line(command, 2)
        assert f"argument --since: '{text}' is {as_read} UTC, 4h" in line, line
        assert "without an offset is UTC" in line and "UTC+05:30" in line, line
    utc, offset, far = (one_line(command, 2) for command in done[len(commands) : -1])
    assert f"'{ahead}' is" in utc and " UTC, 1h59m in the future" in utc and "offset" not in utc, utc
    assert " UTC, 1h59m in the future" in offset and "without an offset" not in offset, offset
    assert "'2999-01-01' is 2999-01-01 00:00:00 UTC" in far and "UTC+05:30" in far, far
    found = done[-1]
    assert found.returncode == 0 and found.stderr.startswith(b"tracestream: no matching records"), found


def test_every_since_and_until_help_says_a_time_without_an_offset_is_utc(stream: RedisHandle) -> None:
    commands = (["search"], ["tail"], ["export"], ["stats"], ["traces"], ["errors"], ["alerts", "test"])
    done = side_by_side([([*command, "--help"], stream.env(COLUMNS="200")) for command in commands])
    for command, helped in zip(commands, done, strict=True):
        text = helped.stdout.decode()
        assert helped.returncode == 0, (command, helped.stderr)
        for option in ("--since", "--until"):
            if f" {option} " in text:
                assert "without an offset is UTC" in help_for(option, text), (command, option, text)
        assert " --since " in text, command


def test_stats_that_found_nothing_names_the_window_it_read(stream: RedisHandle, writer: RecordWriter) -> None:
    writer.log("now, outside both windows")
    soon = datetime.now(timezone.utc) + timedelta(seconds=20)  # within the clocks' allowance
    two_days, one_day = (datetime.now(timezone.utc) - timedelta(days=days) for days in (2, 1))
    bounded, to_now = side_by_side(
        [
            (["stats", "--since", "2d", "--until", "1d"], stream.env()),
            (["stats", "--since", soon.strftime("%Y-%m-%dT%H:%M:%S")], stream.env()),
        ]
    )
    said = r"no records in this window in stream \S+ on \S+ \(from (\S+) to (\S+)\)$"
    window = re.search(said, one_line(bounded, 0))
    assert window, bounded.stderr
    since, until = (datetime.fromisoformat(bound) for bound in window.groups())
    assert abs(since - two_days) < timedelta(minutes=1) and abs(until - one_day) < timedelta(minutes=1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", window.group(1)), window.group(1)
    assert one_line(to_now, 0).endswith(f"(from {soon:%Y-%m-%dT%H:%M:%S}Z to now)\n"), to_now.stderr


# --- arguments outside UTF-8 mode ---------------------------------------------------------------


def test_non_ascii_arguments_outside_utf8_mode_find_what_they_name(redis_server: EmbeddedRedis) -> None:
    """LC_ALL=C PYTHONUTF8=0: `-g Grüße` and `-s café-☕` were an "unexpected UnicodeEncodeError",
    `-e` a codec's wording, `-a city=Zürich` found nothing, and `--stream flüsse` was "not UTF-8"."""
    handle = RedisHandle(redis_server.url, f"flüsse:{uuid.uuid4().hex[:8]}")
    writer = RecordWriter(handle)
    writer.log("Grüße aus Köln", service="café-☕", attributes={"city": "Zürich"})
    writer.log("plain", service="api", attributes={"city": "Zurich"})
    writer.close()
    env = handle.env(**C_LOCALE)
    del env["TRACESTREAM_STREAM"]  # the stream is named by the argument
    filters: list[list[str | bytes]] = [
        ["-g", "Grüße"],
        ["-s", "café-☕"],
        ["-e", "Gr(ü|ue)ße"],
        ["-a", "city=Zürich"],
    ]
    not_text = ["search", "--stream", handle.stream, "-g", b"Gr\xfc\xdfe"]  # latin-1 bytes: not UTF-8
    done = side_by_side(
        [(["search", "--json", "--stream", handle.stream, *found], env) for found in filters]
        + [(not_text, env)]
    )
    for found, searched in zip(filters, done, strict=False):
        assert searched.returncode == 0, (found, searched.stderr)
        assert [line for line in searched.stdout.decode().splitlines() if "Grüße aus Köln" in line], (
            found,
            searched,
        )
        assert len(searched.stdout.splitlines()) == 1, (found, searched.stdout)
    line = one_line(done[-1], 2)
    assert "Gr\\xfc\\xdfe" in line and "UTF-8" in line, line


# --- terminals that are not UTF-8 ---------------------------------------------------------------


@pytest.fixture
def failed_trace(stream: RedisHandle, writer: RecordWriter) -> str:
    """A failed span named in French with a coffee cup, a record in it, and an error issue."""
    provider = tracer_provider(stream, "café-☕")
    with provider.get_tracer("t").start_as_current_span("commande ☕") as span:
        ids = span.get_span_context()
        writer.log("Grüße ☕", service="café-☕", trace_id=ids.trace_id, span_id=ids.span_id)
        writer.log("payment failed", service="café-☕", severity="ERROR", exception=FAILURE)
        span.set_status(trace.Status(trace.StatusCode.ERROR, "declined"))
    provider.shutdown()
    return format(ids.trace_id, "032x")


OUR_SYMBOLS = re.compile(r"\\u(2588|2022|2717|2713|2581|2582|2583|2584|2585|2586|2587|2026)|\\xb7")


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_terminal_that_is_not_utf8_gets_plain_symbols_and_tables_that_line_up(
    stream: RedisHandle, failed_trace: str, encoding: str
) -> None:
    """The timeline, bullets, marks and sparklines were `\\u2588` escapes, and a cell holding
    `café-\\u2615` pushed the rest of its row four columns right: rich measured before escaping."""
    env = stream.env(PYTHONIOENCODING=encoding, COLUMNS="150")
    commands = (["trace", failed_trace], ["errors"], ["doctor"], ["services"], ["stats"])
    done = side_by_side([(command, env) for command in commands])
    outputs = {
        command[0]: shown.stdout.decode(encoding) for command, shown in zip(commands, done, strict=True)
    }
    for name, output in outputs.items():
        assert OUR_SYMBOLS.search(output) is None, (name, output)
        assert name == "doctor" or "\\u2615" in output, (name, output)  # the records' own text, escaped
    assert "#" in outputs["trace"] and "* INFO" in outputs["trace"] and "x declined" in outputs["trace"]
    assert outputs["doctor"].startswith("ok configuration:"), outputs["doctor"]
    for name in ("services", "errors", "stats"):
        widths = {len(line) for line in outputs[name].splitlines() if line.strip()}
        assert len(widths) <= 2 and max(widths) <= 150, (name, outputs[name])
    table = [line for line in outputs["services"].splitlines() if "|" in line]
    assert len({len(line) for line in table}) == 1, outputs["services"]
    cells = [line for line in outputs["errors"].splitlines() if line.strip()]
    assert len({len(line) for line in cells[1:]}) == 1, outputs["errors"]


def test_csv_export_to_a_terminal_that_is_not_utf8_is_in_its_encoding_and_files_stay_utf8(
    stream: RedisHandle, writer: RecordWriter, tmp_path: Path
) -> None:
    writer.log("Grüße ☕", service="café")
    shown = terminal_output(stream, "export", "-f", "csv", stderr_too=True, PYTHONIOENCODING="latin-1")
    assert b"Gr\xfc\xdfe \\u2615" in shown and b"\xc3" not in shown, shown
    target = tmp_path / "out.csv"
    (to_file,) = side_by_side(
        [(["export", "-f", "csv", "-o", str(target)], stream.env(PYTHONIOENCODING="latin-1"))]
    )
    assert to_file.returncode == 0 and "Grüße ☕" in target.read_text(encoding="utf-8")


# --- narrow terminals ---------------------------------------------------------------------------


def test_on_a_narrow_terminal_ids_stay_whole_and_no_column_is_dropped(
    stream: RedisHandle, writer: RecordWriter
) -> None:
    """At 40 columns `traces` cut the trace id; at 50 it dropped the names; `errors` dropped its
    error column below 59 columns and cut the fingerprint `errors resolve` takes at 50."""
    provider = tracer_provider(stream, "api")
    with provider.get_tracer("t").start_as_current_span("GET /orders/{id}") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    writer.log("payment failed", severity="ERROR", exception=FAILURE)
    widths = (40, 50, 60, 70, 80)
    runs = [
        ([command], stream.env(COLUMNS=str(width))) for width in widths for command in ("traces", "errors")
    ]
    done = side_by_side([*runs, (["errors", "--json"], stream.env())])
    (issue,) = ndjson(done[-1].stdout.decode())
    fingerprint = issue["fingerprint"]
    for (args, env), shown in zip(runs, done, strict=False):
        width, output = int(env["COLUMNS"]), shown.stdout.decode()
        lines, words = output.splitlines(), output.split()
        assert shown.returncode == 0 and max(len(line) for line in lines) <= width, (width, output)
        if args == ["traces"]:
            assert trace_id in words and "api" in words and "/orders/{id}" in words, (width, output)
        else:
            assert fingerprint in words and "api" in words, (width, output)
            assert "ValueError:" in words and "declined" in words and len(lines) < 10, (width, output)


# --- times that say they are UTC ------------------------------------------------------------------


def test_traces_over_several_days_say_the_times_are_utc_and_give_the_year(stream: RedisHandle) -> None:
    provider = tracer_provider(stream, "cron")
    tracer = provider.get_tracer("t")
    now = datetime.now(timezone.utc)
    old = now - timedelta(days=2)
    span = tracer.start_span("nightly job", start_time=int(old.timestamp() * 1e9))
    span.end(end_time=int(old.timestamp() * 1e9) + 5_000_000)
    tracer.start_span("hourly job").end()
    provider.shutdown()
    (listed,) = side_by_side([(["traces", "--since", "3d"], stream.env(COLUMNS="100"))])
    output = listed.stdout.decode()
    assert listed.returncode == 0 and "nightly job" in output and "hourly job" in output, listed
    title = output.splitlines()[0]
    assert "UTC" in title and f"{old:%Y-%m-%d}" in title and f"{now:%Y-%m-%d}" in title, output


# --- export's progress bar ----------------------------------------------------------------------


def test_force_color_shows_no_progress_bar_in_a_file_or_a_pipe(
    stream: RedisHandle, writer: RecordWriter
) -> None:
    """FORCE_COLOR asks for colour, not for a terminal: the bar's cursor codes went into the file."""
    writer.log("one")
    forced, asked = side_by_side(
        [(["export"], stream.env(FORCE_COLOR="1")), (["export", "--progress"], stream.env(FORCE_COLOR="1"))]
    )
    assert (forced.returncode, forced.stderr) == (0, b"exported 1 records\n"), forced.stderr
    assert asked.returncode == 0 and b"exporting" in asked.stderr
