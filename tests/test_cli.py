"""The `tracestream` command against a real redis-server.

Every command runs at least once as a real subprocess; variations of a command call the same
`main()` in-process, since interpreter start-up would otherwise dominate the suite's time.
"""

from __future__ import annotations

import csv
import io
import json
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from subprocess import PIPE
from typing import IO, Any

import pytest
import redis
from opentelemetry import trace
from rich.console import Console

from tests.seeded_records import RecordWriter, blocked_reader, tracer_provider
from tests.support import VENV_BIN, RedisHandle, wait_for
from tracestream.cli import main
from tracestream.cli.record_lines import record_line
from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.schema import LOG_FIELDS, LogEntry

TRACESTREAM = str(VENV_BIN / "tracestream")
Here = Callable[..., subprocess.CompletedProcess[str]]
TIMEOUT = 60


def run(handle: RedisHandle, *args: str) -> subprocess.CompletedProcess[str]:
    return run_all(handle, list(args))[0]


def run_all(handle: RedisHandle, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands side by side (start-up dominates); wide enough that table cells never wrap."""
    env = handle.env(COLUMNS="200")
    processes = [
        (args, subprocess.Popen([TRACESTREAM, *args], env=env, stdout=PIPE, stderr=PIPE, text=True))
        for args in commands
    ]
    done = []
    for args, process in processes:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        done.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return done


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def traced(stream: RedisHandle, writer: RecordWriter) -> str:
    """A trace across two services with logs inline, plus unrelated noise; returns the trace id."""
    api, worker = tracer_provider(stream, "api"), tracer_provider(stream, "worker")
    writer.write(
        writer.row("boot", service="api", severity="DEBUG"),
        writer.row("GET /users", service="api", severity="WARN", attributes={"http.route": "/users"}),
    )
    with api.get_tracer("t").start_as_current_span("GET /items/{item_id}") as root:
        ids = root.get_span_context()
        writer.log("fetching item", trace_id=ids.trace_id, span_id=ids.span_id,
                   attributes={"http.route": "/items/{item_id}"})  # fmt: skip
        parent = trace.set_span_in_context(root)
        with worker.get_tracer("t").start_as_current_span("resize image", context=parent):
            child = trace.get_current_span().get_span_context()
            bomb = ("PIL.DecompressionBombError", "too big", "Traceback")
            writer.log("image too large", service="worker", severity="ERROR", trace_id=child.trace_id,
                       span_id=child.span_id, exception=bomb)  # fmt: skip
    return format(ids.trace_id, "032x")


@pytest.fixture
def here(stream: RedisHandle, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Here:
    """`main()` in this process: the same code path without paying interpreter start-up again."""
    for name, value in stream.env(COLUMNS="200").items():
        if name.startswith(("TRACESTREAM_", "COLUMNS")):
            monkeypatch.setenv(name, value)

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        status = main(list(args))
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), status, captured.out, captured.err)

    return call


def test_search_filters_json_and_paging(stream: RedisHandle, traced: str, here: Here) -> None:
    first = run(stream, "search", "--json", "-n", "2")
    assert first.returncode == 0, first.stderr
    records = ndjson(first.stdout)
    assert [r["body"] for r in records] == ["image too large", "fetching item"]
    required = {"timestamp", "severity", "body", "service", "trace_id", "span_id", "attributes", "resource"}
    assert all(required <= set(r) for r in records)
    cursor = first.stderr.split("--cursor ")[1].strip()
    rest = run(stream, "search", "--json", "-n", "2", "--cursor", cursor)
    assert [r["body"] for r in ndjson(rest.stdout)] == ["GET /users", "boot"]

    combined = here(
        "search", "--json", "--trace-id", traced, "-s", "api,worker", "-l", "info", "--since", "15m",
        "-g", "item", "-e", r"^fetch\w+", "-a", "http.route=/items/{item_id}",
    )  # fmt: skip
    assert [r["body"] for r in ndjson(combined.stdout)] == ["fetching item"], combined.stderr
    by_service = here("search", "--json", "--service", "worker", "--until", "2999-01-01T00:00:00Z")
    assert [r["service"] for r in ndjson(by_service.stdout)] == ["worker"]
    people = here("search", "-l", "error")
    assert people.returncode == 0 and "image too large" in people.stdout and "GET /users" not in people.stdout
    assert "PIL.DecompressionBombError" in people.stdout


def test_trace_waterfall_and_json(stream: RedisHandle, traced: str, here: Here) -> None:
    shown = run(stream, "trace", traced)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    order = ["GET /items/{item_id}", "fetching item", "resize image", "image too large"]
    positions = [next(i for i, line in enumerate(lines) if text in line) for text in order]
    assert positions == sorted(positions) and "worker" in shown.stdout and "█" in shown.stdout
    assert "\x1b[" not in shown.stdout  # no colour codes in a pipe
    lines_json = ndjson(here("trace", traced, "--json").stdout)
    assert [(line["type"], line["depth"], line.get("name") or line["body"]) for line in lines_json] == [
        ("span", 0, "GET /items/{item_id}"),
        ("log", 1, "fetching item"),
        ("span", 1, "resize image"),
        ("log", 2, "image too large"),
    ]
    missing = here("trace", "f" * 32)
    assert missing.returncode == 0 and missing.stdout == "" and "no records for trace" in missing.stderr


def test_a_failed_span_says_why_in_the_waterfall_and_whole_in_json(stream: RedisHandle, here: Here) -> None:
    """The OTel docs' `record_exception` and `set_status(ERROR)`: only the bar's colour, which a
    pipe drops, told of the failure, and `--json` left out the events and the status text."""
    with tracer_provider(stream, "api").get_tracer("t").start_as_current_span("charge") as span:
        ids = span.get_span_context()
        span.add_event("retry", {"attempt": 2})
        span.record_exception(ConnectionError("card processor unreachable"))
        span.set_status(trace.Status(trace.StatusCode.ERROR, "payment failed"))
    trace_id = format(ids.trace_id, "032x")
    shown = here("trace", trace_id)
    assert "charge  ✗ ConnectionError: card processor unreachable" in shown.stdout, shown.stdout
    (line,) = ndjson(here("trace", trace_id, "--json").stdout)
    assert line["status_message"] == "payment failed" and line["scope"] == "t"
    assert [event["name"] for event in line["events"]] == ["retry", "exception"]
    assert line["events"][1]["attributes"]["exception.type"] == "ConnectionError"


def test_a_long_message_in_a_trace_is_a_line_of_the_waterfall(
    stream: RedisHandle, writer: RecordWriter, here: Here
) -> None:
    """A 32 KiB message folded into the waterfall's name column was 917 lines of one record."""
    with tracer_provider(stream, "api").get_tracer("t").start_as_current_span("GET /upload") as span:
        ids = span.get_span_context()
        writer.log("payload " + "x" * 32_000, trace_id=ids.trace_id, span_id=ids.span_id)
    shown = here("trace", format(ids.trace_id, "032x"))
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout.splitlines()) < 20, shown.stdout[:500]
    whole = ndjson(here("trace", format(ids.trace_id, "032x"), "--json").stdout)
    assert [len(line["body"]) for line in whole if line["type"] == "log"] == [32_008]


def test_services_and_stats(stream: RedisHandle, traced: str, here: Here) -> None:
    services_json, stats_json = run_all(stream, ["services", "--json"], ["stats", "--json", "--since", "1h"])
    services = {line["service"]: line for line in ndjson(services_json.stdout)}
    assert set(services) == {"api", "worker"}
    assert services["api"]["records_last_hour"] == 3 and services["api"]["errors_last_hour"] == 0
    assert services["worker"]["errors_last_hour"] == 1 and services["worker"]["instances"] == 1
    services_table = here("services")
    assert "service integration status" in services_table.stdout and "worker" in services_table.stdout

    stats = ndjson(stats_json.stdout)
    counts = {(s["service"], s["severity"]): s["count"] for s in stats if s["type"] == "count"}
    assert counts == {("api", "DEBUG"): 1, ("api", "WARN"): 1, ("api", "INFO"): 1, ("worker", "ERROR"): 1}
    groups = [s for s in stats if s["type"] == "error_group"]
    assert [(g["exception_type"], g["count"]) for g in groups] == [("PIL.DecompressionBombError", 1)]
    stats_table = here("stats")
    assert "top error groups" in stats_table.stdout and "DecompressionBombError" in stats_table.stdout


def test_export_ndjson_and_csv(stream: RedisHandle, traced: str, tmp_path: Path, here: Here) -> None:
    target = tmp_path / "out.csv"
    as_csv = run(stream, "export", "--format", "csv", "-o", str(target), "--progress", "-s", "worker")
    assert as_csv.returncode == 0 and "exporting" in as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [(r["service"], r["body"], r["exception_type"]) for r in rows] == [
        ("worker", "image too large", "PIL.DecompressionBombError")
    ]
    assert json.loads(rows[0]["resource"])["service.name"] == "worker"
    exported = here("export", "-l", "info")
    assert exported.returncode == 0 and "exported 3 records" in exported.stderr
    assert [r["body"] for r in ndjson(exported.stdout)] == ["image too large", "fetching item", "GET /users"]


def test_doctor_explains_what_it_finds(
    stream: RedisHandle, traced: str, here: Here, monkeypatch: pytest.MonkeyPatch
) -> None:
    healthy = run(stream, "doctor")
    assert healthy.returncode == 0, healthy.stdout
    assert "4 entries" in healthy.stdout and "2 entries" in healthy.stdout and "noeviction" in healthy.stdout
    assert "✓ log stream: " in healthy.stdout and "[/]" not in healthy.stdout  # markup rendered, not printed
    findings = {f["check"]: f for f in ndjson(here("doctor", "--json").stdout)}
    assert findings["log stream"]["status"] == "ok" and "retention" in findings

    host_port = stream.url.split("//")[1].split("/")[0]
    monkeypatch.setenv("TRACESTREAM_REDIS_TIMEOUT", "500ms")  # a TLS hello to a plain server gets no answer
    for args, status, advice in [
        (["--stream", "nothing-here"], 0, "nothing was exported here yet"),
        (["--redis-url", f"redis://ghost:wrong@{host_port}/0"], 1, "refused the user name or password"),
        (["--redis-url", f"redis://{host_port}/99"], 1, "has no database 99"),
        (["--redis-url", "redis://127.0.0.1:1/0"], 1, "nothing accepts connections at 127.0.0.1:1"),
        (["--redis-url", "http://example.com"], 1, "scheme must be one of"),
        (["--redis-url", f"rediss://{host_port}/0"], 1, "does not speak TLS, use redis://"),
    ]:
        done = here("doctor", *args)
        assert done.returncode == status and advice in done.stdout, (args, done.stdout)


LOGS_ONLY = """
import logging, sys
import tracestream
tracestream.configure()
logging.getLogger("app").warning("spans go to the console")
print("logged", flush=True)
sys.stdin.read()
"""


def test_doctor_says_the_live_processes_export_no_spans_where_none_do(
    stream: RedisHandle, here: Here
) -> None:
    """`OTEL_TRACES_EXPORTER=console`: doctor blamed the Redis URL and stream name for the
    missing span stream, though the processes' status keys said none sends spans."""
    env = stream.env(OTEL_SERVICE_NAME="logs-only", OTEL_TRACES_EXPORTER="console")
    app = subprocess.Popen(
        [str(VENV_BIN / "python"), "-c", LOGS_ONLY], env=env, stdin=PIPE, stdout=PIPE, text=True
    )
    try:
        assert app.stdout is not None and app.stdout.readline() == "logged\n"
        findings = wait_for(
            lambda: (
                (found := {f["check"]: f for f in ndjson(here("doctor", "--json").stdout)})
                and found["exporters"]["status"] == "ok"
                and found
            ),
            what="the process's status",
        )
    finally:
        app.communicate("")
    missing = findings["span stream"]["detail"]
    assert "no live process writing here (logs-only:" in missing, missing
    assert "has exported spans: they made none yet, or their OTEL_TRACES_EXPORTER names no redis_stream" in (
        missing
    ), missing


def test_doctor_prints_a_line_a_finding_into_a_pipe(stream: RedisHandle, traced: str) -> None:
    """Not on a terminal rich wrapped at 80 columns: a finding took two to five lines, which
    `grep` and a log collector take apart."""
    env = {name: value for name, value in stream.env().items() if name != "COLUMNS"}
    done = subprocess.run([TRACESTREAM, "doctor"], env=env, capture_output=True, text=True)
    found = subprocess.run([TRACESTREAM, "doctor", "--json"], env=env, capture_output=True, text=True)
    lines = done.stdout.splitlines()
    assert len(lines) == len(ndjson(found.stdout)) and any(len(line) > 80 for line in lines)
    assert all(line[:2] in ("✓ ", "! ", "✗ ") for line in lines), done.stdout


def test_doctor_reads_a_stream_another_program_wrote_bytes_into(stream: RedisHandle, here: Here) -> None:
    """An entry that is not UTF-8 is not an error of ours (docs/stream-schema.md): doctor, the
    tool for such a stream, reads its ids and goes on with every other check."""
    foreign = f"{stream.stream}-foreign"
    with stream.client() as client:
        client.xadd(foreign, {"body": b"\xff\xfe not utf-8"})
    done = here("doctor", "--stream", foreign)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"'{foreign}': 1 entries" in done.stdout and "retention" in done.stdout


def test_doctor_warns_of_any_eviction_policy(stream: RedisHandle, here: Here) -> None:
    """volatile-* evicts what carries an expiry first: the trace index, trace list and issues."""
    with stream.client() as admin:
        admin.config_set("maxmemory-policy", "volatile-lru")
        try:
            findings = {f["check"]: f for f in ndjson(here("doctor", "--json").stdout)}
        finally:
            admin.config_set("maxmemory-policy", "noeviction")
    eviction = findings["eviction"]
    assert eviction["status"] == "warn" and "prefer noeviction" in eviction["detail"]
    assert "evict the trace index, trace list, issues and resources" in eviction["detail"]


def test_doctor_says_how_many_keys_redis_has_evicted(here: Here) -> None:
    """Under allkeys-lru the streams go first when memory runs out: only the next writer was
    told, and doctor said ✓ with nine records in ten gone."""
    with EmbeddedRedis() as server:
        client = server.client()
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.set("first", "x" * 100_000)
        client.config_set("maxmemory", int(client.info()["used_memory"]) + 50_000)
        client.set("second", "x" * 100_000)  # room for it only where the first was
        findings = {f["check"]: f for f in ndjson(here("doctor", "--redis-url", server.url, "--json").stdout)}
    assert re.search(r"it has evicted [1-9]\d* keys since it started", findings["eviction"]["detail"])


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru"])
def test_doctor_fails_where_no_write_can_succeed(stream: RedisHandle, here: Here, policy: str) -> None:
    """A replica refuses writes (or the next sync drops them); a full Redis refuses every write
    (OOM) under noeviction, and under volatile-* once what has an expiry is gone (the streams
    have none). Either way no service writes a record, so doctor does not say ✓."""
    with EmbeddedRedis() as replica, EmbeddedRedis() as full:
        replica.client().replicaof("127.0.0.1", str(free_port()))  # a master that never answers
        full.client().config_set("maxmemory-policy", policy)
        full.client().config_set("maxmemory", 1)
        on_replica = here("doctor", "--redis-url", replica.url)
        when_full = here("doctor", "--redis-url", full.url)
    assert on_replica.returncode == 1 and "✗ server: " in on_replica.stdout, on_replica.stdout
    assert "a replica of 127.0.0.1:" in on_replica.stdout and "at the master" in on_replica.stdout
    assert when_full.returncode == 1 and "✗ memory: Redis is full" in when_full.stdout, when_full.stdout
    assert f"{policy}): it refuses every write" in " ".join(when_full.stdout.split())


def test_doctor_calls_a_redis_full_that_refuses_batches_below_its_limit(here: Here) -> None:
    """A batch needs room for itself: at 95% of maxmemory Redis refuses it (OOM) and is back
    under its limit when doctor looks, which said only that writes may soon fail."""
    with EmbeddedRedis() as server:
        client = server.client()
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", int(client.info()["used_memory"]) + 40_000)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("batch", "x" * 100_000)
        done = here("doctor", "--redis-url", server.url)
    assert done.returncode == 1 and "✗ memory: Redis is full" in done.stdout, done.stdout
    assert "it has refused 1 writes for memory since it started" in " ".join(done.stdout.split())


BAD_INPUT = [
    (["search", "--trace-id", "xyz"], "invalid trace id 'xyz'"),
    (["tail", "--since", "yesterday"], "bad time 'yesterday'"),
    (["export", "--regex", "(oops"], "invalid regex '(oops'"),
    (["search", "--severity", "LOUD"], "unknown severity 'LOUD'"),
    (["trace", "not-a-trace-id"], "invalid trace id 'not-a-trace-id'"),
    (["stats", "--since", "soon"], "bad time 'soon'"),
    (["search", "--since", "20261207"], "bad time '20261207': a duration ago needs its unit"),
    # an empty `--since "$SINCE"` was a query without that bound
    (["search", "--since", ""], "argument --since: bad time ''"),
    (["errors", "--since", " "], "argument --since: bad time ' '"),
    (["traces", "--since", ""], "argument --since: bad time ''"),
    (["stats", "--until", ""], "argument --until: bad time ''"),
    (["alerts", "test", "rules.yaml", "--until", ""], "argument --until: bad time ''"),
    (["search", "--since", "1h", "--until", "2h"], "reversed time range: since '1h' is after until '2h'"),
    (["stats", "--since", "2h", "--until", "3h"], "reversed time range: since '2h' is after until '3h'"),
    (["export", "--since", "10m", "--until", "20m"], "reversed time range"),
    (["tail", "--since", "10m", "--until", "20m"], "reversed time range"),
    (["search", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["search", "--redis-url", "http://localhost"], "scheme must be one of"),
    # a step of 0 never moved the replay on: it spun for ever
    (["alerts", "test", "rules.yaml", "--step", "0s"], "argument --step: '0s' is shorter than 1ms"),
    (["forward", "--timeout", "0s"], "argument --timeout: '0s' is shorter than 1ms"),
]


@pytest.mark.parametrize(
    "args", [["search"], ["trace", "ab" * 16], ["traces"], ["errors"], ["services"], ["stats"], ["export"]]
)
def test_a_stream_name_another_programs_key_holds_is_one_line_and_exit_2(
    stream: RedisHandle, here: Here, args: list[str]
) -> None:
    """Half the readers said "no matching records" (the scripted ones read such a key as
    empty), the others a bare WRONGTYPE naming no key."""
    with stream.client() as client:
        client.set(stream.stream, "another program's")
    done = here(*args)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"tracestream: {stream.stream!r} on {stream.url} holds a string, not a stream: "
        "name another stream (--stream, TRACESTREAM_STREAM)"
    )


def test_bad_input_is_one_line_and_exit_2(stream: RedisHandle, here: Here) -> None:
    as_process = run(stream, "search", "--trace-id", "xyz")  # the console script's own exit status
    assert as_process.returncode == 2 and as_process.stderr.strip() == (
        "tracestream: invalid trace id 'xyz': expected 32 hex digits, not all zero"
    )
    for args, message in BAD_INPUT:
        done = here(*args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == "", (args, done.stderr)


# A rule file of one rule, whose webhook is never reached.
ONE_RULE = """
notify:
  ops: {webhook: "http://127.0.0.1:9/hook"}
rules:
  - {name: checkout-errors, kind: rate, filter: {severity: ERROR}, window: 30s, above: 5, notify: [ops]}
"""


def test_redis_unreachable_or_refusing_credentials_is_one_line_and_exit_1(
    stream: RedisHandle, here: Here, tmp_path: Path
) -> None:
    unreachable = run(stream, "tail", "--redis-url", "redis://127.0.0.1:1/0")
    host_port = stream.url.split("//")[1].split("/")[0]
    refused = here("search", "--redis-url", f"redis://ghost:wrong@{host_port}/0")
    # the alert runner retried for ever, saying "cannot reach Redis"
    rules = tmp_path / "rules.yaml"
    rules.write_text(ONE_RULE)
    runner = run(
        stream, "alerts", "run", "--rules", str(rules), "--redis-url", f"redis://ghost:x@{host_port}/0"
    )
    for done, message in [
        (unreachable, "cannot reach Redis"),
        (refused, "Redis refused the credentials"),
        (runner, "Redis refused the credentials"),
    ]:
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize("output", [["--json"], []], ids=["json", "table"])
def test_a_closed_pipe_exits_quietly(stream: RedisHandle, writer: RecordWriter, output: list[str]) -> None:
    """As cli.md says, with status 0: `set -o pipefail` scripts end `| head` with rich's tables too."""
    writer.write(*(writer.row(f"record {i} " + "x" * 500) for i in range(400)))  # more than a pipe buffer
    process = subprocess.Popen(
        [TRACESTREAM, "search", *output, "-n", "400"],
        env=stream.env(COLUMNS="200"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert b"record 399" in process.stdout.readline()
    process.stdout.close()  # like `| head -1`
    assert process.wait(TIMEOUT) == 0
    assert process.stderr.read() == b""


def _lines(pipe: IO[str], into: queue.Queue[str]) -> None:
    for line in pipe:
        into.put(line)


def test_tail_filters_live_and_resumes_after_a_reconnect_without_gap_or_duplicate() -> None:
    with EmbeddedRedis() as server:
        handle = RedisHandle(server.url, "tail")
        writer = RecordWriter(handle)
        admin = server.client()
        writer.log("old info")
        writer.log("old error", severity="ERROR")
        process = subprocess.Popen(
            [TRACESTREAM, "tail", "--json", "-n", "5", "-l", "warn"],
            env=handle.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None and process.stderr is not None
        threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
        got: list[str] = []

        def received(count: int) -> bool:
            while not lines.empty():
                got.append(json.loads(lines.get())["body"])
            return len(got) >= count

        try:
            wait_for(lambda: received(1), timeout=30, what="the backlog")
            wait_for(lambda: blocked_reader(admin), what="tail to block in XREAD")
            writer.log("live warn", severity="WARN")
            writer.log("live info")
            wait_for(lambda: received(2), what="a live record")
            tail_id = wait_for(lambda: blocked_reader(admin), what="tail to block in XREAD again")
            assert admin.client_kill_filter(_id=tail_id) == 1
            retried = writer.row("while away", severity="ERROR")
            writer.write(retried)
            writer.write(retried)  # an exporter retry: the same record twice
            writer.log("after", severity="FATAL")
            wait_for(lambda: received(4), what="records written across the reconnect")
            wait_for(lambda: blocked_reader(admin), what="tail to block again")
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=TIMEOUT)
            writer.close()
            admin.close()
        received(4)
        assert got == ["old error", "live warn", "while away", "after"]
        assert "reconnecting" in stderr


def test_people_get_a_colour_per_severity(writer: RecordWriter) -> None:
    """What `tail` and `search` print on a terminal."""
    console = Console(force_terminal=True, color_system="standard", width=200)
    colours = {}
    for severity in ("DEBUG", "INFO", "WARN", "ERROR", "FATAL"):
        entry = LogEntry.from_fields(
            "1-0", dict(zip(LOG_FIELDS, writer.row("hi", severity=severity), strict=True))
        )
        with console.capture() as captured:
            console.print(record_line(entry))
        colours[severity] = captured.get().split(severity)[0].rsplit("\x1b[", 1)[-1]
    assert len(set(colours.values())) == 5, colours


def test_a_terminal_that_is_not_utf8_gets_escapes_not_an_error(
    stream: RedisHandle, writer: RecordWriter
) -> None:
    """A C locale or PYTHONIOENCODING=ascii: records in any language and doctor's marks still print.
    A C locale without UTF-8 mode opens stdout with `surrogateescape`, which refused them too."""
    writer.log("café fermé")
    c_locale = {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    for terminal in ({"PYTHONIOENCODING": "ascii"}, c_locale):
        env = stream.env(COLUMNS="200", **terminal)
        for args, shown in ((["search"], "caf\\xe9 ferm\\xe9"), (["doctor"], "ok configuration:")):
            done = subprocess.run(
                [TRACESTREAM, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT
            )
            assert "Error" not in done.stderr and shown in done.stdout, (
                terminal,
                args,
                done.stdout,
                done.stderr,
            )


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_closed_stream_is_said_where_it_can_be_and_never_mixed_into_stdout(
    stream: RedisHandle, closed: str
) -> None:
    """With stderr closed, print(file=sys.stderr) wrote our lines to stdout, among the records of
    `--json`; with stdout closed, the command ended with `unexpected AttributeError`."""
    command = [TRACESTREAM, "search", "--json", "--redis-url", f"redis://127.0.0.1:{free_port()}/0"]
    redirect = "1>&-" if closed == "stdout" else "2>&-"
    done = subprocess.run(
        ["sh", "-c", f'exec "$@" {redirect}', "sh", *command],
        env=stream.env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 1
    if closed == "stdout":
        assert done.stderr == "tracestream: stdout is closed: there is nowhere to print what was asked for\n"
    else:
        assert done.stdout == ""


def test_every_command_that_filters_by_service_takes_s_for_it(here: Here) -> None:
    """As tail and search do: `-s` is `--service` wherever a command has one."""
    for command, nothing in (("traces", "no matching traces"), ("errors", "no error issues")):
        done = here(command, "-s", "nobody")
        assert done.returncode == 0 and nothing in done.stdout + done.stderr, (command, done)


def test_python_dash_m_runs_the_command() -> None:
    """Where the venv's bin is not on PATH (`python -m pip` habits, a container's entry point)."""
    done = subprocess.run(
        [sys.executable, "-m", "tracestream", "tail", "--since", "5x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.startswith("tracestream: ") and "5x" in done.stderr and "Traceback" not in done.stderr
