"""Logging through a Redis outage: 5,000 records/s for 60 s, Redis killed (-9) for the middle 30 s,
or with --freeze stopped (SIGSTOP: it takes connections and answers nothing) and continued.

Contenders, each in a fresh process against the same private redis-server (AOF with
fsync always, so Redis itself loses nothing it acknowledged):

  a) tracestream as configured by default: bounded queue, then the on-disk spool
  b) tracestream with the spool turned off (TRACESTREAM_SPOOL_MAX_BYTES=0): the queue alone

Reported per contender: records lost (counted by record number in the stream), the app
thread's `logger.info` p99 and max during the outage, peak extra RSS over the warmed-up
process, and the time from Redis's return until the spool is drained. Then the next process
starts on the same destination and spool directory (as after a deploy), replays whatever
it finds, and the stream's entries are counted by record id: duplicates must be 0.

Run: .venv/bin/python bench/outage.py [--quick] [--freeze] [--rate 5000] [--seconds 60] [--outage 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import redis

from tracestream.embedded_redis import EmbeddedRedis

STREAM = "bench:outage"
CONTENDERS = {
    "a": ("tracestream, queue + spool (default)", {}),
    "b": ("tracestream, queue only (spool off)", {"TRACESTREAM_SPOOL_MAX_BYTES": "0"}),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(rate: float, seconds: float, down_at: float, up_at: float) -> None:
    """The application: logs at `rate`, timing every call; wall-clock times come from the parent."""
    import logging

    import tracestream

    telemetry = tracestream.configure(service_name="bench", traces_exporter="none", max_entries=0)
    queue = telemetry.log_processors[0].queue
    logger = logging.getLogger("bench.app")
    for i in range(2000):  # warm up imports, caches and the connection before the baseline
        logger.info("warmup %d", i)
    telemetry.force_flush(10)
    baseline = _rss_bytes()
    peak = [baseline]
    drained_at: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _rss_bytes())
            status = queue.status()
            if not drained_at and time.time() > up_at and status["spooled"] == status["replayed"]:
                drained_at.append(time.time())

    threading.Thread(target=watch, daemon=True).start()
    outage: list[int] = []
    other: list[int] = []
    clock = time.perf_counter_ns
    start = time.time()
    count = int(rate * seconds)
    for i in range(count):
        due = start + i / rate
        while (ahead := due - time.time()) > 0:
            time.sleep(min(ahead, 0.001))
        began = clock()
        logger.info("order %d shipped", i)
        took = clock() - began
        (outage if down_at <= time.time() < up_at else other).append(took)
    flushed = telemetry.force_flush(60)
    wait_until = time.time() + 60
    while not drained_at and time.time() < wait_until:
        time.sleep(0.05)
    done.set()
    outage.sort()
    status = queue.status()
    print(
        json.dumps(
            {
                "logged": count,
                "flushed": flushed,
                "outage_p99_us": outage[int(len(outage) * 0.99)] / 1000 if outage else 0,
                "outage_max_us": outage[-1] / 1000 if outage else 0,
                "outage_calls": len(outage),
                "peak_extra_rss_mb": (peak[0] - baseline) / 2**20,
                "drain_s": drained_at[0] - up_at if drained_at else None,
                **status,
            }
        )
    )


def next_process() -> None:
    """The process after: it only replays what the spool holds for this destination."""
    import tracestream

    telemetry = tracestream.configure(service_name="bench", traces_exporter="none", max_entries=0)
    telemetry.force_flush(60)
    print(json.dumps(telemetry.log_processors[0].queue.status()))


def run(name: str, args: argparse.Namespace, server: EmbeddedRedis) -> dict[str, float]:
    client = redis.Redis(host="127.0.0.1", port=server.port)
    client.delete(STREAM)
    with tempfile.TemporaryDirectory(prefix="tracestream-bench-spool-") as spool:
        begin = time.time() + 2.0  # the child's warm-up
        down_at = begin + (args.seconds - args.outage) / 2
        up_at = down_at + args.outage
        env = {
            **os.environ,
            "TRACESTREAM_REDIS_URL": server.url,
            "TRACESTREAM_STREAM": STREAM,
            "TRACESTREAM_SPOOL_DIR": spool,
            "TRACESTREAM_REDIS_TIMEOUT": "1s",
            **CONTENDERS[name][1],
        }
        command = [
            sys.executable,
            __file__,
            "--child",
            "--rate",
            str(args.rate),
            "--seconds",
            str(args.seconds),
        ]
        command += ["--down-at", str(down_at), "--up-at", str(up_at)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(max(0.0, down_at - time.time()))
        assert server.process is not None
        if args.freeze:  # every call waits out the Redis timeout
            os.kill(server.process.pid, signal.SIGSTOP)
            time.sleep(max(0.0, up_at - time.time()))
            os.kill(server.process.pid, signal.SIGCONT)
        else:
            server.process.kill()  # kill -9: no goodbye to clients
            server.process.wait()
            server.process = None
            time.sleep(max(0.0, up_at - time.time()))
            server.start()
        out, _ = process.communicate(timeout=args.seconds + 180)
        result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        after = subprocess.run(
            [sys.executable, __file__, "--next"], env=env, capture_output=True, text=True, timeout=120
        )
        result["next_replayed"] = json.loads(after.stdout.strip().splitlines()[-1])["replayed"]
    client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
    orders = [fields for _, fields in client.xrange(STREAM) if fields["body"].startswith("order ")]
    numbers = {int(fields["body"].split()[1]) for fields in orders}
    result["lost"] = result["logged"] - len(numbers)
    result["duplicates"] = len(orders) - len({fields["rid"] for fields in orders})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="12 s with a 6 s outage")
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--outage", type=float, default=30)
    parser.add_argument("--freeze", action="store_true", help="stop Redis (SIGSTOP) instead of killing it")
    parser.add_argument("--contenders", default="ab")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--next", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--down-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--up-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.rate, args.seconds, args.down_at, args.up_at)
        return
    if args.next:
        next_process()
        return
    if args.quick:
        args.seconds, args.outage = 12.0, 6.0

    results = {}
    with EmbeddedRedis(extra_args=["--appendonly", "yes", "--appendfsync", "always"]) as server:
        for name in args.contenders:
            results[name] = run(name, args, server)

    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    how = "frozen (SIGSTOP)" if args.freeze else "killed (-9)"
    print(f"{args.rate:.0f} records/s for {args.seconds:.0f} s, Redis {how} for {args.outage:.0f} s")
    for name, r in results.items():
        drain = f"{r['drain_s']:.1f} s" if r["drain_s"] is not None else "n/a"
        print(
            f"  {name}) {CONTENDERS[name][0]:38s} lost {r['lost']:>7,.0f} of {r['logged']:,.0f}"
            f"   (dropped {r['dropped']:,.0f})   outage logger.info p99 {r['outage_p99_us']:.0f} us"
            f" max {r['outage_max_us'] / 1000:.1f} ms   peak extra RSS {r['peak_extra_rss_mb']:.1f} MB"
            f"   spooled {r['spooled']:,.0f}   drain after Redis returns {drain}"
            f"   next process: replayed {r['next_replayed']:,.0f}, duplicate entries {r['duplicates']:,.0f}"
        )
    print(
        "  targets: lost 0; outage p99 <= 1000 us; peak extra RSS <= 50 MB;"
        " 0 duplicate entries after the next process starts"
    )


if __name__ == "__main__":
    main()
