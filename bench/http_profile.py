"""Where one contender's CPU per request goes, in process: by package, then the costliest functions.

The same app and driver as `http_inprocess.py`, profiled with yappi on the CPU clock across
every thread (the export thread included) when yappi is importable, else with cProfile on
the request thread only. A profiler inflates small calls, so read the shares, not the µs.

Run: .venv/bin/python bench/http_profile.py fastapi tracestream [--requests 2000] [--top 25]
(yappi need not be in the venv: PYTHONPATH=/some/dir/with/yappi works; the tracestream
contender needs TRACESTREAM_REDIS_URL pointing at a Redis that is not 6379's.)
"""

from __future__ import annotations

import cProfile
import pstats
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import http_inprocess

__all__ = ["profile"]

# (own seconds, calls, where, function) per function, whichever profiler took it.
Row = tuple[float, int, str, str]
AREAS = (
    ("tracestream", "tracestream/"),
    ("contrib instrumentation", "opentelemetry/instrumentation/"),
    ("contrib util/semconv", "opentelemetry/util/"),
    ("OTel SDK", "opentelemetry/sdk/"),
    ("OTel API", "opentelemetry/"),
    ("redis-py", "redis/"),
    ("FastAPI/Starlette", "starlette/"),
    ("FastAPI/Starlette", "fastapi/"),
    ("pydantic", "pydantic"),
    ("Django", "django/"),
    ("asyncio", "asyncio/"),
    ("threading/queue", "threading.py"),
    ("threading/queue", "queue.py"),
)


def area(where: str) -> str:
    for name, marker in AREAS:
        if marker in where:
            return name
    return "other (stdlib, builtins)"


def _yappi_rows(run: Callable[[], None]) -> list[Row] | None:
    try:
        import yappi
    except ImportError:
        return None
    yappi.set_clock_type("cpu")
    yappi.start(builtins=True)
    run()
    yappi.stop()
    rows = [(stat.tsub, stat.ncall, stat.module, stat.name) for stat in yappi.get_func_stats()]
    yappi.clear_stats()
    return rows


def _cprofile_rows(run: Callable[[], None]) -> list[Row]:
    profiler = cProfile.Profile(time.process_time)
    profiler.runcall(run)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return [(tt, nc, where, name) for (where, _, name), (_, nc, tt, _, _) in stats.items()]


def profile(framework: str, mode: str, requests: int, warmup: int) -> tuple[str, list[Row]]:
    drive, flush = http_inprocess.warmed_up(framework, mode, warmup)

    def run() -> None:
        drive(requests)
        flush()

    rows = _yappi_rows(run)
    return (
        ("yappi, CPU clock, all threads", rows)
        if rows is not None
        else ("cProfile, one thread", _cprofile_rows(run))
    )


def report(rows: Iterable[Row], requests: int, top: int) -> None:
    rows = list(rows)
    total = sum(row[0] for row in rows)
    by_area: dict[str, float] = defaultdict(float)
    for own, _, where, _ in rows:
        by_area[area(where)] += own
    print(f"{'area':28} {'µs/request':>10} {'share':>6}")
    for name, seconds in sorted(by_area.items(), key=lambda item: -item[1]):
        print(f"{name:28} {seconds / requests * 1e6:10.1f} {seconds / total:6.1%}")
    print(f"{'total (profiled)':28} {total / requests * 1e6:10.1f}\n")
    print(f"{'own µs/req':>10} {'calls/req':>9}  function")
    for own, calls, where, name in sorted(rows, key=lambda row: -row[0])[:top]:
        short = where.split("site-packages/")[-1].split("/main/")[-1]
        print(f"{own / requests * 1e6:10.2f} {calls / requests:9.2f}  {name} ({short})")


def main() -> None:
    parser = http_inprocess.contender_arguments(__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    profiler, rows = profile(args.framework, args.mode, args.requests, args.warmup)
    print(f"{args.framework} {args.mode}, {args.requests} requests, {profiler}")
    report(rows, args.requests, args.top)


if __name__ == "__main__":
    main()
