"""`make demo` / `tracestream demo`: the shop stack under the real launcher, on one Redis.

- a Django shop (gunicorn, 2 workers, port 8000) whose checkout calls
- a FastAPI inventory service (uvicorn, port 8001), which enqueues a task for
- a Celery worker, next to Celery beat, all on one Redis (tracestream in one db, the broker in another),
- and the tracestream console (port 8686) over what they write.

Traffic: a checkout (Django -> FastAPI -> Celery), a 404 and a 500; then one trace's spans and
records from all three services are printed in time order, with the console's URL and the
`tracestream` commands that explore the same data. The stack keeps running until Ctrl-C, then
every child process is stopped. A private redis-server is started unless --redis-url names one;
the stack's processes get none of the shell's OTEL_*, TRACESTREAM_* and CELERY_* variables, so
what the demo writes, and the tasks its worker takes, stay in that Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import httpx
from rich.console import Console
from rich.table import Table

from tracestream.connection import connect
from tracestream.embedded_redis import EmbeddedRedis, free_port
from tracestream.query import TraceRecords, fetch_trace
from tracestream.schema import SpanEntry
from tracestream.settings import shown_url

HERE = Path(__file__).resolve().parent
WORKDIR = HERE.parent / ".demo"
LAUNCHER = str(Path(sys.executable).with_name("opentelemetry-instrument"))
TRACESTREAM = Path(sys.executable).with_name("tracestream")
SERVICES = ("shop-web", "inventory-api", "shop-worker")
console = Console()


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the child's own process group (its workers too), SIGKILL after 10 s."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextlib.contextmanager
def redis_url(given: str | None) -> Iterator[str]:
    """The private server is stopped last, after every child has flushed its records into it.

    Ctrl-C in a terminal signals the whole foreground process group, which the server would
    otherwise share with us; it starts with SIGINT blocked (the mask survives exec), so only
    our own stop ends it.
    """
    if given:
        yield given
        return
    server = EmbeddedRedis()
    try:
        interrupts = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            server.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, interrupts)
        console.print(f"[dim]private redis-server at {server.url}[/]")
        yield server.url
    finally:
        server.close()


def broker_url(url: str) -> str:
    """The broker gets its own database on the same server: the next index after the stream's
    (the one before, after Redis's last by default, 15)."""
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or "0")
    return urlunsplit(parts._replace(path=f"/{db + 1 if db < 15 else db - 1}"))


# The shell's settings of what the stack's processes write to and take work from: a shell set up
# for an app of the user's would have the demo write to that app's Redis, collector or broker.
_SHELL_SETTINGS = ("OTEL_", "TRACESTREAM_", "CELERY_", "DJANGO_SETTINGS_MODULE")


def _own_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith(_SHELL_SETTINGS)}


def port_or_free(preferred: int) -> int:
    if preferred == 0:
        return free_port()
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


class Stack:
    """The four launched processes and the console, stopped (all of them) on exit."""

    def __init__(self, url: str, stream: str, web_port: int, api_port: int, console_port: int) -> None:
        self.web = f"http://127.0.0.1:{web_port}"
        self.api = f"http://127.0.0.1:{api_port}"
        self.console = f"http://127.0.0.1:{console_port}/"
        self.children: list[Child] = []
        WORKDIR.mkdir(exist_ok=True)
        self._env = {
            **_own_environment(),
            "TRACESTREAM_REDIS_URL": url,
            "TRACESTREAM_STREAM": stream,
            "TRACESTREAM_BATCH_DELAY_MS": "100",
            "CELERY_BROKER_URL": broker_url(url),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
            # Ours, even when upstream's opentelemetry-distro is installed too.
            "OTEL_PYTHON_DISTRO": "tracestream",
            "OTEL_PYTHON_CONFIGURATOR": "tracestream",
            "SHOP_DB": str(WORKDIR / "shop.sqlite3"),
            "INVENTORY_URL": self.api,
            "CELERY_BEAT_SCHEDULE": str(WORKDIR / "celerybeat-schedule"),
        }
        # Django's launcher instrumentation needs its settings; Celery would set Django up if it saw them.
        self._extra_env = {"shop-web": {"DJANGO_SETTINGS_MODULE": "shop.settings"}}
        self._commands = {
            "shop-web": ["gunicorn", "shop.wsgi", "-w", "2", "-b", f"127.0.0.1:{web_port}"],
            "inventory-api": ["uvicorn", "inventory:app", "--host", "127.0.0.1", "--port", str(api_port)],
            "shop-worker": ["celery", "-A", "tasks", "worker", "-c", "2", "-n", "worker@demo", "-l", "INFO"],
            "shop-beat": ["celery", "-A", "tasks", "beat", "-l", "INFO"],
        }
        # Not under the launcher: a reader, it writes nothing to the stream it shows.
        self._console_command = [str(TRACESTREAM), "console", "--port", str(console_port)]

    def start(self) -> None:
        for name, (program, *args) in self._commands.items():
            console.print(f"[bold]$ opentelemetry-instrument {program} {' '.join(args)}[/]", highlight=False)
            command = [LAUNCHER, str(Path(sys.executable).with_name(program)), *args]
            self._launch(name, command, {"OTEL_SERVICE_NAME": name, **self._extra_env.get(name, {})})
        console.print(f"[bold]$ tracestream {' '.join(self._console_command[1:])}[/]", highlight=False)
        self._launch("console", self._console_command, {})

    def _launch(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = WORKDIR / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=HERE,
                env={**self._env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop each child's group ourselves
            )
        self.children.append(Child(name, process, log))
        console.print(f"  [dim]{name}: pid {process.pid}, output in {log}[/]", highlight=False)

    def wait_ready(self, timeout: float = 60.0) -> None:
        checks: dict[str, Callable[[Child], bool]] = {
            "shop-web": lambda _: _answers(self.web + "/"),
            "inventory-api": lambda _: _answers(self.api + "/stock/BOOK-1"),
            "shop-worker": lambda child: "ready." in child.output(),
            "shop-beat": lambda child: "beat: Starting" in child.output(),
            "console": lambda _: _answers(self.console),
        }
        deadline = time.monotonic() + timeout
        waiting = list(self.children)
        while waiting:
            self.check_alive()
            waiting = [child for child in waiting if not checks[child.name](child)]
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout:.0f}s: {', '.join(c.name for c in waiting)}")
            time.sleep(0.2)

    def check_alive(self) -> None:
        for child in self.children:
            if child.process.poll() is not None:
                tail = "\n".join(child.output().splitlines()[-20:])
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n{tail}")

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.TransportError:
        return False
    return True


def drive(stack: Stack, order_id: int) -> str:
    """A checkout that crosses all three services, a 404 and a 500; returns the checkout's trace id."""
    trace_id = ""
    for path in (f"/checkout/{order_id}/", "/no-such-page/", "/broken/"):
        response = httpx.get(stack.web + path, timeout=10)
        console.print(f"GET {path:<18} -> {response.status_code}  trace {response.headers.get('x-trace-id')}")
        if path.startswith("/checkout"):
            response.raise_for_status()
            trace_id = response.headers["x-trace-id"]
    return trace_id


def wait_for_trace(url: str, stream: str, trace_id: str, timeout: float = 30.0) -> TraceRecords:
    """Until the worker's task has finished and every service's spans and log records are in."""
    deadline = time.monotonic() + timeout
    with connect(url, timeout=5, decode=True) as client:
        while True:
            records = fetch_trace(client, stream, trace_id)
            logged = {log.service for log in records.logs}
            traced = {span.service for span in records.spans}
            finished = any(log.attributes.get("celery.task.state") == "succeeded" for log in records.logs)
            if finished and logged >= set(SERVICES) and traced >= set(SERVICES):
                return records
            if time.monotonic() > deadline:
                return records
            time.sleep(0.2)


def _span_label(span: SpanEntry) -> str:
    return f"{span.name} ({span.duration_ms:.1f} ms)"


def show_trace(records: TraceRecords) -> None:
    table = Table(
        title=f"trace {records.trace_id}: {len(records.spans)} spans, {len(records.logs)} log records, "
        f"services: {', '.join(sorted({r.service for r in (*records.spans, *records.logs)}))}"
    )
    for column in ("+ms", "service", "kind", "level", "what", "span"):
        table.add_column(column, overflow="fold")
    rows = [
        (
            s.start_ns,
            s.service,
            f"span {s.kind.lower()}",
            s.status,
            _span_label(s),
            s.span_id,
        )
        for s in records.spans
    ]
    rows += [(e.timestamp_ns, e.service, "log", e.severity, e.body, e.span_id) for e in records.logs]
    start = min((row[0] for row in rows), default=0)
    for ts, service, kind, level, what, span in sorted(rows):
        table.add_row(f"{(ts - start) / 1e6:.1f}", service, kind, level, what, span[:8])
    console.print(table)


def tracestream_program() -> str:
    """`tracestream` when PATH finds this interpreter's own, else its path (from here when below here)."""
    found = shutil.which("tracestream")
    if found and Path(found).resolve() == TRACESTREAM.resolve():
        return "tracestream"
    with contextlib.suppress(ValueError):
        return str(TRACESTREAM.relative_to(Path.cwd()))
    return str(TRACESTREAM)


def explore_commands(url: str, stream: str, trace_id: str) -> list[str]:
    """Commands that read this demo's data, as a shell takes them: the checkout's trace, the
    warnings and errors (the 500's stack trace among them), the live tail and the services. A
    URL holding a password is left out: they read it from TRACESTREAM_REDIS_URL."""
    where = f"--stream {shlex.quote(stream)}"
    if shown_url(url) == url:
        where = f"--redis-url {shlex.quote(url)} {where}"
    program = tracestream_program()
    return [
        f"{program} trace {trace_id} {where}",
        f"{program} search -l warn {where}",
        f"{program} tail {where}",
        f"{program} services {where}",
    ]


def show_how_to_explore(stack: Stack, url: str, stream: str, trace_id: str) -> None:
    """Soft-wrapped, so a long command stays one line to copy whatever the terminal's width."""
    console.print("[bold]explore the demo's data while it runs:[/]")
    console.print(f"  console  {stack.console}", markup=False, highlight=False, soft_wrap=True)
    if shown_url(url) != url:
        said = f"  with TRACESTREAM_REDIS_URL set to {shown_url(url)}, its password as given:"
        console.print(said, markup=False, highlight=False, soft_wrap=True)
    for command in explore_commands(url, stream, trace_id):
        console.print(f"  $ {command}", markup=False, highlight=False, soft_wrap=True)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", help="use this Redis instead of a private one")
    parser.add_argument("--stream", default="tracestream:demo")
    parser.add_argument("--web-port", type=int, default=8000)
    parser.add_argument("--api-port", type=int, default=8001)
    parser.add_argument("--console-port", type=int, default=8686)
    parser.add_argument("--once", action="store_true", help="stop after printing the trace")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    with redis_url(args.redis_url) as url:
        ports = (port_or_free(args.web_port), port_or_free(args.api_port), port_or_free(args.console_port))
        stack = Stack(url, args.stream, *ports)
        try:
            stack.start()
            stack.wait_ready()
            console.print(f"[green]stack ready in {time.monotonic() - started:.1f}s[/]")
            trace_id = drive(stack, 1042)
            show_trace(wait_for_trace(url, args.stream, trace_id))
            print(f"trace_id={trace_id}", flush=True)
            if not args.once:
                where = f"stream {args.stream!r} on {shown_url(url)}"
                console.print(f"shop {stack.web}  inventory {stack.api}  {where}", markup=False)
                show_how_to_explore(stack, url, args.stream, trace_id)
                console.print("[bold]running; Ctrl-C stops every process[/]")
                sys.stdout.flush()
                while True:
                    stack.check_alive()
                    time.sleep(1)
        except KeyboardInterrupt:
            console.print("stopping…")
        finally:
            stack.stop()
            console.print("[dim]all demo processes stopped[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
