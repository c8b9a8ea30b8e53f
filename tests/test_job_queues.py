"""Job queues tracestream does not integrate, run as their own docs run them, under the launcher."""

from __future__ import annotations

import subprocess

import redis

from tests.apps.servers import LAUNCHER_ENV, bin_path, launched
from tests.support import ROOT, RedisHandle, wait_for
from tracestream.embedded_redis import EmbeddedRedis

# RQ's "Getting started": jobs enqueued on a Redis of the app's own (here another database of
# the test's server), then `rq worker`, a click command; `--burst` ends it once the queue is empty.
ENQUEUE = """
import sys
from redis import Redis
from rq import Queue
from tests.apps.rq_jobs import count_words, divide
queue = Queue(connection=Redis.from_url(sys.argv[1]))
for text in ("hello world", "one two three"):
    queue.enqueue(count_words, text)
queue.enqueue(divide, 1, 0)
"""


def test_an_rq_worker_under_the_launcher_is_no_span_its_jobs_are_children_of(
    redis_server: EmbeddedRedis, stream: RedisHandle
) -> None:
    """The click instrumentation opened a span around `rq worker`: every job's lines went into
    that one trace, which ended only with the worker. One line says what the jobs do not get."""
    broker = f"redis://127.0.0.1:{redis_server.port}/13"
    with redis.Redis.from_url(broker) as client:
        client.flushdb()
    env = stream.env(OTEL_SERVICE_NAME="jobs", OTEL_METRICS_EXPORTER="none", **LAUNCHER_ENV)
    env.update(OTEL_LOGS_EXPORTER="redis_stream", OTEL_TRACES_EXPORTER="redis_stream")
    subprocess.run([bin_path("python"), "-c", ENQUEUE, broker], env=env, cwd=ROOT, check=True, timeout=60)
    worker = subprocess.run(
        launched(bin_path("rq"), "worker", "--burst", "--url", broker),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    assert [line for line in worker.stderr.splitlines() if line.startswith("tracestream:")] == [
        "tracestream: WARNING rq is in use, which tracestream does not integrate: its jobs get no task"
        " records or spans of their own (Celery's tasks do), and their log lines reach the stream"
        " without the trace of the request that enqueued them"
    ], worker.stderr
    jobs = wait_for(
        lambda: len(found := [e for e in stream.logs() if e.scope == "rq_jobs"]) == 2 and found,
        what="both jobs' lines",
    )
    assert [e.body for e in jobs] == [
        "counting the words of 'hello world'",
        "counting the words of 'one two three'",
    ]
    assert not [span for span in stream.spans() if span.name == "worker"]
    assert jobs[0].trace_id == "" or jobs[0].trace_id != jobs[1].trace_id
    # RQ logs a failed job's traceback in its message: that traceback is the record's exception
    [failed] = wait_for(lambda: [e for e in stream.logs() if e.severity == "ERROR"], what="the failure")
    assert (failed.exception_type, failed.exception_message) == ("ZeroDivisionError", "division by zero")
    assert failed.exception_stacktrace.startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in failed.body
