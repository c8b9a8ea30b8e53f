"""HTTP overhead of a small FastAPI app and a small Django app: requests/s, or CPU per request.

  bare         no telemetry
  tracestream  configure(): server spans and one request record per request, to Redis
  upstream     the contrib instrumentor with the SDK's BatchSpanProcessor exporting
               OTLP/HTTP to a local sink (upstream defaults)
  floor        the contrib instrumentor with spans to a no-op exporter: what any tool built
               on it pays before exporting anything
  tuned-floor  (in process only) the floor with the contrib settings tracestream makes its
               defaults (stable HTTP semconv; FastAPI without `http send`/`http receive`
               spans): tracestream minus this is tracestream's own cost

End to end (the default), every contender is a fresh server process (uvicorn for FastAPI,
gunicorn's sync worker for Django, one worker each) driven by the same keep-alive load
generator, in rounds that alternate the contenders, so their ratios are comparable on a
noisy machine. With --in-process, each contender is a fresh process that calls its app
directly and reports CPU per request, export included (bench/http_inprocess.py); with
--callgrind as well, instructions. --sampling 0.1 runs either at 10% head sampling.

Run: .venv/bin/python bench/http_overhead.py [--seconds 4] [--rounds 3] [--connections 8]
     .venv/bin/python bench/http_overhead.py --in-process [--requests 2000] [--callgrind]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from callgrind import under_callgrind

from tracestream.embedded_redis import EmbeddedRedis, free_port

HERE = Path(__file__).resolve()
MODES = ("bare", "tracestream", "upstream", "floor")
CONTRIB_MODES = ("upstream", "floor", "tuned-floor")
IN_PROCESS_MODES = ("bare", "floor", "tuned-floor", "upstream", "tracestream")

FRAMEWORKS = ("fastapi", "django")
PATH = "/items/42"


# -- the servers (this file, run with --serve) -----------------------------------------------


def _setup_telemetry(mode: str, framework: str) -> None:
    if mode == "tracestream":
        import tracestream

        tracestream.configure(service_name=f"bench-{framework}")
    elif mode in CONTRIB_MODES:
        if mode == "tuned-floor":  # what configure() defaults it to (tracestream.otel_setup.http_names)
            from tracestream.otel_setup.http_names import choose_stable_names

            choose_stable_names()
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class NoOpExporter(SpanExporter):
            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        otlp = mode == "upstream"
        exporter = OTLPSpanExporter(endpoint=os.environ["BENCH_OTLP"]) if otlp else NoOpExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": f"bench-{framework}"}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)


def fastapi_app() -> Any:
    mode = os.environ["BENCH_MODE"]
    _setup_telemetry(mode, "fastapi")
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:  # async: no thread hop to blur the telemetry cost
        return {"item_id": item_id}

    if mode in CONTRIB_MODES:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        from tracestream.integrations.fastapi import CONTRIB_OPTIONS

        FastAPIInstrumentor.instrument_app(app, **(CONTRIB_OPTIONS if mode == "tuned-floor" else {}))
    return app


def django_app() -> Any:
    """A gunicorn app factory: `gunicorn 'http_overhead:django_app()'`."""
    mode = os.environ["BENCH_MODE"]
    _setup_telemetry(mode, "django")
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="bench",
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],  # sets Content-Length: keep-alive
    )
    if mode in CONTRIB_MODES:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def _item(request: Any, item_id: int) -> Any:
    from django.http import JsonResponse

    return JsonResponse({"item_id": item_id})


def __getattr__(name: str) -> Any:
    """Django's ROOT_URLCONF points here; the URL list is built only inside a Django server."""
    if name == "urlpatterns":
        from django.urls import path

        return [path("items/<int:item_id>", _item)]
    raise AttributeError(name)


class _Sink(BaseHTTPRequestHandler):
    """The upstream contender's OTLP/HTTP collector: reads and drops every export."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- the load generator -----------------------------------------------------------------------


async def _client(port: int, deadline: float, counts: list[int]) -> None:
    """One keep-alive connection, reopened whenever the server closes it."""
    request = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n".encode()
    done = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.monotonic() < deadline:
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        if not head.startswith(b"http/1.1 200"):
            raise RuntimeError(f"unexpected response: {head[:40]!r}")
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        if b"content-length" in fields:
            await reader.readexactly(int(fields[b"content-length"]))
        else:
            await reader.read()
        done += 1
        if b"content-length" not in fields or fields.get(b"connection", b"").strip() == b"close":
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
    counts.append(done)
    writer.close()


async def _load(port: int, seconds: float, connections: int) -> float:
    counts: list[int] = []
    started = time.monotonic()
    await asyncio.gather(*(_client(port, started + seconds, counts) for _ in range(connections)))
    return sum(counts) / (time.monotonic() - started)


def _server_command(framework: str, port: int) -> list[str]:
    if framework == "fastapi":
        return [sys.executable, str(HERE), "--serve", "fastapi", "--port", str(port)]
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    return [
        gunicorn,
        "--log-level",
        "warning",
        "-w",
        "1",
        "-b",
        f"127.0.0.1:{port}",
        "--pythonpath",
        str(HERE.parent),
        "http_overhead:django_app()",
    ]


def measure(framework: str, mode: str, env: dict[str, str], seconds: float, connections: int) -> float:
    port = free_port()
    server = subprocess.Popen(
        _server_command(framework, port), env={**env, "BENCH_MODE": mode}, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}{PATH}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{framework}/{mode} server did not start")
            time.sleep(0.1)
        asyncio.run(_load(port, 1.0, connections))  # warm-up
        return asyncio.run(_load(port, seconds, connections))
    finally:
        server.terminate()
        server.wait(10)


def _environment(redis_server: EmbeddedRedis, sampling: float | None) -> dict[str, str]:
    """The contenders' environment: ours only, the same for all, with the sampler when asked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACESTREAM_"))}
    env.update(
        TRACESTREAM_REDIS_URL=redis_server.url,
        TRACESTREAM_STREAM="bench:http",
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")])),
    )
    if sampling is not None:
        env.update(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG=f"{sampling:g}")
    return env


@contextmanager
def _contenders_environment(sampling: float | None) -> Iterator[tuple[dict[str, str], EmbeddedRedis]]:
    """A private Redis for tracestream and an OTLP sink process for upstream, for every contender."""
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    sink_port = sink.server_address[1]
    sink.server_close()  # the sink runs in its own process, off the load generator's GIL
    with EmbeddedRedis() as redis_server:
        env = _environment(redis_server, sampling)
        env["BENCH_OTLP"] = f"http://127.0.0.1:{sink_port}/v1/traces"
        sink_process = subprocess.Popen([sys.executable, str(HERE), "--sink", str(sink_port)])
        try:
            yield env, redis_server
        finally:
            sink_process.terminate()
            sink_process.wait(10)


def run(
    seconds: float, rounds: int, connections: int, sampling: float | None
) -> dict[tuple[str, str], list[float]]:
    results: dict[tuple[str, str], list[float]] = {}
    with _contenders_environment(sampling) as (env, redis_server):
        for round_number in range(rounds):
            for framework in FRAMEWORKS:
                for mode in MODES if round_number % 2 == 0 else reversed(MODES):
                    rate = measure(framework, mode, env, seconds, connections)
                    results.setdefault((framework, mode), []).append(rate)
                    print(
                        f"  round {round_number + 1}: {framework:8} {mode:12} {rate:8.0f} req/s", flush=True
                    )
        with redis_server.client() as client:
            print(f"  records written by the tracestream contenders: {client.xlen('bench:http')}")
    return results


# -- in process: CPU per request, the apps called directly (bench/http_inprocess.py) ----------

InProcessResults = dict[tuple[str, str], list[dict[str, float]]]


def _in_process_command(
    framework: str, mode: str, requests: int, redis_pid: int | None, callgrind: bool
) -> list[str]:
    command = [
        sys.executable,
        str(HERE.with_name("http_inprocess.py")),
        framework,
        mode,
        "--requests",
        str(requests),
    ]
    if redis_pid is not None:
        command += ["--redis-pid", str(redis_pid)]
    if callgrind:  # instructions of the measured part only: the child turns collection on and off
        return under_callgrind("/dev/null", command)
    return command


def run_in_process(requests: int, rounds: int, sampling: float | None, callgrind: bool) -> InProcessResults:
    """One fresh process per contender and round (configure() and the instrumentors are per process)."""
    results: InProcessResults = {}
    with _contenders_environment(sampling) as (env, redis_server):
        if callgrind:
            env["BENCH_CALLGRIND"] = "1"
        redis_pid = redis_server.process.pid if redis_server.process else None
        for round_number in range(rounds):
            for framework in FRAMEWORKS:
                modes = IN_PROCESS_MODES if round_number % 2 == 0 else tuple(reversed(IN_PROCESS_MODES))
                for mode in modes:
                    command = _in_process_command(framework, mode, requests, redis_pid, callgrind)
                    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
                    figures = json.loads(done.stdout.strip().splitlines()[-1])
                    collected = re.search(r"Collected : (\d+)", done.stderr)
                    figures["instructions"] = int(collected.group(1)) / requests if collected else 0.0
                    results.setdefault((framework, mode), []).append(figures)
                    print(
                        f"  round {round_number + 1}: {framework:8} {mode:12} {_figures_text(figures)}",
                        flush=True,
                    )
    return results


def _figures_text(figures: dict[str, float]) -> str:
    text = f"{figures['cpu_us']:7.1f} µs CPU (Redis {figures['redis_us']:.1f} µs)"
    return text + (f", {figures['instructions'] / 1000:.0f}k instructions" if figures["instructions"] else "")


def report_in_process(results: InProcessResults) -> None:
    """Medians per contender; tracestream's own cost is what it adds to the tuned floor."""
    columns = ("cpu_us", "instructions", "redis_us")
    median = {
        key: {column: statistics.median(run[column] for run in runs) for column in columns}
        for key, runs in results.items()
    }
    counted = any(figures["instructions"] for figures in median.values())
    head = ["framework", "contender", "µs CPU", "+bare", "+floor", "+tuned", "Redis µs"]
    print("\n{:9} {:11} {:>7} {:>7} {:>7} {:>7} {:>8}".format(*head), "  k instr   +tuned" if counted else "")
    for framework in FRAMEWORKS:
        cpu = {mode: median[(framework, mode)]["cpu_us"] for mode in IN_PROCESS_MODES}
        thousands = {mode: median[(framework, mode)]["instructions"] / 1000 for mode in IN_PROCESS_MODES}
        for mode in IN_PROCESS_MODES:
            row = (
                cpu[mode],
                cpu[mode] - cpu["bare"],
                cpu[mode] - cpu["floor"],
                cpu[mode] - cpu["tuned-floor"],
            )
            text = "{:9} {:11} {:7.1f} {:+7.1f} {:+7.1f} {:+7.1f}".format(framework, mode, *row)
            text += f" {median[(framework, mode)]['redis_us']:8.1f}"
            if counted:
                text += f" {thousands[mode]:8.0f} {thousands[mode] - thousands['tuned-floor']:+8.0f}"
            print(text)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--sampling", type=float, help="trace ratio, e.g. 0.1 (default: every trace)")
    parser.add_argument(
        "--in-process", action="store_true", help="CPU per request, apps called directly (no server)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="per in-process run")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="in process: also count instructions (slow; try --requests 300)",
    )
    parser.add_argument("--serve", choices=("fastapi",), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        import uvicorn

        uvicorn.run(fastapi_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return
    if args.sink:
        ThreadingHTTPServer(("127.0.0.1", args.sink), _Sink).serve_forever()
        return
    command = " ".join(["python", "bench/http_overhead.py", *(argv if argv is not None else sys.argv[1:])])
    sampled = "every trace" if args.sampling is None else f"parentbased_traceidratio {args.sampling:g}"
    if args.in_process:
        print(
            f"$ {command}\n  {os.cpu_count()} CPUs, in process, {args.requests} requests per run, "
            f"{args.rounds} rounds (median shown), sampling: {sampled}"
        )
        report_in_process(run_in_process(args.requests, args.rounds, args.sampling, args.callgrind))
        return
    print(
        f"$ {command}\n  {os.cpu_count()} CPUs, {args.connections} keep-alive connections, "
        f"{args.seconds:g} s per run, {args.rounds} rounds (median shown), sampling: {sampled}"
    )
    results = run(args.seconds, args.rounds, args.connections, args.sampling)
    print(f"\n{'framework':10} {'contender':12} {'req/s':>8} {'vs bare':>8} {'vs upstream':>12}")
    for framework in FRAMEWORKS:
        bare = statistics.median(results[(framework, "bare")])
        upstream = statistics.median(results[(framework, "upstream")])
        for mode in MODES:
            rate = statistics.median(results[(framework, mode)])
            print(f"{framework:10} {mode:12} {rate:8.0f} {rate / bare:8.2f} {rate / upstream:12.2f}")


if __name__ == "__main__":
    main()
