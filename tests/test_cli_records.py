"""What people read from `search`, `tail` and `trace`: an error's stack trace under its record, rows
in time order, a trace readable at 80 columns, a word when nothing matched; and the console's URL.

The checkout comes from a real process that calls `configure()` and logs an exception inside a
span, so its stack trace is the one the logging bridge wrote. The exception's message carries an
escape sequence, and a newline followed by a forged record line.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from subprocess import PIPE

import httpx
import pytest

from tests import test_console_acl
from tests.seeded_records import RecordWriter
from tests.support import RedisHandle, run_python, wait_for
from tests.test_cli import TIMEOUT, TRACESTREAM, Here, here, ndjson
from tracestream.cli.console import console_url
from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.schema import LogEntry

FORGED = "2026-01-01T00:00:00.000000Z INFO  shop forged line"
SPAN_NAME = "POST /orders/{order_id}/checkout"  # longer than the 18 columns names once got at 80
SHOP = f"""
import logging, tracestream
from opentelemetry import trace
telemetry = tracestream.configure(service_name="shop")
log = logging.getLogger("shop.checkout")
tracer = trace.get_tracer("shop")

def charge():
    raise ValueError({"declined" + chr(27) + "[2J" + chr(10) + FORGED!r})

with tracer.start_as_current_span({SPAN_NAME!r}):
    log.info("checkout started")
    with tracer.start_as_current_span("charge card"):
        try:
            charge()
        except ValueError:
            log.exception("payment failed")
    log.warning("checkout answered 502")
telemetry.force_flush()
"""
Cli = Callable[..., subprocess.CompletedProcess[str]]
acl_redis, reader = test_console_acl.acl_redis, test_console_acl.reader  # the documented read-only user
__all__ = ["acl_redis", "here", "reader"]  # fixtures, shared with other modules


@dataclass(frozen=True)
class Checkout:
    handle: RedisHandle
    error: LogEntry  # "payment failed", with the stack trace

    @property
    def stack_lines(self) -> list[str]:
        return self.error.exception_stacktrace.rstrip("\n").split("\n")


@pytest.fixture(scope="module")
def checkout(redis_server: EmbeddedRedis) -> Checkout:
    """The failed checkout, written once for the module by a process of its own."""
    handle = RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    run_python(SHOP, handle.env())
    wait_for(lambda: len(handle.logs()) == 3 and len(handle.spans()) == 2, what="the checkout's records")
    [error] = [entry for entry in handle.logs() if entry.exception_stacktrace]
    assert error.exception_stacktrace.startswith("Traceback (most recent call last):")
    assert error.exception_stacktrace.rstrip("\n").endswith(FORGED)  # the message's own newline
    return Checkout(handle, error)


@pytest.fixture
def cli(checkout: Checkout, here: Here, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """`main()` in this process, reading the checkout, as on an 80-column terminal."""
    monkeypatch.setenv("COLUMNS", "80")
    return lambda *args: here(*args, "--stream", checkout.handle.stream)


def assert_no_forged_line(output: str) -> None:
    """The stack's own newlines break lines, but every one of them is indented under its record."""
    assert "\x1b" not in output and "declined\\x1b[2J" in output
    assert not any(line.startswith(FORGED[:10]) for line in output.splitlines())
    assert f"    {FORGED}" in output


def test_search_prints_the_stack_under_its_record_and_no_stack_leaves_it_out(
    checkout: Checkout, cli: Cli
) -> None:
    done = cli("search")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "payment failed" in line)
    assert "ValueError: declined\\x1b[2J\\n2026" in lines[at]  # the record's own line, escaped
    stack = lines[at + 1 : at + 1 + len(checkout.stack_lines)]
    assert stack == [f"    {line}".replace("\x1b", "\\x1b") for line in checkout.stack_lines]
    assert "checkout started" in lines[at + 1 + len(stack)]
    assert_no_forged_line(done.stdout)

    without = cli("search", "--no-stack")
    assert "Traceback" not in without.stdout and len(without.stdout.splitlines()) == 3
    as_json = ndjson(cli("search", "--json").stdout)  # unchanged: one object per record
    assert [record["exception_stacktrace"] for record in as_json] == [
        "",
        checkout.error.exception_stacktrace,
        "",
    ]


def test_trace_reads_in_time_order_at_80_columns_with_the_stack_under_its_record(
    checkout: Checkout, cli: Cli
) -> None:
    done = cli("trace", checkout.error.trace_id)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    # The warning came after the child span ended: it is shown after it, not with its span's other log.
    order = [
        SPAN_NAME,
        "checkout started",
        "charge card",
        "payment failed",
        "Traceback",
        "checkout answered 502",
    ]
    rows = [next(i for i, line in enumerate(lines) if text in line) for text in order]
    assert rows == sorted(rows), done.stdout
    span_row = lines[rows[0]]
    assert "█" in span_row and "shop" in span_row  # name, service and bar on one line: no folding
    header = next(line for line in lines if "span / log" in line)
    assert all(column in header for column in ("service", "+ms", "ms", "timeline"))
    log_indent = lines[rows[3]].index("•")
    stack = lines[rows[4] : rows[4] + len(checkout.stack_lines)]
    assert all(line.startswith(" " * (log_indent + 4)) for line in stack), stack
    assert_no_forged_line(done.stdout)

    assert "Traceback" not in cli("trace", checkout.error.trace_id, "--no-stack").stdout
    as_json = ndjson(cli("trace", checkout.error.trace_id, "--json").stdout)
    assert [(line["type"], line["depth"], line.get("name") or line["body"]) for line in as_json] == [
        ("span", 0, SPAN_NAME),
        ("log", 1, "checkout started"),
        ("span", 1, "charge card"),
        ("log", 2, "payment failed"),
        ("log", 1, "checkout answered 502"),
    ]


def test_nothing_found_is_said_on_stderr_with_exit_0(checkout: Checkout, cli: Cli) -> None:
    for args, message in [
        (["search", "-g", "no such text"], "no matching records in stream"),
        (["search", "--cursor", "0-1"], "no more matching records in stream"),
        (["trace", "f" * 32], f"no records for trace {'f' * 32}"),
    ]:
        done = cli(*args)
        assert done.returncode == 0 and done.stdout == "", (args, done)
        assert done.stderr.startswith("tracestream: ") and message in done.stderr, (args, done.stderr)
        assert len(done.stderr.splitlines()) == 1
    assert cli("search", "-g", "no such text", "--json").stdout == ""  # NDJSON stays records only


def test_nothing_found_names_the_redis_read_and_a_stream_that_is_not_there(
    checkout: Checkout, here: Here
) -> None:
    """With the URL unset a reader reads localhost: "wrong Redis" and "nothing there" must not read
    alike, so the line names the server (its password masked), and says when the stream does not
    exist at all."""
    host_port = checkout.handle.url.split("//")[1].split("/")[0]
    url = f"redis://default:s3cret@{host_port}/0"  # the default user has no password: any is taken
    shown = f"redis://default:***@{host_port}/0"
    missing = f"nosuch-{uuid.uuid4().hex[:8]}"
    for args, line in [
        (["search"], f"no matching records: stream {missing} does not exist on {shown}"),
        (["trace", "f" * 32], f"no records for trace {'f' * 32}: stream {missing} does not exist on {shown}"),
        (["traces"], f"no matching traces: stream {missing} does not exist on {shown}"),
        (["services", "--json"], f"no records in the last hour: stream {missing} does not exist on {shown}"),
        (["stats"], f"no records in this window: stream {missing} does not exist on {shown}"),
        (["errors"], f"no error issues: stream {missing} does not exist on {shown}"),
    ]:
        done = here(*args, "--redis-url", url, "--stream", missing)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", f"tracestream: {line}\n"), args
    stream = checkout.handle.stream
    for args, line in [
        (["search", "-g", "no such text"], f"no matching records in stream {stream} on {shown}"),
        (["traces", "--route", "nothing"], f"no matching traces in stream {stream} on {shown}"),
        (
            ["stats", "--since", "1970-01-01T00:00:00Z", "--until", "1970-01-01T00:00:01Z"],
            f"no records in this window in stream {stream} on {shown} "
            "(from 1970-01-01T00:00:00Z to 1970-01-01T00:00:01Z)",
        ),
        (
            ["trace", "f" * 32],
            f"no records for trace {'f' * 32} in stream {stream} on {shown} (not written, trimmed by "
            "max_entries or max_age, expired, or evicted: `tracestream doctor` names the limits and the "
            "eviction policy)",
        ),
    ]:
        done = here(*args, "--redis-url", url, "--stream", stream)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", f"tracestream: {line}\n"), args


def test_the_read_only_user_hears_where_nothing_was_found(reader: RedisHandle, here: Here) -> None:
    """EXISTS is no right of the documented read-only user: the line still names the server, and
    a refusal is no error."""
    done = here("search", "-g", "no such text", "--redis-url", reader.url, "--stream", reader.stream)
    shown = reader.url.replace("s3cret-reader", "***")
    assert (done.returncode, done.stderr) == (
        0,
        f"tracestream: no matching records in stream {reader.stream} on {shown}\n",
    )


@pytest.fixture
def late(stream: RedisHandle, writer: RecordWriter) -> Iterator[None]:
    """Two records whose arrival order is not their time order, as when two processes' batches
    interleave: the earlier one, an error with its stack, reaches Redis last."""
    other = RecordWriter(stream)
    earlier = other.row("earlier", severity="ERROR", exception=("KeyError", "'sku'", "Traceback\n  at x"))
    writer.log("later")
    other.write(earlier)
    yield
    other.close()


@pytest.mark.usefixtures("late")
def test_search_pages_and_the_tail_backlog_are_in_time_order(stream: RedisHandle, here: Here) -> None:
    tail = subprocess.Popen([TRACESTREAM, "tail"], env=stream.env(), stdout=PIPE, stderr=PIPE, text=True)
    try:
        lines = _lines_until(tail, 4)
    finally:
        tail.terminate()
        tail.communicate(timeout=TIMEOUT)
    assert "earlier" in lines[0] and "later" in lines[3], lines  # oldest first
    assert lines[1:3] == ["    Traceback\n", "      at x\n"]
    assert [record["body"] for record in ndjson(here("search", "--json").stdout)] == ["later", "earlier"]
    people = here("search", "--no-stack").stdout.splitlines()  # newest first
    assert len(people) == 2 and "later" in people[0] and "earlier" in people[1], people


@pytest.mark.parametrize("ahead_s", [-1e9, 2.0], ids=["past", "two seconds ahead"])
def test_tail_ends_once_its_until_has_passed(
    stream: RedisHandle, writer: RecordWriter, ahead_s: float
) -> None:
    """It printed the backlog, then followed for ever a stream nothing new could match."""
    writer.write(writer.row("already written"))
    until = datetime.fromtimestamp(max(time.time() + ahead_s, 0), timezone.utc).isoformat()
    started = time.monotonic()
    tail = subprocess.run(
        [TRACESTREAM, "tail", "--until", until], env=stream.env(), capture_output=True, text=True, timeout=30
    )
    assert tail.returncode == 0, tail.stderr
    assert ("already written" in tail.stdout) == (ahead_s > 0), tail.stdout
    assert time.monotonic() - started < 15


def _lines_until(process: subprocess.Popen[str], count: int) -> list[str]:
    """The first `count` lines the process prints, read with a deadline."""
    got: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_into, args=(process, got), daemon=True).start()
    lines: list[str] = []

    def enough() -> bool:
        while not got.empty():
            lines.append(got.get())
        return len(lines) >= count

    wait_for(enough, timeout=30, what=f"{count} lines of output")
    return lines


def _read_into(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)


def test_the_console_prints_the_url_it_serves_on(stream: RedisHandle) -> None:
    port = free_port()
    console = subprocess.Popen(
        [TRACESTREAM, "console", "--port", str(port)], env=stream.env(), stdout=PIPE, stderr=PIPE, text=True
    )
    try:
        [line] = _lines_until(console, 1)
        assert line == f"tracestream console on http://127.0.0.1:{port}/ (Ctrl-C stops it)\n"
        url = line.split()[3]
        wait_for(lambda: _status(url) == 200, what="the console to answer at the URL it printed")
    finally:
        console.terminate()
        console.communicate(timeout=TIMEOUT)
    exposed = subprocess.run(
        [TRACESTREAM, "console", "--host", "0.0.0.0", "--port", str(port)],
        env=stream.env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert exposed.returncode == 2 and exposed.stdout == "", "no URL for a console that will not serve"
    # A wildcard address is reached on loopback, the one name the console answers to by default.
    assert console_url("0.0.0.0", 8686) == "http://127.0.0.1:8686/"
    assert console_url("::", 8686) == "http://[::1]:8686/"
    assert console_url("fe80::1", 8686) == "http://[fe80::1]:8686/"


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.TransportError:
        return 0
