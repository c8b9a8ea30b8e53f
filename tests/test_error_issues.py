"""Error issues (issue 17): kept by the append script as records are written, read by
`tracestream.error_issues` and `tracestream errors`. Real redis-server, real Celery worker
(prefork, under the launcher) and a real uvicorn serving a FastAPI app."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import redis

from tests.apps.servers import LAUNCHER_ENV, bin_path, http_ready, launched, printed, serve
from tests.seeded_records import RecordWriter
from tests.support import ROOT, RedisHandle, wait_for
from tests.test_cli import ndjson, run, run_all
from tests.test_console_acl import READER_ACL
from tests.test_tls_acl import PRODUCER_ACL
from tracestream.cli import main
from tracestream.connection import connect_cluster
from tracestream.embedded_redis import EmbeddedCluster, EmbeddedRedis, free_port
from tracestream.error_issues import (
    MAX_INSTANCES,
    ErrorIssue,
    fingerprint_of,
    get_issue,
    list_issues,
    newest_record,
    set_status,
)
from tracestream.exporters.encoding import exception_fields
from tracestream.query import Query, record_at, search
from tracestream.schema import innermost_app_frame, normalized_message
from tracestream.summary import summarize

# A route that enqueues a task which fails in the worker.
CHECKOUT_APP = """
from fastapi import FastAPI
app = FastAPI()
import tracestream
tracestream.configure()

@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}

@app.get("/explode/{n}")
def explode(n: int) -> None:
    raise RuntimeError(f"exploded {n} times")

@app.post("/checkout/{order_id}")
def checkout(order_id: int) -> dict[str, str]:
    from tests.apps.celery_app import fail
    return {"task_id": fail.delay(order_id).id}
"""
ROUTE = "/checkout/{order_id}"
Shop = tuple[RedisHandle, str, Path, dict[str, str]]  # stream, API URL, app folder, worker environment
# The worker's tasks: the test app's, and one that celery beat runs every second and that fails.
CHECKOUT_TASKS = """
from tests.apps.celery_app import app, fail

@app.task(name="checkout.nightly_report")
def nightly_report() -> None:
    raise KeyError("report missing")

app.conf.beat_schedule = {"nightly-report": {"task": "checkout.nightly_report", "schedule": 1.0}}
"""


@pytest.fixture(scope="module")
def shop(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """A Celery worker (prefork, launcher) and a FastAPI app enqueueing to it, on one stream."""
    stream = RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    broker = f"redis://127.0.0.1:{redis_server.port}/6"
    app_dir = tmp_path_factory.mktemp("checkout")
    (app_dir / "checkout_app.py").write_text(CHECKOUT_APP)
    (app_dir / "checkout_tasks.py").write_text(CHECKOUT_TASKS)
    worker = launched(bin_path("celery"), "-A", "checkout_tasks", "worker", "-c", "1", "-l", "INFO")
    path = f"{app_dir}:{ROOT}"
    worker_env = stream.env(
        OTEL_SERVICE_NAME="worker", CELERY_BROKER_URL=broker, PYTHONPATH=path, **LAUNCHER_ENV
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = [bin_path("uvicorn"), "checkout_app:app", "--app-dir", str(app_dir), "--port", str(port)]
    api_env = stream.env(OTEL_SERVICE_NAME="shop", CELERY_BROKER_URL=broker, PYTHONPATH=str(ROOT))
    with (
        serve(worker, worker_env, partial(printed, text="ready."), timeout=60),
        serve(api, api_env, http_ready(f"{url}/health"), timeout=60),
    ):
        yield stream, url, app_dir, worker_env


def _only_issue(stream: RedisHandle, count: int, type_: str = "ValueError") -> ErrorIssue | None:
    with stream.client() as client:
        issues = [issue for issue in list_issues(client, stream.stream) if issue.type == type_]
    assert len(issues) <= 1, issues
    return issues[0] if issues and issues[0].count >= count else None


def test_a_task_error_enqueued_from_a_route_is_one_issue_naming_that_route(shop: Shop) -> None:
    stream, url, _, _ = shop
    httpx.post(f"{url}/checkout/1", timeout=10).raise_for_status()
    issue = wait_for(lambda: _only_issue(stream, 1), timeout=60, what="the task's error issue")
    assert (issue.type, issue.message, issue.count) == ("ValueError", "order 1 is broken", 1)
    assert issue.chain == [{"route": ROUTE, "count": 1}]
    assert issue.services == ["worker"] and issue.status == "open" and not issue.regression
    assert issue.trace_id and issue.sample_trace_ids == [issue.trace_id]
    assert issue.hourly[-1] == 1 and sum(issue.hourly) == 1
    failed = [e for e in stream.logs() if e.severity == "ERROR" and e.exception_type == "ValueError"]
    assert [e.attributes["tracestream.enqueued_by"] for e in failed] == [ROUTE]
    assert issue.newest_record_id == failed[0].stream_id and issue.trace_id == failed[0].trace_id
    assert issue.fingerprint == fingerprint_of(
        failed[0].exception_type, failed[0].exception_stacktrace, failed[0].exception_message
    )
    run_span = wait_for(lambda: next((s for s in stream.spans() if s.name == "run/tests.fail"), None))
    assert run_span.attributes["tracestream.enqueued_by"] == ROUTE

    # resolved, then seen again: open, as a regression, one issue still
    resolved = run(stream, "errors", "resolve", issue.fingerprint)
    assert (resolved.returncode, resolved.stdout.strip()) == (0, f"{issue.fingerprint} resolved")
    resolved_now = ndjson(run(stream, "errors", "--json", "--status", "resolved").stdout)
    assert [(i["fingerprint"], i["status"]) for i in resolved_now] == [(issue.fingerprint, "resolved")]
    as_json = ndjson(run(stream, "errors", "resolve", issue.fingerprint, "--json").stdout)
    assert as_json == [{"fingerprint": issue.fingerprint, "status": "resolved"}]
    httpx.post(f"{url}/checkout/2", timeout=10).raise_for_status()
    again = wait_for(lambda: _only_issue(stream, 2), timeout=60, what="the recurrence")
    assert (again.status, again.regression, again.count) == ("open", True, 2)
    assert again.chain == [{"route": ROUTE, "count": 2}]
    assert again.first_seen_ms == issue.first_seen_ms and again.last_seen_ms >= issue.last_seen_ms
    listed = [i for i in ndjson(run(stream, "errors", "--json").stdout) if i["type"] == "ValueError"]
    assert [(i["fingerprint"], i["status"], i["regression"], i["count"]) for i in listed] == [
        (issue.fingerprint, "open", True, 2)
    ]
    assert {"first_seen", "last_seen", "trace_id", "service", "type", "message", "chain"} <= set(listed[0])


def test_a_task_enqueued_in_an_unsampled_trace_still_names_its_route(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Its request's span was left unsampled and records no attributes, `http.route` included:
    the task's message names the route all the same, so its errors' chain is not a sample."""
    stream = RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    (tmp_path / "checkout_app.py").write_text(CHECKOUT_APP)
    port = free_port()
    api = [bin_path("uvicorn"), "checkout_app:app", "--app-dir", str(tmp_path), "--port", str(port)]
    env = stream.env(
        OTEL_SERVICE_NAME="shop",
        OTEL_TRACES_SAMPLER="always_off",
        CELERY_BROKER_URL=f"redis://127.0.0.1:{redis_server.port}/7",
        PYTHONPATH=str(ROOT),
    )
    with serve(api, env, http_ready(f"http://127.0.0.1:{port}/health"), timeout=60):
        task_id = httpx.post(f"http://127.0.0.1:{port}/checkout/3", timeout=10).json()["task_id"]
    with redis.Redis(port=redis_server.port, db=7) as broker:
        messages = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
    [headers] = [m["headers"] for m in messages if m["headers"]["id"] == task_id]
    assert headers["tracestream_enqueued_by"] == ROUTE


def test_the_errors_table_keeps_fingerprint_status_and_count_whole_however_many_services_it_hit(
    stream: RedisHandle,
    writer: RecordWriter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One issue from 20 services: at 80 and 120 columns every line fits, the fingerprint (what
    `errors resolve` takes), status and count are whole, the services are the first two and how
    many more, and the error and its route are there to read."""
    failure, route = _error("k"), {"http.route": "/polls/{id}/boom"}
    services = [f"service-{i:02d}" for i in range(20)]
    writer.write(
        *(
            writer.row("boom", service=name, severity="ERROR", exception=failure, attributes=route)
            for name in services
        )
    )
    with stream.client() as client:
        (issue,) = list_issues(client, stream.stream)
    for width in (80, 120):
        monkeypatch.setenv("COLUMNS", str(width))
        assert main(["errors", "--redis-url", stream.url, "--stream", stream.stream]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert max(len(line) for line in lines) <= width, lines
        rows = [line for line in lines if issue.fingerprint in line]
        assert len(rows) == 1 and rows[0].split()[:3] == [issue.fingerprint, "open", "20"], lines
        words = " ".join(lines).split()
        assert "service-01" in words and "service-02" not in " ".join(lines) and "+18" in words, lines
        assert "KeyError:" in words and "'k'" in words and "/polls/{id}/boom" in words, lines
        header = next(line for line in lines if line.startswith("fingerprint"))
        assert ("24h" in header) == (width >= 120), lines  # the sparkline where it leaves the error room


def _error(message: str) -> tuple[str, str, str]:
    try:
        raise KeyError(message)
    except KeyError as error:
        return exception_fields(KeyError, error, error.__traceback__)


def test_a_retried_batch_counts_each_error_once(stream: RedisHandle, writer: RecordWriter) -> None:
    rows = [
        writer.row("one", severity="ERROR", exception=_error("a")),
        writer.row("info"),
        *(writer.row(f"many {i}", severity="ERROR", exception=_error("a")) for i in range(600)),
    ]  # more rows than one script call takes: the retry's first call finds them all stored
    writer.write(*rows[:300])  # Redis stored the first part, then the connection died
    writer.write(*rows)  # the whole batch again, from the spool
    writer.write(*rows)  # and once more
    with stream.client() as client:
        issues = list_issues(client, stream.stream)
        assert [(i.type, i.count) for i in issues] == [("KeyError", 601)]
        assert client.xlen(stream.keys.errors) == 601
        assert client.xlen(stream.keys.logs) == 602


def test_an_issue_names_fifty_instances_then_counts_its_records_together(
    stream: RedisHandle, writer: RecordWriter
) -> None:
    """Instances are named by process, a new one at each deploy and each recycled worker: an
    issue's hash grew by one field for each, for as long as the issue lived."""
    writer.write(
        *(writer.row("boom", severity="ERROR", exception=_error("a"), instance=f"pod-{n}") for n in range(55))
    )
    writer.log("boom", severity="ERROR", exception=_error("a"), instance="pod-0")
    with stream.client() as client:
        [issue] = list_issues(client, stream.stream)
        fields = client.hkeys(stream.keys.issue(issue.fingerprint))
    assert issue.count == 56
    assert len(issue.instances) == MAX_INSTANCES == 50 and issue.other_instances == 6
    assert len([name for name in fields if name.startswith("i:")]) == 50
    assert issue.to_json()["other_instances"] == 6


def test_fingerprints_group_by_type_and_the_apps_innermost_frame() -> None:
    stack = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/shop/views.py", line 10, in checkout\n    pay(order)\n'
        '  File "/srv/app/shop/payments.py", line 31, in pay\n    client.charge(order)\n'
        '  File "/venv/lib/python3.12/site-packages/stripe/api.py", line 7, in charge\n    raise\n'
        '  File "/usr/lib/python3.12/json/decoder.py", line 3, in decode\n    raise\n'
        '  File "/venv/lib/python3.12/site-packages/tracestream/x.py", line 3, in f\n    raise\n'
        "ValueError: order 41 failed\n"
    )
    assert innermost_app_frame(stack) == "shop/payments.py:pay"
    moved = stack.replace("line 31", "line 40").replace("/srv/app", "/opt/deploy")
    assert fingerprint_of("ValueError", moved, "other") == fingerprint_of(
        "ValueError", stack, "order 41 failed"
    )
    assert fingerprint_of("KeyError", stack, "x") != fingerprint_of("ValueError", stack, "x")
    chained = (
        f"{stack}\nDuring handling of the above exception, another exception occurred:\n\n"
        + stack.replace("payments.py", "refunds.py").replace("in pay", "in refund")
    )
    assert innermost_app_frame(chained) == "shop/refunds.py:refund"
    # no frame of the app's: the message decides, with what varies masked
    assert normalized_message(
        "user 42 'bob' 550e8400-e29b-41d4-a716-446655440000 at 0x7f3a9c id deadbeef01"
    ) == ("user <n> <str> <uuid> at <hex> id <hex>")
    assert fingerprint_of("", "", "timeout after 30s for user 7") == fingerprint_of(
        "", "", "timeout after 5s for user 12"
    )
    assert fingerprint_of("", "", "timeout for 'a'") != fingerprint_of("", "", "refused for 'a'")


# Python 3.11's print of a TaskGroup whose tasks failed, and of a group the app raised itself.
TASK_GROUP = """\
  + Exception Group Traceback (most recent call last):
  |   File "/srv/app/shop/views.py", line 20, in checkout
  |     await gather_order(order_id)
  |   File "/srv/app/shop/orders.py", line 9, in gather_order
  |     async with asyncio.TaskGroup() as group:
  |   File "/usr/lib/python3.11/asyncio/taskgroups.py", line 145, in __aexit__
  |     raise me from None
  | ExceptionGroup: unhandled errors in a TaskGroup ({n} sub-exceptions)
{members}"""
MEMBER = """\
    | Traceback (most recent call last):
    |   File "/srv/app/shop/{file}.py", line {line}, in {function}
    |     raise {type}("{message}")
    | {type}: {message}
"""
RAISED_GROUP = """\
Traceback (most recent call last):
  File "/srv/app/shop/forms.py", line 3, in parse
    int(value)
ValueError: invalid literal for int() with base 10: 'x'

The above exception was the direct cause of the following exception:

  + Exception Group Traceback (most recent call last):
  |   File "/srv/app/shop/forms.py", line {line}, in {function}
  |     raise ExceptionGroup("validation", errors)
  | ExceptionGroup: validation (2 sub-exceptions)
  +-+---------------- 1 ----------------
    | ValueError: 1
    +---------------- 2 ----------------
    | ExceptionGroup: inner (1 sub-exception)
    +-+---------------- 1 ----------------
      | TypeError: 2
      +------------------------------------
"""


def _task_group(*failures: tuple[str, str, str, int]) -> str:
    """The print of a TaskGroup whose tasks failed with (type, file, function, line) each."""
    rules = [
        "  +-+---------------- 1 ----------------",
        *(f"    +---------------- {n} ----------------" for n in range(2, len(failures) + 1)),
    ]
    members = "".join(
        f"{rule}\n" + MEMBER.format(type=kind, file=file, function=function, line=line, message=f"#{line}")
        for rule, (kind, file, function, line) in zip(rules, failures, strict=True)
    )
    return TASK_GROUP.format(n=len(failures), members=members + "    +------------------------------------\n")


def test_an_exception_group_is_told_by_its_members_not_its_message() -> None:
    """Every TaskGroup failure says "unhandled errors in a TaskGroup", and the group's frames sit
    behind `|` margins, which no frame pattern read: every group in every service was one issue.
    A group's issue is its own frame and its members' types and frames, in no order, each once."""
    user = ("ValueError", "users", "fetch_user", 4)
    order = ("KeyError", "orders", "fetch_order", 12)
    fingerprint = partial(fingerprint_of, "ExceptionGroup", message="unhandled errors in a TaskGroup")
    assert fingerprint(_task_group(user)) != fingerprint(_task_group(order))
    assert fingerprint(_task_group(user, order)) not in {
        fingerprint(_task_group(user)),
        fingerprint(_task_group(order)),
    }
    assert fingerprint(_task_group(user, order)) == fingerprint(_task_group(order, user, user))
    moved = ("ValueError", "users", "fetch_user", 40)
    assert fingerprint(_task_group(moved)) == fingerprint(_task_group(user))
    # a group the app raises: the function raising it tells two apart, whatever the message says
    assert fingerprint(RAISED_GROUP.format(line=9, function="parse_order")) == fingerprint(
        RAISED_GROUP.format(line=30, function="parse_order")
    )
    assert fingerprint(RAISED_GROUP.format(line=9, function="parse_order")) != fingerprint(
        RAISED_GROUP.format(line=9, function="parse_address")
    )
    # a group with no frame of the app's anywhere falls back on its message, as any exception does
    library = RAISED_GROUP.replace("/srv/app/shop", "/venv/lib/python3.11/site-packages/forms")
    assert fingerprint_of("ExceptionGroup", library, "validation") != fingerprint_of(
        "ExceptionGroup", library, "other"
    )
    # an exception chained from a group is told by its own frame, as before
    wrapped = (
        f"{_task_group(user)}\nThe above exception was the direct cause of the following exception:\n\n"
        'Traceback (most recent call last):\n  File "/srv/app/shop/views.py", line 22, in checkout\n'
        "    raise RuntimeError()\nRuntimeError\n"
    )
    assert innermost_app_frame(wrapped) == "shop/views.py:checkout"
    assert fingerprint_of("RuntimeError", wrapped, "") == fingerprint_of(
        "RuntimeError", wrapped.replace("users", "x"), ""
    )


def test_status_changes(stream: RedisHandle, writer: RecordWriter, redis_client: redis.Redis) -> None:
    writer.log("failed", severity="ERROR", exception=_error("b"))
    (issue,) = list_issues(redis_client, stream.stream)
    assert set_status(redis_client, stream.stream, issue.fingerprint, "ignored")
    writer.log("failed", severity="ERROR", exception=_error("b"))
    ignored = get_issue(redis_client, stream.stream, issue.fingerprint)
    assert ignored is not None and (ignored.status, ignored.count, ignored.regression) == (
        "ignored",
        2,
        False,
    )
    assert list_issues(redis_client, stream.stream, status="open") == []
    assert not set_status(redis_client, stream.stream, "0" * 16, "resolved")
    with pytest.raises(ValueError, match="unknown status 'closed'"):
        set_status(redis_client, stream.stream, issue.fingerprint, "closed")
    assert get_issue(redis_client, stream.stream, "0" * 16) is None
    assert list_issues(redis_client, stream.stream, service="api") != []
    assert list_issues(redis_client, stream.stream, service="billing") == []
    assert list_issues(redis_client, stream.stream, since_ms=ignored.last_seen_ms + 1) == []


def test_cli_bad_input_exits_2_and_redis_trouble_exits_1(stream: RedisHandle) -> None:
    bad = [
        ["errors", "resolve", "not-a-fingerprint"],
        ["errors", "resolve"],
        ["errors", "resolve", "0123456789abcdef"],  # no such issue
        ["errors", "close", "0123456789abcdef"],
        ["errors", "--status", "closed"],
        ["errors", "--since", "last tuesday"],
        ["errors", "0123456789abcdef"],
    ]
    down = RedisHandle(url=f"redis://127.0.0.1:{free_port()}/0", stream=stream.stream)
    done = run_all(stream, *bad)
    for process in done:
        assert process.returncode == 2, process
        assert process.stderr.count("\n") == 1 and "Traceback" not in process.stderr, process
    unreachable = [run(down, "errors"), run(down, "errors", "ignore", "0123456789abcdef")]
    for process in unreachable:
        assert process.returncode == 1 and process.stderr.startswith("tracestream: cannot reach Redis"), (
            process
        )
        assert process.stderr.count("\n") == 1
    assert "no error issues" in run(stream, "errors").stderr


def test_write_only_producer_keeps_issues_and_a_reader_reads_them(
    redis_server: EmbeddedRedis, stream: RedisHandle
) -> None:
    admin = redis_server.client()
    user = uuid.uuid4().hex[:8]
    producer = PRODUCER_ACL.replace("producer", f"producer-{user}")  # the documented users
    reader = READER_ACL.replace("reader", f"reader-{user}")
    admin.execute_command(*producer.format(password="pw", stream=stream.stream).split())
    admin.execute_command(*reader.format(password="pw", stream=stream.stream).split())
    url = f"redis://{{}}-{user}:pw@127.0.0.1:{redis_server.port}/0"
    writer = RecordWriter(RedisHandle(url.format("producer"), stream.stream))
    writer.log("failed", severity="ERROR", exception=_error("c"))
    with redis.Redis.from_url(url.format("reader"), decode_responses=True) as client:
        assert [(i.type, i.count) for i in list_issues(client, stream.stream)] == [("KeyError", 1)]
        for right in ("hmget", "hgetall"):  # each is needed
            admin.execute_command("ACL", "SETUSER", f"reader-{user}", f"-{right}")
            with pytest.raises(redis.ResponseError, match=r"permission|can.t run"):
                list_issues(client, stream.stream)
            admin.execute_command("ACL", "SETUSER", f"reader-{user}", f"+{right}")
    # A producer whose rights predate issues still stores every record, and its error copies.
    admin.execute_command("ACL", "SETUSER", f"producer-{user}", "-hincrby")
    writer.log("failed", severity="ERROR", exception=_error("c"))
    writer.close()
    assert [e.body for e in stream.logs()] == ["failed", "failed"]
    assert admin.xlen(stream.keys.errors) == 2
    assert [i.count for i in list_issues(admin, stream.stream)] == [1]
    admin.close()


def test_a_reader_the_acl_refuses_hears_which_command_not_that_there_are_no_issues(
    redis_server: EmbeddedRedis, stream: RedisHandle, writer: RecordWriter
) -> None:
    """Listing issues takes ZRANGE, HMGET and HGETALL: without one, the error names it and its key
    (Redis itself names only a line of the script), never an empty list."""
    writer.log("failed", severity="ERROR", exception=_error("g"))
    user = f"reader-{uuid.uuid4().hex[:8]}"
    admin = redis_server.client()
    admin.execute_command(
        *READER_ACL.replace("reader", user, 1).format(password="pw", stream=stream.stream).split()
    )
    with redis.Redis.from_url(
        f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0", decode_responses=True
    ) as client:
        (issue,) = list_issues(client, stream.stream)
        issue_key = stream.keys.issue(issue.fingerprint)
        for right, key in (("zrange", stream.keys.issues), ("hmget", issue_key), ("hgetall", issue_key)):
            admin.execute_command("ACL", "SETUSER", user, f"-{right}")
            with pytest.raises(
                redis.ResponseError, match=rf"{right.upper()} on {re.escape(key)}: .*can't run"
            ):
                list_issues(client, stream.stream)
            admin.execute_command("ACL", "SETUSER", user, f"+{right}")
    admin.execute_command("ACL", "DELUSER", user)
    admin.close()


def test_a_reader_refused_the_errors_copies_hears_it_not_that_records_are_gone(
    redis_server: EmbeddedRedis, stream: RedisHandle, writer: RecordWriter
) -> None:
    """An issue's newest record and the summaries' error counts read `<stream>:errors`: a user
    whose key patterns leave it out gets Redis's refusal, not 'trimmed' or 'no errors'."""
    writer.log("failed", severity="ERROR", exception=_error("h"))
    user = f"reader-{uuid.uuid4().hex[:8]}"
    admin = redis_server.client()
    admin.execute_command(
        *READER_ACL.replace("reader", user, 1).format(password="pw", stream=stream.stream).split()
    )
    (entry,) = stream.logs()
    with redis.Redis.from_url(
        f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0", decode_responses=True
    ) as client:
        assert record_at(client, stream.stream, entry.stream_id) is not None
        admin.execute_command("ACL", "SETUSER", user, "-xrange")
        with pytest.raises(redis.ResponseError, match="no permissions to run the 'xrange' command"):
            record_at(client, stream.stream, "1-0")  # in neither key: both are read
        admin.execute_command("ACL", "SETUSER", user, "+xrange", "resetkeys", f"~{stream.stream}")
        with pytest.raises(redis.ResponseError, match="no permissions to access one of the keys"):
            summarize(client, stream.stream, 0)  # the log stream may be read, its error copies not
    admin.execute_command("ACL", "DELUSER", user)
    admin.close()


def test_another_writers_keys_cost_only_the_issues(
    stream: RedisHandle, writer: RecordWriter, redis_client: redis.Redis
) -> None:
    redis_client.set(stream.keys.errors, "not a stream")
    redis_client.set(stream.keys.issues, "not a sorted set")
    writer.log("failed", severity="ERROR", exception=_error("d"))
    assert [e.body for e in stream.logs()] == ["failed"]
    (entry,) = stream.logs()
    fingerprint = fingerprint_of(entry.exception_type, entry.exception_stacktrace, entry.exception_message)
    issue = get_issue(redis_client, stream.stream, fingerprint)  # its hash was written before the ZADD
    assert issue is not None and issue.count == 1
    assert list_issues(redis_client, stream.stream) == []  # listing needs the sorted set
    newest = newest_record(redis_client, stream.stream, issue)
    assert newest is not None and newest.stream_id == entry.stream_id
    assert record_at(redis_client, stream.stream, "1-1") is None  # not in the stream, nor in a non-stream
    # readers that look for copies below what the stream holds find a key that is not a stream
    assert [e.body for e in search(redis_client, stream.stream, Query.parse(severity="ERROR")).records] == [
        "failed"
    ]
    assert summarize(redis_client, stream.stream, 0).services["api"].errors == 1


def test_a_cluster_sharded_by_service_merges_an_issue_over_its_shards(stream: RedisHandle) -> None:
    with EmbeddedCluster(3) as cluster:
        handle = RedisHandle(cluster.url, stream.stream)
        writer = RecordWriter(handle, redis_cluster=True, shard_by="service")
        for service, count in (("orders", 2), ("billing", 1)):
            for _ in range(count):
                writer.log("failed", service=service, severity="ERROR", trace_id=7, exception=_error("e"))
        writer.close()
        client = connect_cluster(cluster.url, 5, decode=True)
        (issue,) = list_issues(client, handle.stream)
        assert (issue.count, issue.services, issue.hourly[-1]) == (3, ["orders", "billing"], 3)
        assert set_status(client, handle.stream, issue.fingerprint, "resolved")
        assert [i.status for i in list_issues(client, handle.stream, status="resolved")] == ["resolved"]
        assert [i.count for i in list_issues(client, handle.stream, service="billing")] == [3]
        client.close()


def test_a_task_error_from_celery_beat_names_its_schedule_entry(shop: Shop) -> None:
    stream, _, app_dir, worker_env = shop
    beat = launched(
        bin_path("celery"), "-A", "checkout_tasks", "beat", "-s", str(app_dir / "schedule"), "-l", "INFO"
    )
    with serve(beat, worker_env | {"OTEL_SERVICE_NAME": "beat"}, partial(printed, text="beat: Starting")):
        issue = wait_for(lambda: _only_issue(stream, 2, "KeyError"), timeout=60, what="beat's task failing")
    assert [link["route"] for link in issue.chain] == ["beat:nightly-report"]
    assert issue.chain[0]["count"] >= 2 and issue.services == ["worker"]


def test_a_request_error_names_its_route(shop: Shop) -> None:
    stream, url, _, _ = shop
    for n in (1, 2):
        assert httpx.get(f"{url}/explode/{n}", timeout=10).status_code == 500
    issue = wait_for(
        lambda: (found := _only_issue(stream, 2, "RuntimeError")) and found.chain and found,
        what="the 500s' issue",
    )
    assert [link["route"] for link in issue.chain] == ["/explode/{n}"]
    assert issue.services == ["shop"] and issue.message.startswith("exploded")
