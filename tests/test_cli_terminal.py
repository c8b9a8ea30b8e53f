"""Hostile log text on the operator's terminal: shown, never obeyed; `--json` stays exact.

A record written through the exporter's own writer carries escape sequences (clear screen,
colour, OSC 8 hyperlink, OSC 52 clipboard write), a carriage return and a newline that forge
a line, a C1 CSI, bidi overrides, Rich markup and an emoji code, in every field a command shows.
"""

from __future__ import annotations

import csv
import json
import os
import pty
import queue
import re
import subprocess
import threading
import tty
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE

import pytest

from tests.seeded_records import RecordWriter, tracer_provider
from tests.support import RedisHandle, wait_for
from tests.test_cli import TIMEOUT, TRACESTREAM, Here, here, ndjson
from tracestream.terminal_text import json_safe, visible

__all__ = ["here"]  # the fixture, shared with tests/test_cli.py

SGR = re.compile(r"\x1b\[[0-9;]*m")  # Rich's own colour codes
FORGED = "2026-01-01T00:00:00.000000Z INFO  api forged line"
HOSTILE = (
    "ok\x1b[2J\x1b[31mred\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07\x1b]52;c;ZXZpbA==\x07"
    f"\rfake\n{FORGED}\x9b31m\u202eevil\u2066 [bold]markup[/bold] [link=http://evil.example]x[/link]"
    " :warning: bell\x07del\x7fnel\x85end"
)
# Error groups are keyed by exception type, code and service, never by text: the tab goes in the body only.
BODY = f"{HOSTILE}\ttab"
STORED_BODY = SGR.sub("", BODY)  # a body's colour codes are not stored; its other codes are
SERVICE = "svc\x1b]0;title\x07[red]x[/red]"
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def unsafe_characters(text: str) -> list[str]:
    """Every character that drives a terminal: C0 (but the output's own newlines), DEL, C1, bidi."""
    return [
        char
        for char in text
        if (char != "\n" and unicodedata.category(char) == "Cc")
        or char in "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    ]


def assert_shown_not_obeyed(output: str) -> None:
    """No character reaches the terminal raw, the newline forged no line, and both the escapes
    and the markup are there to read (a table may fold long text, so only their beginnings)."""
    assert output, "the command printed nothing"
    assert unsafe_characters(output) == []
    assert not any(line.lstrip(" │┃•").startswith(FORGED[:20]) for line in output.splitlines())
    assert "\\x1b" in output and "[" in output


@pytest.fixture
def hostile(stream: RedisHandle, writer: RecordWriter) -> Iterator[str]:
    """The hostile record as a log (with exception and code location) and as a span; the trace id."""
    writer.log(
        BODY, service=SERVICE, severity="ERROR", trace_id=TRACE_ID, span_id=7,
        exception=(f"Err{HOSTILE}", HOSTILE, "Traceback"), code=HOSTILE,
    )  # fmt: skip
    provider = tracer_provider(stream, SERVICE)
    with provider.get_tracer("t").start_as_current_span(HOSTILE) as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        writer.log(BODY, service=SERVICE, trace_id=span.get_span_context().trace_id,
                   span_id=span.get_span_context().span_id)  # fmt: skip
    yield trace_id
    provider.shutdown()


def test_visible_escapes_every_control_and_bidi_character_and_keeps_the_rest() -> None:
    assert visible("a\x1b[2Jb\rc\nd\te\x9bf\u202eg") == "a\\x1b[2Jb\\rc\\nd\\te\\x9bf\\u202eg"
    assert visible("naïve café ✓ 日本 👍🏽 [bold]") == "naïve café ✓ 日本 👍🏽 [bold]"
    every = "".join(map(chr, range(0x20))) + "\x7f" + "".join(map(chr, range(0x80, 0xA0))) + "\u202e\udcff"
    assert unsafe_characters(visible(every)) == [] and "\udcff" not in visible(every)


def test_json_safe_spells_c1_and_bidi_as_escapes_and_decodes_to_the_same_text() -> None:
    document = json.dumps({"body": HOSTILE}, ensure_ascii=False).encode()
    safe = json_safe(document)
    assert json.loads(safe) == {"body": HOSTILE}
    assert b"\xc2\x9b" not in safe and "\u202e".encode() not in safe and b"\x1b" not in safe


def test_search_services_stats_and_trace_show_control_characters_and_json_keeps_them(
    hostile: str, here: Here
) -> None:
    for args in (
        ["search"],
        ["services"],
        ["stats"],
        ["trace", hostile],
        ["trace", format(TRACE_ID, "032x")],
    ):
        done = here(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert_shown_not_obeyed(done.stdout)
        assert "svc\\x1b]0;" in done.stdout, args

    records = ndjson(here("search", "--json").stdout)
    assert {(r["body"], r["service"]) for r in records} == {(STORED_BODY, SERVICE)}
    assert records[-1]["exception_type"] == f"Err{HOSTILE}" and records[-1]["code"] == HOSTILE
    assert {line["service"] for line in ndjson(here("services", "--json").stdout)} == {SERVICE}
    groups = [line for line in ndjson(here("stats", "--json").stdout) if line["type"] == "error_group"]
    assert [(g["exception_type"], g["message"], g["code"]) for g in groups] == [
        (f"Err{HOSTILE}", HOSTILE, HOSTILE)
    ]
    spans = [line for line in ndjson(here("trace", hostile, "--json").stdout) if line["type"] == "span"]
    assert [(s["name"], s["service"]) for s in spans] == [(HOSTILE, SERVICE)]
    for args in (["search", "--json"], ["trace", hostile, "--json"], ["stats", "--json"]):
        assert unsafe_characters(here(*args).stdout) == [], args


def test_export_to_stdout_is_exact_json_without_terminal_bytes(
    hostile: str, here: Here, tmp_path: Path
) -> None:
    exported = here("export")
    assert exported.returncode == 0 and unsafe_characters(exported.stdout) == []
    assert {r["body"] for r in ndjson(exported.stdout)} == {STORED_BODY}
    target = tmp_path / "out.csv"
    assert here("export", "-f", "csv", "-o", str(target)).returncode == 0
    with target.open(encoding="utf-8", newline="") as file:  # a file keeps the exact text
        assert [row["body"] for row in csv.DictReader(file)] == [STORED_BODY, STORED_BODY]


def on_a_terminal(stream: RedisHandle, *args: str) -> str:
    """What the command writes to a UTF-8 terminal (COLUMNS=200)."""
    return terminal_output(stream, *args).decode()


def terminal_output(stream: RedisHandle, *args: str, stderr_too: bool = False, **env: str) -> bytes:
    """What the command writes to a terminal (COLUMNS=200, and `env`), byte for byte: no newline
    translation; `stderr_too` puts its stderr on that terminal as well, as a shell does."""
    controller, terminal = pty.openpty()
    tty.setraw(terminal)
    try:
        process = subprocess.Popen(
            [TRACESTREAM, *args],
            env=stream.env(COLUMNS="200", TERM="xterm-256color", **env),
            stdout=terminal,
            stderr=terminal if stderr_too else PIPE,
        )
        os.close(terminal)  # the command holds the only other end: EOF when it exits
        output = b""
        while chunk := _read_or_eof(controller):
            output += chunk
        assert process.wait(TIMEOUT) == 0, process.communicate()[1]
    finally:
        os.close(controller)
    return output


def _read_or_eof(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the terminal's other end is closed and everything was read
        return b""


def test_csv_export_to_a_terminal_shows_control_characters(stream: RedisHandle, hostile: str) -> None:
    """Like `ls`, CSV on a terminal is for reading; in a file or a pipe it stays exact."""
    text = on_a_terminal(stream, "export", "-f", "csv")
    assert unsafe_characters(text.replace("\r\n", "\n")) == [] and visible(STORED_BODY) in text


def test_on_a_terminal_the_only_escape_sequences_are_our_colours(stream: RedisHandle, hostile: str) -> None:
    """Rich colours the output on a terminal; nothing else may reach it: no OSC, no cursor or screen
    control, no stray ESC, BEL, CR, C1 or bidi character."""
    for args in (["search"], ["trace", hostile], ["stats"], ["services"]):
        text = on_a_terminal(stream, *args)
        assert "\x1b[" in text, args  # coloured: this is what an operator sees
        assert unsafe_characters(SGR.sub("", text)) == [], args
        assert "\\x1b]" in text, args  # an OSC sequence, shown


def test_scrub_check_shows_a_sample_line_without_obeying_it(here: Here, tmp_path: Path) -> None:
    sample = tmp_path / "sample.log"
    sample.write_text(f"password=hunter2 {BODY}\n", encoding="utf-8")
    done = here("scrub-check", str(sample))
    assert done.returncode == 0 and "hunter2" not in done.stdout
    assert_shown_not_obeyed(done.stdout)


def test_doctor_shows_a_stream_name_without_obeying_it(here: Here) -> None:
    name = "evil\x1b[2J[bold]x[/bold]"  # a key Redis and our settings accept: no space, no brace
    done = here("doctor", "--stream", name)
    assert "\\x1b[2J[bold]x[/bold]" in done.stdout
    assert unsafe_characters(done.stdout) == []
    json_done = here("doctor", "--stream", name, "--json")
    assert unsafe_characters(json_done.stdout) == []
    assert [json.loads(line)["check"] for line in json_done.stdout.splitlines()][:1] == ["configuration"]


def _read_lines(pipe: subprocess.Popen[bytes], into: queue.Queue[bytes]) -> None:
    assert pipe.stdout is not None
    for line in pipe.stdout:
        into.put(line)


def test_tail_shows_backlog_and_live_records_without_obeying_them(
    stream: RedisHandle, writer: RecordWriter, hostile: str
) -> None:
    process = subprocess.Popen([TRACESTREAM, "tail"], env=stream.env(COLUMNS="200"), stdout=PIPE, stderr=PIPE)
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process, lines), daemon=True).start()
    got: list[bytes] = []

    def received(count: int) -> bool:
        while not lines.empty():
            got.append(lines.get())
        return len(got) >= count

    try:
        wait_for(lambda: received(3), timeout=30, what="the backlog")
        writer.log(BODY, service=SERVICE, severity="FATAL")
        wait_for(lambda: received(4), what="a live record")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=TIMEOUT)
    output = b"".join(got).decode()
    # one line per record and one for the error's stack trace: the newline forged none
    assert len(got) == 4 and got[1] == b"    Traceback\n" and b"Traceback" not in stderr
    assert_shown_not_obeyed(output)
    assert output.count(visible(STORED_BODY)) == 3 and "[bold]markup[/bold]" in output
