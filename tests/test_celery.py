"""Celery end to end: a real prefork worker (one task per child) on the private Redis."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.apps.servers import LAUNCHER_ENV, bin_path, launched, printed, run_json, serve
from tests.faults import FaultyProxy
from tests.support import RedisHandle, run_python, wait_for
from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.integrations.celery import queue_name
from tracestream.schema import ERROR_SEVERITY, LogEntry, SpanEntry

TASKS = 100
CELERY_SCOPE = "tracestream.celery"
RUN_SPAN = "run/tests.process_order"
PUBLISH = """
import json, tracestream
from opentelemetry import trace
from tests.apps.celery_app import fail, flaky, process_order
telemetry = tracestream.configure()
with trace.get_tracer("publisher").start_as_current_span("enqueue") as span:
    traced = process_order.delay(-1)
plain = [process_order.delay(i).id for i in range(COUNT)]
failed, retried = fail.delay(1).id, flaky.delay(2).id
telemetry.force_flush()
print(json.dumps({"trace_id": format(span.get_span_context().trace_id, "032x"), "traced": traced.id,
                  "failed": failed, "retried": retried}))
"""

# One task enqueued inside a span, after `setup` (Python lines) and with the span's `attributes`.
PUBLISH_ONE = """
import json, tracestream
from opentelemetry import trace
from tests.apps.celery_app import app, {task}
{setup}
telemetry = tracestream.configure()
with trace.get_tracer("publisher").start_as_current_span("enqueue", attributes={attributes}):
    task_id = {task}.delay(4).id
telemetry.force_flush()
print(json.dumps(task_id))
"""


def _worker(redis_server: EmbeddedRedis, stream: RedisHandle, db: int, *pool: str, **env: str) -> Any:
    broker = f"redis://127.0.0.1:{redis_server.port}/{db}"
    # With one task per child, Celery replaces children slowly (seconds each): ten share the wait.
    command = [
        bin_path("celery"),
        "-A",
        "tests.apps.celery_app",
        "worker",
        "-c",
        "10",
        "-n",
        "w1@e2e",
        "-l",
        "INFO",
        *pool,
    ]
    worker_env = stream.env(OTEL_SERVICE_NAME="worker", CELERY_BROKER_URL=broker, **LAUNCHER_ENV, **env)
    launcher = env.pop("CONFIGURE_IN_CHILD", None) is None
    ready = partial(printed, text="ready.")
    return broker, serve(launched(*command) if launcher else command, worker_env, ready, timeout=60)


@pytest.fixture(scope="module")
def celery_stream(redis_server: EmbeddedRedis) -> RedisHandle:
    return RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def published(redis_server: EmbeddedRedis, celery_stream: RedisHandle) -> Iterator[dict[str, str]]:
    """`opentelemetry-instrument celery worker`; a configured publisher enqueues 103 tasks."""
    broker, worker = _worker(redis_server, celery_stream, 1)
    with worker:
        env = celery_stream.env(OTEL_SERVICE_NAME="publisher", CELERY_BROKER_URL=broker)
        ids: dict[str, str] = run_json(PUBLISH.replace("COUNT", str(TASKS)), env)
        wait_for(
            lambda: len(_spans(celery_stream, RUN_SPAN)) >= TASKS + 1, timeout=240, what="every task-run span"
        )
        yield ids


def _spans(stream: RedisHandle, name: str) -> list[SpanEntry]:
    return [s for s in stream.spans() if s.name == name]


def _lifecycle(stream: RedisHandle, task_id: str) -> list[LogEntry]:
    return [e for e in stream.logs() if e.scope == CELERY_SCOPE and e.attributes["celery.task.id"] == task_id]


def test_prefork_children_lose_nothing(published: dict[str, str], celery_stream: RedisHandle) -> None:
    """worker_max_tasks_per_child=1: every child exits through os._exit after one task."""
    wait_for(lambda: len(_spans(celery_stream, RUN_SPAN)) == TASKS + 1, what="no duplicate spans")
    # spans and records travel in queues of their own: the last child's records may land just after
    wait_for(
        lambda: len([e for e in celery_stream.logs() if e.scope == "shop.worker"]) >= TASKS + 1,
        what="every task's line",
    )
    logs = celery_stream.logs()
    task_lines = [e for e in logs if e.scope == "shop.worker"]
    assert len(task_lines) == TASKS + 1
    succeeded = [
        e
        for e in logs
        if e.attributes.get("celery.task.state") == "succeeded"
        and e.attributes["celery.task.name"] == "tests.process_order"
    ]
    assert len(succeeded) == TASKS + 1
    assert len({e.resource["process.pid"] for e in task_lines}) == TASKS + 1  # one child per task


def test_the_brokers_own_traffic_starts_no_trace_in_the_worker(
    published: dict[str, str], celery_stream: RedisHandle
) -> None:
    """Under the launcher redis-py is instrumented: the worker's heartbeat (every 2 s) and its
    bookkeeping around each task (two commands) each made a trace of one span, crowding the task
    spans out of the stream. A task's own Redis calls are in its trace."""
    spans = celery_stream.spans()
    worker = [s for s in spans if s.service == "worker"]
    assert len(worker) >= TASKS + 1
    assert [s for s in worker if not s.parent_span_id] == []
    assert {s.scope for s in worker} >= {"opentelemetry.instrumentation.celery"}

    def orphans() -> list[tuple[str, str]]:
        """Nor do the commands kombu's pipelines send (its Lua script's SCRIPT EXISTS at start)."""
        spans = celery_stream.spans()
        stored = {s.span_id for s in spans}
        return [(s.name, s.scope) for s in spans if s.service == "worker" and s.parent_span_id not in stored]

    # a run's parent is another process's span (the publisher's, or for a retry the child that
    # ran it first, at its exit), which on a busy machine may reach the stream after it
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not orphans(), what="every worker span's parent")
    assert orphans() == []


REDIS_SCOPE = "opentelemetry.instrumentation.redis"
PRODUCER = ("apply_async/tests.process_order", "opentelemetry.instrumentation.celery")

# Celery's "First Steps" (waiting on a result) and "Canvas" (a group), with a Redis result
# backend; then redis-py's own example, a command of the app's outside any trace.
WAITING_PUBLISHER = """
import os, redis
from celery import group
from tests.apps.celery_app import process_order
assert process_order.delay(4).get(timeout=30) == 8
assert group(process_order.s(i) for i in range(3))().get(timeout=30) == [0, 2, 4]
r = redis.Redis.from_url(os.environ["CELERY_RESULT_BACKEND"])
r.set("foo", "bar")
"""


def _roots(stream: RedisHandle, service: str) -> list[tuple[str, str]]:
    """The spans of `service` that start a trace in the stream, or whose parent is not there."""
    spans = [s for s in stream.spans() if s.service == service]
    stored = {s.span_id for s in spans}
    return sorted((s.name, s.scope) for s in spans if s.parent_span_id not in stored)


def test_a_publisher_waiting_on_results_starts_no_trace_for_celerys_redis_commands(
    redis_server: EmbeddedRedis, stream: RedisHandle
) -> None:
    """Under the launcher: the result backend's commands while the publisher waits (a GET each
    poll, an MGET) made a trace of one span each. The app's own command outside a trace, to the
    same Redis, still starts one."""
    backend = f"redis://127.0.0.1:{redis_server.port}/13"
    broker, worker = _worker(
        redis_server, stream, 12, "-c", "2", CELERY_MAX_TASKS_PER_CHILD="0", CELERY_RESULT_BACKEND=backend
    )
    with worker:
        env = stream.env(
            OTEL_SERVICE_NAME="publisher",
            CELERY_BROKER_URL=broker,
            CELERY_RESULT_BACKEND=backend,
            **LAUNCHER_ENV,
        )
        run_python(WAITING_PUBLISHER, env, launcher=True)
    assert _roots(stream, "publisher") == [("SET", REDIS_SCOPE)] + [PRODUCER] * 4


def test_celery_beat_starts_no_trace_for_its_redis_commands(
    redis_server: EmbeddedRedis, stream: RedisHandle, tmp_path: Path
) -> None:
    """Under the launcher: beat's connection to the broker (a PING) made a trace of one span."""
    command = [bin_path("celery"), "-A", "tests.apps.celery_app", "beat", "-s", str(tmp_path / "schedule")]
    env = stream.env(
        OTEL_SERVICE_NAME="beat",
        CELERY_BROKER_URL=f"redis://127.0.0.1:{redis_server.port}/15",
        CELERY_BEAT_EVERY="0.5",
        **LAUNCHER_ENV,
    )
    with serve(launched(*command, "-l", "INFO"), env, partial(printed, text="beat: Starting")):
        wait_for(lambda: len(_roots(stream, "beat")) >= 2, timeout=30, what="two tasks sent by beat")
    roots = _roots(stream, "beat")
    assert len(roots) >= 2
    assert set(roots) == {PRODUCER}


# A task the worker does not know: a publisher deployed before the worker that runs it.
UNREGISTERED = """
import json, tracestream
from opentelemetry import trace
from tests.apps.celery_app import app
telemetry = tracestream.configure()
with trace.get_tracer("publisher").start_as_current_span("enqueue") as span:
    app.send_task("tests.added_in_the_next_release", args=(4,))
telemetry.force_flush()
print(json.dumps(format(span.get_span_context().trace_id, "032x")))
"""


def test_a_task_the_worker_does_not_know_is_said_in_its_trace(
    redis_server: EmbeddedRedis, stream: RedisHandle
) -> None:
    """The worker's main process logs that it discarded the message outside any span (and only
    then sends `task_unknown`): the line is in the trace the message carries."""
    broker, worker = _worker(redis_server, stream, 2, "-c", "2", CELERY_MAX_TASKS_PER_CHILD="0")
    with worker:
        trace_id = run_json(UNREGISTERED, stream.env(OTEL_SERVICE_NAME="publisher", CELERY_BROKER_URL=broker))
        said = wait_for(
            lambda: [e for e in stream.logs() if e.body.startswith("Received unregistered task")],
            what="the worker's line",
        )
    [producer] = _spans(stream, "apply_async/tests.added_in_the_next_release")
    assert [(e.service, e.severity, e.trace_id, e.span_id) for e in said] == [
        ("worker", "ERROR", trace_id, producer.span_id)
    ]


def test_task_continues_the_enqueuing_trace(published: dict[str, str], celery_stream: RedisHandle) -> None:
    trace_id = published["trace_id"]
    spans = {s.name: s for s in celery_stream.spans() if s.trace_id == trace_id}
    assert {"enqueue", "apply_async/tests.process_order", RUN_SPAN} <= set(spans)
    assert spans[RUN_SPAN].service == "worker" and spans["enqueue"].service == "publisher"
    assert spans[RUN_SPAN].parent_span_id == spans["apply_async/tests.process_order"].span_id
    lines = [e for e in celery_stream.logs() if e.trace_id == trace_id and e.scope == "shop.worker"]
    assert [(e.body, e.span_id) for e in lines] == [("processing order -1", spans[RUN_SPAN].span_id)]
    assert lines[0].attributes["order.id"] == -1


def test_lifecycle_records_carry_task_fields(published: dict[str, str], celery_stream: RedisHandle) -> None:
    task_id = published["traced"]
    records = {e.attributes["celery.task.state"]: e for e in _lifecycle(celery_stream, task_id)}
    assert set(records) == {"received", "started", "succeeded"}
    assert {e.trace_id for e in records.values()} == {published["trace_id"]}
    for record in records.values():
        attributes = record.attributes
        assert attributes["celery.task.name"] == "tests.process_order"
        assert attributes["celery.task.retries"] == 0
        assert attributes["messaging.destination.name"] == "celery"
        assert attributes["celery.worker.hostname"] == "w1@e2e"
        assert record.severity == "INFO"
    assert records["received"].resource["process.pid"] != records["started"].resource["process.pid"]
    assert 0 < records["succeeded"].attributes["celery.task.runtime_ms"] < 10_000


def test_failed_and_retried_tasks(published: dict[str, str], celery_stream: RedisHandle) -> None:
    failed = wait_for(
        lambda: [e for e in _lifecycle(celery_stream, published["failed"]) if e.severity == "ERROR"]
    )
    assert len(failed) == 1
    assert failed[0].attributes["celery.task.state"] == "failed"
    assert (failed[0].exception_type, failed[0].exception_message) == ("ValueError", "order 1 is broken")
    assert "in fail" in failed[0].exception_stacktrace

    retried = wait_for(
        lambda: (
            [
                e
                for e in _lifecycle(celery_stream, published["retried"])
                if e.attributes["celery.task.state"] in ("retried", "succeeded")
            ]
            if len(_lifecycle(celery_stream, published["retried"])) >= 6
            else []
        ),
        what="the retried task's two runs",
    )
    states = [(e.attributes["celery.task.state"], e.attributes["celery.task.retries"]) for e in retried]
    assert ("retried", 0) in states and ("succeeded", 1) in states
    retry = next(e for e in retried if e.attributes["celery.task.state"] == "retried")
    assert retry.severity == "WARN" and retry.exception_type == "TimeoutError"


def test_a_retry_beside_the_attempt_that_enqueued_it_keeps_both_timings(
    redis_server: EmbeddedRedis, stream: RedisHandle
) -> None:
    """On a threads pool a retry can start and end before the attempt that enqueued it ends:
    each attempt's record times its own run."""
    broker, worker = _worker(redis_server, stream, 5, "--pool", "threads")
    with worker:
        task_id = run_json(
            "import json\nfrom tests.apps.celery_app import slow_to_let_go\n"
            "print(json.dumps(slow_to_let_go.delay(3).id))",
            stream.env(CELERY_BROKER_URL=broker),
        )
        ended = wait_for(
            lambda: (
                [
                    e
                    for e in _lifecycle(stream, task_id)
                    if e.attributes["celery.task.state"] in ("retried", "succeeded")
                ]
                if len(_lifecycle(stream, task_id)) >= 6  # received, started and an end, twice
                else []
            ),
            what="both attempts' records",
        )
    runtimes = {e.attributes["celery.task.state"]: e.attributes.get("celery.task.runtime_ms") for e in ended}
    assert runtimes.keys() == {"retried", "succeeded"}, runtimes
    assert runtimes["retried"] >= 1000 > runtimes["succeeded"], runtimes


def test_an_ignored_task_ends_in_one_record_in_its_span(
    redis_server: EmbeddedRedis, stream: RedisHandle
) -> None:
    """`Ignore` sends none of Celery's success, failure or retry signals."""
    broker, worker = _worker(redis_server, stream, 11)
    with worker:
        task_id = run_json(
            PUBLISH_ONE.format(task="skipped", setup="", attributes={}),
            stream.env(OTEL_SERVICE_NAME="publisher", CELERY_BROKER_URL=broker),
        )
        [ignored] = wait_for(
            lambda: [e for e in _lifecycle(stream, task_id) if _state(e) == "ignored"],
            what="the ignored record",
        )
    assert ignored.severity == "INFO" and ignored.body.startswith(
        f"task tests.skipped[{task_id}] ignored in "
    )
    [line] = [e for e in stream.logs() if e.body == "order 4: handled elsewhere"]
    assert (ignored.trace_id, ignored.span_id) == (line.trace_id, line.span_id) != ("", "")
    # the main process's `received` and the child's records travel apart
    wait_for(
        lambda: sorted(_state(e) for e in _lifecycle(stream, task_id)) == ["ignored", "received", "started"],
        what="one record each: received, started, ignored",
    )
    assert not [e.body for e in stream.logs() if e.scope == "celery.app.trace"]  # Celery's "ignored" line


@pytest.mark.parametrize("task", ["overrun", "lost"])
def test_a_task_ended_by_the_main_process_fails_once_in_its_trace(
    redis_server: EmbeddedRedis, stream: RedisHandle, task: str
) -> None:
    """A hard time limit or a lost child ends a task outside its span, in the worker's main
    process, which Celery 5.7 tells of twice for a time limit: one failed record, in the trace
    the task arrived with, with its queue and worker."""
    broker, worker = _worker(redis_server, stream, 6, CELERY_MAX_TASKS_PER_CHILD="0")
    with worker as server:
        task_id = run_json(
            PUBLISH_ONE.format(task=task, setup="", attributes={}),
            stream.env(OTEL_SERVICE_NAME="publisher", CELERY_BROKER_URL=broker),
        )
        wait_for(
            lambda: [e for e in _lifecycle(stream, task_id) if e.attributes["celery.task.state"] == "failed"],
            what="the failed record",
        )
        server.stop()
        output = server.output()
    lifecycle = _lifecycle(stream, task_id)  # the worker has stopped: whatever it wrote is in
    (received,) = [e for e in lifecycle if e.attributes["celery.task.state"] == "received"]
    (failed_record,) = [e for e in lifecycle if e.attributes["celery.task.state"] == "failed"]
    assert failed_record.trace_id == received.trace_id != ""
    assert failed_record.attributes["messaging.destination.name"] == "celery"
    assert failed_record.attributes["celery.worker.hostname"] == "w1@e2e"
    # Celery's own line for a time limit is still printed; the failed record stands for it
    time_limit_lines = [e for e in stream.logs() if e.body.startswith("Hard time limit (1s) exceeded")]
    assert (time_limit_lines, "Hard time limit (1s) exceeded" in output) == ([], task == "overrun")
    # and its "Task handler raised error" line, which Celery logs with the same exception
    handler_lines = [e for e in stream.logs() if e.body.startswith("Task handler raised error")]
    assert (handler_lines, "Task handler raised error" in output) == ([], True)


def test_a_soft_time_limit_is_said_in_the_tasks_trace(
    redis_server: EmbeddedRedis, stream: RedisHandle
) -> None:
    """The worker's main process says it outside any span: the line joins the task's trace."""
    broker, worker = _worker(redis_server, stream, 8, CELERY_MAX_TASKS_PER_CHILD="0")
    with worker:
        task_id = run_json(
            PUBLISH_ONE.format(task="hurried", setup="", attributes={}),
            stream.env(OTEL_SERVICE_NAME="publisher", CELERY_BROKER_URL=broker),
        )
        wait_for(
            lambda: [
                e for e in _lifecycle(stream, task_id) if e.attributes["celery.task.state"] == "succeeded"
            ],
            what="the succeeded record",
        )
    (received,) = [e for e in _lifecycle(stream, task_id) if e.attributes["celery.task.state"] == "received"]
    (said,) = [
        e for e in stream.logs() if e.body.startswith("Soft time limit (1s) exceeded for tests.hurried")
    ]
    (hurry,) = [e for e in stream.logs() if e.body == "order 4: cleaning up in a hurry"]
    assert said.trace_id == hurry.trace_id == received.trace_id != ""


def test_a_cold_shutdown_ends_the_running_task_in_one_record(
    redis_server: EmbeddedRedis, stream: RedisHandle
) -> None:
    """SIGQUIT (Celery's docs: a cold shutdown) stops a running task. Celery 5.7 cancels it and
    tells it as a retry without a reason (our receiver raised on that, printed as "Signal
    handler … raised"), though its message was acknowledged and no broker delivers it again;
    5.3 fails it with WorkerLostError. Either way one ERROR record ends it, in the trace it
    arrived with."""
    broker, worker = _worker(redis_server, stream, 9, CELERY_MAX_TASKS_PER_CHILD="0")
    with worker as server:
        task_id = run_json(
            PUBLISH_ONE.format(task="long_job", setup="", attributes={}),
            stream.env(OTEL_SERVICE_NAME="publisher", CELERY_BROKER_URL=broker),
        )
        wait_for(
            lambda: [e for e in stream.logs() if "starting a long job" in e.body], what="the task running"
        )
        os.kill(server.process.pid, signal.SIGQUIT)
        server.process.wait(30)
        output = server.output()
    assert "Signal handler" not in output, output
    lifecycle = _lifecycle(stream, task_id)
    (received,) = [e for e in lifecycle if _state(e) == "received"]
    ended = [e for e in lifecycle if _state(e) in ("cancelled", "retried", "failed")]
    assert [(e.trace_id, e.severity) for e in ended] == [(received.trace_id, "ERROR")]
    assert received.trace_id != ""
    assert ended[0].exception_type.rpartition(".")[2] in ("CancelledAtShutdown", "WorkerLostError")


PUBLISH_EXPIRING = """
import json, tracestream
from opentelemetry import trace
from tests.apps.celery_app import process_order
telemetry = tracestream.configure()
with trace.get_tracer("publisher").start_as_current_span("enqueue") as span:
    task_id = process_order.apply_async((4,), countdown=1, expires=0.5).id  # Celery's docs' expires
telemetry.force_flush()
print(json.dumps([task_id, format(span.get_span_context().trace_id, "032x")]))
"""


def test_a_task_that_expires_before_it_runs_has_a_record_in_its_trace(
    redis_server: EmbeddedRedis, stream: RedisHandle
) -> None:
    broker, worker = _worker(redis_server, stream, 10, CELERY_MAX_TASKS_PER_CHILD="0")
    with worker:
        task_id, trace_id = run_json(
            PUBLISH_EXPIRING, stream.env(OTEL_SERVICE_NAME="publisher", CELERY_BROKER_URL=broker)
        )
        expired = wait_for(
            lambda: [
                e for e in _lifecycle(stream, task_id) if e.attributes["celery.task.state"] == "expired"
            ],
            what="the expired record",
        )
    assert [(e.severity, e.trace_id) for e in expired] == [("WARN", trace_id)]
    assert "started" not in {_state(e) for e in _lifecycle(stream, task_id)}
    (discarding,) = [
        e for e in stream.logs() if e.body.startswith("Discarding revoked task") and task_id in e.body
    ]
    assert discarding.trace_id == trace_id  # Celery's own line, said in the main process


REVOKE = """
import json, tracestream
from tests.apps.celery_app import app
telemetry = tracestream.configure()
app.control.revoke({task_id!r}, terminate=True)  # Celery's docs: Workers Guide, Revoking tasks
telemetry.force_flush()
print(json.dumps("sent"))
"""


def test_a_task_revoked_while_running_ends_in_its_trace(
    redis_server: EmbeddedRedis, stream: RedisHandle
) -> None:
    """`revoke(terminate=True)`: the worker's main process stops the task's child and says so
    outside any span; its lines and the revoked record are in the trace the task arrived with."""
    broker, worker = _worker(redis_server, stream, 11, CELERY_MAX_TASKS_PER_CHILD="0")
    env = stream.env(OTEL_SERVICE_NAME="publisher", CELERY_BROKER_URL=broker)
    with worker:
        task_id = run_json(PUBLISH_ONE.format(task="long_job", setup="", attributes={}), env)
        wait_for(
            lambda: [e for e in stream.logs() if "starting a long job" in e.body], what="the task running"
        )
        run_json(REVOKE.format(task_id=task_id), env)
        revoked = wait_for(
            lambda: [e for e in _lifecycle(stream, task_id) if _state(e) == "revoked"],
            what="the revoked record",
        )
        terminating = wait_for(
            lambda: [e for e in stream.logs() if e.body.startswith(f"Terminating {task_id}")],
            what="Celery's own line",
        )
    (received,) = [e for e in _lifecycle(stream, task_id) if _state(e) == "received"]
    assert received.trace_id != ""
    assert [(e.body, e.trace_id) for e in revoked] == [
        (f"task tests.long_job[{task_id}] revoked (terminated while running)", received.trace_id)
    ]
    assert [e.trace_id for e in terminating] == [received.trace_id]


def _state(entry: LogEntry) -> str:
    return str(entry.attributes["celery.task.state"])


# Celery's testing recipe: tasks run eagerly and raise where they are called, here from a test
# that has a span of its own or none.
EAGER = """
import json, contextlib, tracestream
from opentelemetry import trace
from tests.apps.celery_app import app, fail
app.conf.update(task_always_eager=True, task_eager_propagates=True)
telemetry = tracestream.configure()
caller = trace.get_tracer("test").start_as_current_span("test") if CALLER_SPAN else contextlib.nullcontext()
with caller:
    try:
        fail.delay(5)
    except ValueError as error:
        print(json.dumps(str(error)))
telemetry.force_flush()
"""


@pytest.mark.parametrize("caller_span", [False, True], ids=["alone", "in-a-span"])
def test_an_eager_task_that_raises_where_it_is_called_has_its_failed_record(
    stream: RedisHandle, caller_span: bool
) -> None:
    """Its failed record is in the task's own span, as its started record is."""
    code = EAGER.replace("CALLER_SPAN", str(caller_span))
    assert run_json(code, stream.env(OTEL_SERVICE_NAME="tests")) == "order 5 is broken"
    records = [e for e in stream.logs() if e.scope == CELERY_SCOPE]
    states = [(e.attributes["celery.task.state"], e.exception_type) for e in records]
    assert states == [("started", ""), ("failed", "ValueError")]
    started, failed = records
    assert (failed.trace_id, failed.span_id) == (started.trace_id, started.span_id) != ("", "")
    assert failed.attributes["celery.task.runtime_ms"] >= 0  # it was none: the start was dropped at the end


def test_worker_logs_reach_the_stream_without_celery_duplicates(
    published: dict[str, str], celery_stream: RedisHandle
) -> None:
    logs = celery_stream.logs()
    assert [e for e in logs if e.scope == "celery.apps.worker" and e.body.endswith("ready.")]
    # Celery's own "received"/"succeeded" lines are replaced by the lifecycle records
    assert not [e for e in logs if e.scope in ("celery.app.trace", "celery.worker.strategy")]
    assert len({e.record_id for e in logs}) == len(logs)
    # billiard's line per child started, which Celery keeps at ERROR: the terminal never shows it.
    # billiard's own errors (a child late with its UP message on a loaded machine) it shows, as we do.
    hidden_from_the_terminal = [
        (e.severity, e.body)
        for e in logs
        if e.scope == "multiprocessing" and e.severity_number < ERROR_SEVERITY
    ]
    assert not hidden_from_the_terminal


MAIN_PROCESS_NOT_SET_UP = (
    "tracestream: WARNING configure() ran in a prefork child (worker_process_init): the worker's main"
    " process is not set up, so its 'received' records, its own log lines and the failure of a task"
    " it ends (a hard time limit) are not sent; call configure() where the Celery app is defined"
)


def test_configure_from_worker_process_init(redis_server: EmbeddedRedis, stream: RedisHandle) -> None:
    """Without the launcher: each child configures itself and still flushes before os._exit. The
    main process stays as it was, and lost what it wrote without a word: the first child says so."""
    broker, worker = _worker(redis_server, stream, 3, CONFIGURE_IN_CHILD="1")
    with worker as server:
        said = wait_for(
            lambda: [
                line[line.index("tracestream:") :]
                for line in server.output().splitlines()
                if "tracestream:" in line
            ],
            what="the first child's line",
        )
        assert said == [MAIN_PROCESS_NOT_SET_UP]
        run_json(
            "import json\nfrom tests.apps.celery_app import process_order\n"
            "print(json.dumps([process_order.delay(i).id for i in range(5)]))",
            stream.env(CELERY_BROKER_URL=broker),
        )
        wait_for(lambda: len(_spans(stream, RUN_SPAN)) == 5, timeout=60, what="five task-run spans")
        wait_for(lambda: len(_task_lines(stream)) >= 5, what="five task lines")
    assert len(_task_lines(stream)) == 5
    # printed on the child's stderr, which Celery logs as `celery.redirected`: no record of the app's
    assert not [e.body for e in stream.logs() if "tracestream:" in e.body]


def _task_lines(stream: RedisHandle) -> list[LogEntry]:
    return [e for e in stream.logs() if e.scope == "shop.worker" and e.trace_id]


def test_a_child_that_cannot_deliver_says_so(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """Telemetry's Redis is unreachable and the spool is off: a child ending after its task
    says how many records it loses, instead of losing them silently."""
    unreachable = RedisHandle(url=f"redis://127.0.0.1:{free_port()}/0", stream="lost")
    broker, worker = _worker(
        redis_server,
        unreachable,
        4,
        TRACESTREAM_SPOOL_MAX_BYTES="0",
        TRACESTREAM_SPOOL_DIR=str(tmp_path),
        TRACESTREAM_SHUTDOWN_TIMEOUT="200ms",
        TRACESTREAM_REDIS_TIMEOUT="100ms",
    )
    with worker as server:
        run_json(
            "import json\nfrom tests.apps.celery_app import process_order\n"
            "print(json.dumps(process_order.delay(7).id))",
            {**unreachable.env(), "CELERY_BROKER_URL": broker},
        )
        said = wait_for(
            lambda: re.findall(r"logs: (\d+) records not exported or spooled at shutdown", server.output()),
            timeout=30,
            what="the child's count of lost records",
        )
    assert int(said[0]) >= 3  # the task's line and its started and succeeded records


def test_a_child_that_spools_says_so_once(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """Celery's shutdown hook closes a child's queues, and billiard's `os._exit` closed them
    again: the line saying what waits in the spool came twice, a second apart."""
    unreachable = RedisHandle(url=f"redis://127.0.0.1:{free_port()}/0", stream="spooled")
    broker, worker = _worker(
        redis_server, unreachable, 5, TRACESTREAM_SPOOL_DIR=str(tmp_path), TRACESTREAM_REDIS_TIMEOUT="100ms"
    )
    with worker as server:
        run_json(
            "import json\nfrom tests.apps.celery_app import process_order\n"
            "print(json.dumps(process_order.delay(7).id))",
            {**unreachable.env(), "CELERY_BROKER_URL": broker},
        )
        wait_for(lambda: "records wait in the spool" in server.output(), timeout=30, what="the spool line")
        server.stop()
        said = re.findall(
            r"/(ForkPoolWorker-\d+)\] tracestream: WARNING \d+ records wait in the spool", server.output()
        )
    assert said and len(said) == len(set(said)), said


def test_a_protocol_1_message_keeps_its_producer_span(
    redis_server: EmbeddedRedis, stream: RedisHandle
) -> None:
    """Celery's task protocol 1 leaves the headers empty; a header of ours would make the
    instrumentation read the message as protocol 2, find no task id and make no producer span."""
    broker = f"redis://127.0.0.1:{redis_server.port}/14"
    task_id = run_json(
        PUBLISH_ONE.format(
            task="process_order", setup="app.conf.task_protocol = 1", attributes={"http.route": "/orders"}
        ),
        stream.env(OTEL_SERVICE_NAME="publisher", CELERY_BROKER_URL=broker),
    )
    producer = wait_for(lambda: _spans(stream, "apply_async/tests.process_order"), what="the producer span")
    assert [span.attributes["messaging.message.id"] for span in producer] == [task_id]


def test_a_task_at_its_hard_time_limit_with_redis_stalled_spools_its_lines_and_span(
    redis_server: EmbeddedRedis, stream: RedisHandle, tmp_path: Path
) -> None:
    """At a hard time limit billiard sends the child SIGTERM, then SIGKILL 0.1 s later. With
    Redis slow, the child waited for it until the kill: the lines it had printed since, and its
    task's span, were lost without a line. It now waits 0.04 s, then spools them, the span first."""
    spool = str(tmp_path / "spool")
    with FaultyProxy(redis_server.port) as proxy:
        through_proxy = RedisHandle(url=proxy.url, stream=stream.stream)
        broker, worker = _worker(
            redis_server, through_proxy, 8, CELERY_MAX_TASKS_PER_CHILD="0", TRACESTREAM_SPOOL_DIR=spool
        )
        with worker as server:
            task_id = run_json(
                PUBLISH_ONE.format(task="chatty_overrun", setup="", attributes={}),
                stream.env(OTEL_SERVICE_NAME="publisher", CELERY_BROKER_URL=broker),
            )
            wait_for(lambda: _steps(stream), what="the task's first lines")
            proxy.stall()
            wait_for(lambda: "Hard time limit (1s) exceeded" in server.output(), what="the hard time limit")
            # Once in about twenty runs on a loaded machine no line came within 10 s: the worker's
            # output goes with the failure, to tell a child killed before it spoke from a silent one.
            with contextlib.suppress(AssertionError):
                wait_for(lambda: " in the spool for stream" in server.output(), what="the child's spool line")
            assert " in the spool for stream" in server.output(), server.output()
            proxy.resume()
            proxy.cut()  # the stalled connections are dead weight now
            server.stop()
            output = server.output()
        replay = ["spool", "replay", "--redis-url", proxy.url, "--stream", stream.stream]
        subprocess.run(
            [bin_path("tracestream"), *replay], env=stream.env(TRACESTREAM_SPOOL_DIR=spool), check=True
        )
    assert "Celery's pool kills its child 0.1 s after a hard time limit's SIGTERM" in output, output
    printed_steps = {int(step) for step in re.findall(r"order 4: step (\d+)", output)}
    assert printed_steps and printed_steps <= _steps(stream), sorted(printed_steps - _steps(stream))
    (received,) = [e for e in _lifecycle(stream, task_id) if e.attributes["celery.task.state"] == "received"]
    assert [s.trace_id for s in _spans(stream, "run/tests.chatty_overrun")] == [received.trace_id]


def _steps(stream: RedisHandle) -> set[int]:
    return {int(e.body.rsplit(" ", 1)[1]) for e in stream.logs() if e.body.startswith("order 4: step ")}


def test_a_delayed_tasks_queue_is_named_without_rabbitmqs_delay_levels() -> None:
    """Celery's quorum queues on RabbitMQ route `countdown`, `eta` and `retry` by the delay in 28
    binary levels before the queue's key (kombu's `calculate_routing_key`): those records named a
    queue of digits, apart from the first try's."""
    delayed = ".".join(f"{30:028b}") + ".qq"
    assert queue_name(delayed) == "qq"
    assert queue_name("qq") == "qq" and queue_name("orders.eu") == "orders.eu"
    assert queue_name("1.0.qq") == "1.0.qq" and queue_name(None) is None
