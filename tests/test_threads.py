"""Work a request hands to other threads runs in the request's trace, under configure() as under
the launcher, and what the app prints stays as it was (the app: tests/apps/threads_docs.py)."""

from __future__ import annotations

import json

import httpx

from tests.apps.http_checks import is_request_record
from tests.apps.servers import bin_path, http_ready, launched, printed, serve
from tests.support import RedisHandle, run_python_process, wait_for
from tracestream.embedded_redis import free_port
from tracestream.integrations.uncaught import SCOPE as UNCAUGHT

APP = "tests.apps.threads_docs:app"
PATHS = ("/fetch", "/fetch-async", "/sync")


def _serve(command: list[str], env: dict[str, str]) -> tuple[dict[str, str], str]:
    """Each path's trace id (empty without tracestream), and what the server printed."""
    port = free_port()
    argv = [*command, "--port", str(port)]
    with serve(argv, env, http_ready(f"http://127.0.0.1:{port}/pages/0")) as server:
        traces = {}
        for path in PATHS:
            response = httpx.get(f"http://127.0.0.1:{port}{path}", params={"port": port}, timeout=30)
            assert response.status_code == 200, (path, response.text)
            traces[path] = response.headers.get("x-trace-id", "")
        wait_for(
            lambda: printed(server, "ValueError: order 7 has no customer"), what="the thread's traceback"
        )
        server.stop()
        return traces, server.output()


def _thread_traceback(output: str) -> list[str]:
    lines = output.splitlines()
    start = lines.index("Exception in thread order-sync:")
    end = lines.index("ValueError: order 7 has no customer", start)
    return lines[start : end + 1]


def test_threads_a_request_starts_run_in_its_trace_and_print_as_before(stream: RedisHandle) -> None:
    """The concurrent.futures docs' pool, `run_in_executor` and a `Thread`: their lines carried no
    trace id under configure(), and each call they made began a trace of its own (the launcher
    had upstream's threading instrumentation, whose frames showed in a thread's traceback)."""
    uvicorn = [bin_path("uvicorn"), APP]
    bare_traces, bare_output = _serve(uvicorn, stream.env())
    assert set(bare_traces.values()) == {""} and not stream.logs()
    bare_traceback = _thread_traceback(bare_output)

    for name, command, extra in (
        ("configured", uvicorn, {"THREADS_DOCS_TRACESTREAM": "1"}),
        ("launched", launched(*uvicorn), {}),
    ):
        traces, output = _serve(command, stream.env(OTEL_SERVICE_NAME=name, **extra))
        assert _thread_traceback(output) == bare_traceback, name
        assert not [line for line in output.splitlines() if line.startswith("tracestream:")], name

        for path in ("/fetch", "/fetch-async"):
            # The two loads, and the pages they fetched, served within the same trace.
            loads = ["loading page 0", "loading page 1", "page 0 served", "page 1 served"]
            expected = sorted([*loads, "/pages/{n}", "/pages/{n}", path])
            assert _records_in(stream, name, traces[path], len(expected)) == expected, (name, path)
        expected = sorted(["/sync", "syncing orders", UNCAUGHT])
        assert _records_in(stream, name, traces["/sync"], len(expected)) == expected, name


def test_threads_run_in_the_trace_beside_sentrys_threading_integration(stream: RedisHandle) -> None:
    """Sentry's integration, set up first, wraps `Thread.start` too and calls the `run` it finds
    as `run.__func__(thread)`: every thread a request started (a `def` endpoint's too) died
    of a TypeError, and what waited on it hung. Each prints as under Sentry alone."""
    uvicorn = [bin_path("uvicorn"), APP]
    _, sentry_output = _serve(uvicorn, stream.env(THREADS_DOCS_SENTRY="1"))
    traces, output = _serve(
        uvicorn, stream.env(OTEL_SERVICE_NAME="sentry", THREADS_DOCS_SENTRY="1", THREADS_DOCS_TRACESTREAM="1")
    )
    assert _thread_traceback(output) == _thread_traceback(sentry_output)
    assert "TypeError" not in output
    loads = ["loading page 0", "loading page 1", "page 0 served", "page 1 served"]
    expected = sorted([*loads, "/pages/{n}", "/pages/{n}", "/fetch"])
    assert _records_in(stream, "sentry", traces["/fetch"], len(expected)) == expected


def _records_in(stream: RedisHandle, service: str, trace_id: str, count: int) -> list[str]:
    """Once `count` are in: the trace's records, each as its route, its body, or the uncaught scope."""

    def enough() -> list[str] | None:
        found = sorted(
            e.attributes["http.route"] if is_request_record(e) else e.scope if e.scope == UNCAUGHT else e.body
            for e in stream.logs()
            if e.service == service and e.trace_id == trace_id
        )
        return found if len(found) >= count else None

    return wait_for(enough, what=f"{trace_id}'s records")


SHAPES = """
import concurrent.futures, contextvars, json, threading
import tracestream
from opentelemetry import trace

tracestream.configure()
user = contextvars.ContextVar("user", default=None)
seen = {}


def note(shape):
    seen[shape] = [format(trace.get_current_span().get_span_context().trace_id, "032x"), user.get()]


class Syncer(threading.Thread):
    def run(self):
        note("subclass run")


def start(thread):
    thread.start()
    thread.join()


with trace.get_tracer("app").start_as_current_span("request") as span:
    user.set("ada")
    note("request")
    start(threading.Thread(target=note, args=("thread",)))
    start(Syncer())
    start(threading.Timer(0.01, note, args=("timer",)))
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        list(executor.map(note, ["map"]))
        executor.submit(start, threading.Thread(target=note, args=("thread in a task",))).result()
start(threading.Thread(target=note, args=("outside a span",)))
print(json.dumps({"trace_id": format(span.get_span_context().trace_id, "032x"), "seen": seen}))
"""


def test_each_way_of_starting_work_carries_the_trace_and_nothing_else(stream: RedisHandle) -> None:
    """A subclass's own `run()` and a `Timer` too, which upstream's leaves out; the app's other
    context variables stay behind, as without tracestream; a thread started outside a span gets none."""
    done = run_python_process(SHAPES, stream.env(OTEL_SERVICE_NAME="shapes"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    traced = [report["trace_id"], None]
    assert report["seen"] == {
        "request": [report["trace_id"], "ada"],
        "thread": traced,
        "subclass run": traced,
        "timer": traced,
        "map": traced,
        "thread in a task": traced,
        "outside a span": ["0" * 32, None],
    }


POOLS = """
import concurrent.futures, json, logging, multiprocessing, os
import tracestream
from opentelemetry import trace

tracestream.configure()
fork = multiprocessing.get_context("fork")


def work(request):
    logging.getLogger("pool").warning("task of %s", request)
    return format(trace.get_current_span().get_span_context().trace_id, "032x")


traces, seen = {}, {}
with concurrent.futures.ProcessPoolExecutor(1, mp_context=fork) as executor, fork.Pool(1) as pool:
    for request in ("first", "second", "third"):
        with trace.get_tracer("app").start_as_current_span(request) as span:
            traces[request] = format(span.get_span_context().trace_id, "032x")
            seen[f"executor {request}"] = executor.submit(work, f"executor {request}").result()
            seen[f"pool {request}"] = pool.apply(work, (f"pool {request}",))
print(json.dumps({"traces": traces, "seen": seen}))
"""


def test_a_process_pool_forked_within_a_request_keeps_none_of_its_trace(stream: RedisHandle) -> None:
    """`ProcessPoolExecutor` forks its worker at the first `submit()`, inside the first request:
    the worker ran every later task in that request's trace, and the first request's trace
    collected the others' lines. A forked pool worker starts with no trace, as a spawned one does."""
    done = run_python_process(POOLS, stream.env(OTEL_SERVICE_NAME="pools"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(set(report["traces"].values())) == 3
    assert set(report["seen"].values()) == {"0" * 32}

    def tasks() -> dict[str, str] | None:
        found = {e.body: e.trace_id for e in stream.logs() if e.body.startswith("task of ")}
        return found if len(found) == 6 else None

    assert set(wait_for(tasks, what="the six tasks' records").values()) == {""}
