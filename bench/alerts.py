"""Alerts evaluated in the stream against the same rules polled every 10 s, in one run.

One private redis-server; a load process writes `--rate` records/s for `--seconds` through the
exporter's writer (20 services, routes, durations, some errors), and every 2 s one trigger record
whose body carries its write time. 200 rules: per service one `match` rule on the trigger text
(cooldown 1s, so every trigger is one firing), and nine that evaluate but never fire (rates,
ratios, latencies, a regex rate, an absence). Side by side:

  a) stream:  `tracestream alerts run` (one process) posting to a local webhook in this process
  b) polling: a process that every 10 s reads what was written since its last poll (XRANGE) and
              evaluates the same rules in memory, as scheduled evaluators do
              (oldest first: read newest first with XREVRANGE, the oldest of 10 s of records at
              10,000/s were trimmed by the stream's 100,000-record cap before it reached them, and it
              missed 9 of 29 triggers)

Reported: write-to-webhook (a) and write-to-detection (b) p50/p99 of the triggers, the stream
runner's lag (newest record written minus the group's last read, sampled each second), and CPU
per record of each evaluator.

Run: .venv/bin/python bench/alerts.py [--rate 20000] [--seconds 60] [--rules 200]
     .venv/bin/python bench/alerts.py --backlog 100000   # one runner alone, catching up: its rate
     (the stream keeps the writer's default 100,000 newest records, so a larger backlog is cut to that)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tracestream.embedded_redis import EmbeddedRedis

SERVICES = 20

LOAD = """
import random, sys, time
from tracestream import schema
from tracestream.exporters import encoding
from tracestream.exporters import RedisStreamLogExporter
from tracestream.settings import Settings
url, stream = sys.argv[1], sys.argv[2]
rate, seconds, services = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
most = int(sys.argv[6]) if len(sys.argv) > 6 else 2**62
writer = RedisStreamLogExporter(Settings.load(environ={}, redis_url=url, stream=stream)).writer
names = [f"s{i}" for i in range(services)]
resources = [encoding.EncodedResource(schema.dump_json({"service.name": name}), name) for name in names]
ids = schema.RecordIds()
rng = random.Random(7)
def row(body, service, severity="INFO", number=9, attributes=None):
    now = time.time_ns()
    trace_id = rng.getrandbits(128) or 1
    return encoding.log_values(ids.next(), now, severity, number, body, resources[service], trace_id,
                             1, 1, "bench", "", attributes or {}, encoding.NO_EXCEPTION)
start = time.monotonic(); written = 0; triggers = 0; batch = 500
while time.monotonic() - start < seconds and written < most:
    rows = []
    for _ in range(batch):
        route = f"/r{rng.randrange(4)}"
        error = rng.random() < 0.02
        rows.append(row(f"GET {route} order {rng.randrange(10**6)} {'declined 42' if error else 'ok'}",
                        rng.randrange(services), "ERROR" if error else "INFO", 17 if error else 9,
                        {"http.route": route, "http.server.duration_ms": rng.uniform(1, 300)}))
    if time.monotonic() - start >= 2 * (triggers + 1):
        triggers += 1
        rows.append(row(f"TRIGGER {time.time_ns()}", triggers % services))
    writer.write_rows(rows); written += len(rows)
    ahead = written / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
print(written, triggers, time.monotonic() - start)
"""

POLLER = """
import json, resource, sys, time
from tracestream.alerts.rules import load_rules
from tracestream.alerts.runner import Replay
from tracestream.connection import connect
from tracestream.alerts.matching import Seen
from tracestream.schema import StreamKeys
url, stream, rules_path = sys.argv[1], sys.argv[2], sys.argv[3]
seconds, every = float(sys.argv[4]), float(sys.argv[5])
rules = load_rules(rules_path); client = connect(url, 30.0, decode=True); key = StreamKeys(stream).logs
replay = Replay(rules, int(time.time() * 1000), step_ms=250)
latencies = []; records = 0; started = time.monotonic()
last = client.xinfo_stream(key)["last-generated-id"] if client.exists(key) else "0-0"
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
while time.monotonic() - started < seconds:
    time.sleep(every)
    seen = len(replay.store.notifications)
    while True:
        page = client.xrange(key, "(" + last, "+", count=10000)
        replay.feed(Seen(entry_id, fields) for entry_id, fields in page)
        records += len(page)
        last = page[-1][0] if page else last
        if len(page) < 10000:
            break
    replay.advance(int(time.time() * 1000))
    for note in replay.store.notifications[seen:]:
        if note["state"] == "firing" and note["rule"].startswith("trigger-"):
            latencies += [time.time() - int(s["body"].split()[1]) / 1e9 for s in note["samples"]]
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
print(json.dumps({"latencies": latencies, "records": records, "cpu": cpu}))
"""


def rule_file(path: Path, hook: str, count: int) -> Path:
    rules: list[dict[str, Any]] = []
    for i in range(SERVICES):
        service = f"s{i}"
        rules.append({"name": f"trigger-{service}", "kind": "match",
                      "filter": {"service": service, "text": "TRIGGER"}, "cooldown": "1s"})  # fmt: skip
        never = 10**9
        errors = {"service": service, "severity": "ERROR"}
        rules += [
            {"name": f"errors-30s-{service}", "kind": "rate", "filter": errors, "window": "30s",
             "above": never},
            {"name": f"errors-5m-{service}", "kind": "rate", "filter": errors, "window": "5m",
             "above": never},
            {"name": f"declined-{service}", "kind": "rate",
             "filter": {"service": service, "regex": "declined [0-9]+"}, "window": "1m", "above": never},
            {"name": f"ratio-r0-{service}", "kind": "ratio", "filter": {"service": service, "route": "/r0"},
             "match": {"severity": "ERROR"}, "above": 0.99, "min_count": never, "window": "1m"},
            {"name": f"ratio-r1-{service}", "kind": "ratio", "filter": {"service": service, "route": "/r1"},
             "match": {"severity": "ERROR"}, "above": 0.99, "min_count": never, "window": "1m"},
            {"name": f"p99-r2-{service}", "kind": "latency", "filter": {"service": service, "route": "/r2"},
             "above": "1h", "window": "1m"},
            {"name": f"p50-r3-{service}", "kind": "latency", "filter": {"service": service, "route": "/r3"},
             "percentile": 50, "above": "1h", "window": "30s"},
            {"name": f"silent-{service}", "kind": "absence", "filter": {"service": service}, "window": "1m"},
            {"name": f"text-{service}", "kind": "rate", "filter": {"service": service, "text": "order 99999"},
             "window": "1m", "above": never},
        ]  # fmt: skip
    for rule in rules:
        rule.setdefault("notify", "hook")
    path.write_text(yaml.safe_dump({"notify": {"hook": {"webhook": hook}}, "rules": rules[:count]}))
    return path


class Hook:
    """Arrival time of every trigger firing, minus the write time its sample carries."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                arrived = time.time()
                if body["state"] == "firing" and body["rule"].startswith("trigger-"):
                    hook.latencies += [arrived - int(s["body"].split()[1]) / 1e9 for s in body["samples"]]
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def lag_sampler(server: EmbeddedRedis, key: str, group: str, stop: threading.Event, out: list[float]) -> None:
    client = server.client()
    while not stop.wait(1.0):
        try:
            newest = int(client.xinfo_stream(key)["last-generated-id"].split("-")[0])
            read = next(g for g in client.xinfo_groups(key) if g["name"] == group)["last-delivered-id"]
        except Exception:
            continue
        out.append(max(0.0, (newest - int(read.split("-")[0])) / 1000))


def quantiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (n={len(ordered)})"


def start_runner(rules: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`tracestream alerts run` as a subprocess, its stderr piped for the start line."""
    command = [str(Path(sys.executable).parent / "tracestream"), "alerts", "run", "--rules", str(rules)]
    return subprocess.Popen([*command, "--claim-idle", "5m"], env=env, stderr=subprocess.PIPE, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument(
        "--poll-every", type=float, default=10.0, help="seconds; 0: no poller (the stream runner alone)"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        metavar="N",
        help="instead: write N records first, then time one runner reading and evaluating them all",
    )
    args = parser.parse_args()
    if args.backlog:
        backlog(args.backlog, args.rules)
        return
    stream = f"bench:{uuid.uuid4().hex[:8]}"
    hook = Hook()
    rules = rule_file(Path(tempfile.mkdtemp()) / "rules.yaml", hook.url, args.rules)
    with EmbeddedRedis() as server:
        env = {**os.environ, "TRACESTREAM_REDIS_URL": server.url, "TRACESTREAM_STREAM": stream}
        runner = start_runner(rules, env)
        assert runner.stderr is not None
        print(runner.stderr.readline().strip(), file=sys.stderr)
        poller = subprocess.Popen(
            [sys.executable, "-c", POLLER, server.url, stream, str(rules),
             str(args.seconds + args.poll_every), str(args.poll_every)],
            stdout=subprocess.PIPE, text=True,
        ) if args.poll_every > 0 else None  # fmt: skip
        time.sleep(1.0)  # both readers in place before the first record
        runner_cpu = cpu_seconds(runner.pid)
        stop = threading.Event()
        lags: list[float] = []
        sampler = threading.Thread(
            target=lag_sampler, args=(server, f"{stream}", "tracestream-alerts", stop, lags), daemon=True
        )
        sampler.start()
        load = subprocess.run(
            [sys.executable, "-c", LOAD, server.url, stream, str(args.rate), str(args.seconds),
             str(SERVICES)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        written, triggers, took = load.stdout.split()
        time.sleep(3.0)  # the last trigger's notification
        stop.set()
        runner_cpu = cpu_seconds(runner.pid) - runner_cpu
        group = next(g for g in server.client().xinfo_groups(stream) if g["name"] == "tracestream-alerts")
        evaluated = int(group["entries-read"])
        runner.terminate()
        runner.wait(30)
        polled = json.loads(poller.communicate()[0]) if poller is not None else None
    records = int(written)
    lag = f"lag max {max(lags, default=0):.2f} s, p50 {statistics.median(lags) if lags else 0:.2f} s"
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"load: {records:,} records in {float(took):.1f} s ({records / float(took):,.0f}/s), "
        f"{triggers} triggers, {args.rules} rules; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"a) stream: write -> webhook {quantiles(hook.latencies)}; {lag}; {evaluated:,} read, "
        f"CPU {runner_cpu / max(1, evaluated) * 1e6:.1f} us/record"
    )
    if polled is not None:
        print(
            f"b) polling every {args.poll_every:g} s: write -> detection {quantiles(polled['latencies'])}; "
            f"{polled['records']:,} read, CPU {polled['cpu'] / max(1, polled['records']) * 1e6:.1f} us/record"
        )


def backlog(records: int, rule_count: int) -> None:
    """How fast one runner evaluates when it has records waiting: nothing else runs meanwhile."""
    stream = f"bench:{uuid.uuid4().hex[:8]}"
    hook = Hook()
    rules = rule_file(Path(tempfile.mkdtemp()) / "rules.yaml", hook.url, rule_count)
    with EmbeddedRedis() as server:
        client = server.client()
        subprocess.run(
            [sys.executable, "-c", LOAD, server.url, stream, "1000000000", "3600", str(SERVICES),
             str(records)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        written = client.xlen(stream)
        client.xgroup_create(stream, "tracestream-alerts", id="0")  # the runner reads from the start
        env = {**os.environ, "TRACESTREAM_REDIS_URL": server.url, "TRACESTREAM_STREAM": stream}
        runner = start_runner(rules, env)
        assert runner.stderr is not None
        runner.stderr.readline()
        started, cpu = time.monotonic(), cpu_seconds(runner.pid)
        while True:
            group = next(g for g in client.xinfo_groups(stream) if g["name"] == "tracestream-alerts")
            if group["lag"] == 0 and group["pending"] == 0:
                break
            time.sleep(0.02)
        took, cpu = time.monotonic() - started, cpu_seconds(runner.pid) - cpu
        runner.terminate()
        runner.wait(30)
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"backlog: {written:,} records, {rule_count} rules, read and evaluated by one runner in {took:.1f} s "
        f"({written / took:,.0f}/s), CPU {cpu / written * 1e6:.1f} us/record "
        f"({1e6 / (cpu / written * 1e6):,.0f} records per CPU-second); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
