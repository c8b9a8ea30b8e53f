"""Secret scrubbing cost per log line, at first sight and once the text has been seen.

The lines are tests/corpus/ordinary.txt (clean lines, some mentioning trigger words such as
`session`, `token_count` or a URL, so those run their rules). For first sight each line is
made unique with a suffix; for "seen before" the same lines come round again. "In batches"
is first sight through `scrub_texts`, 4096 lines a call, as the export worker scrubs them.
The last line does the same for plain lines without trigger words, as most log lines are
(`order 17 shipped to warehouse-3`, each unique).

Each figure is the best of --rounds rounds of CPU time, so other work on a shared machine
moves it little. `--baseline FILE` measures another version of tracestream/scrubbing.py in
the same rounds, interleaved, for a before/after comparison:

    git show HEAD~1:tracestream/scrubbing.py > /tmp/scrubbing_before.py
    .venv/bin/python bench/scrub_cost.py --baseline /tmp/scrubbing_before.py

Run: .venv/bin/python bench/scrub_cost.py [--repeat 40] [--rounds 15] [--baseline FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import tracestream.scrubbing

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "ordinary.txt"
BATCH = 4096


def per_line(scrubber: Any, texts: list[str]) -> float:
    started = time.process_time()
    for text in texts:
        scrubber.scrub_text(text)
    return (time.process_time() - started) / len(texts) * 1e6


def per_line_in_batches(scrubber: Any, texts: list[str]) -> float:
    started = time.process_time()
    for start in range(0, len(texts), BATCH):
        scrubber.scrub_texts(texts[start : start + BATCH])
    return (time.process_time() - started) / len(texts) * 1e6


def measurements(lines: list[str], repeat: int) -> dict[str, Callable[[ModuleType, int], float]]:
    """Name -> one round's cost per line, in µs, for a scrubbing module; `turn` keeps texts unseen."""

    def first(module: ModuleType, turn: int) -> float:
        return per_line(module.Scrubber(), [f"{line} #{i}.{turn}" for i in range(repeat) for line in lines])

    def again(module: ModuleType, turn: int) -> float:
        scrubber = module.Scrubber()
        per_line(scrubber, lines)
        return per_line(scrubber, lines * repeat)

    def batched(module: ModuleType, turn: int) -> float:
        texts = [f"{line} #{i}.{turn}" for i in range(repeat) for line in lines]
        return per_line_in_batches(module.Scrubber(), texts)

    def plain(turn: int) -> list[str]:
        return [f"order {i} shipped to warehouse-{i % 7} #{turn}" for i in range(len(lines) * repeat)]

    def plain_first(module: ModuleType, turn: int) -> float:
        return per_line(module.Scrubber(), plain(turn))

    def plain_batched(module: ModuleType, turn: int) -> float:
        return per_line_in_batches(module.Scrubber(), plain(turn))

    return {
        "ordinary, first sight": first,
        "ordinary, seen before": again,
        "ordinary, first sight in batches": batched,
        "plain, first sight": plain_first,
        "plain, first sight in batches": plain_batched,
    }


def load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("scrubbing_baseline", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=40, help="copies of the corpus per round")
    parser.add_argument("--rounds", type=int, default=15, help="the best round counts")
    parser.add_argument("--baseline", metavar="FILE", help="another scrubbing.py to compare with")
    args = parser.parse_args()
    lines = [line for line in CORPUS.read_text().splitlines() if line and not line.startswith("#")]
    versions = {"this": tracestream.scrubbing} | ({"baseline": load(args.baseline)} if args.baseline else {})
    best: dict[tuple[str, str], float] = {}
    for turn in range(args.rounds):
        for name, measure in measurements(lines, args.repeat).items():
            for version, module in versions.items():
                cost = measure(module, turn)
                best[name, version] = min(best.get((name, version), cost), cost)
    print(f"$ python bench/scrub_cost.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"  {len(lines)} ordinary lines x {args.repeat}, {len(lines) * args.repeat} plain lines; "
          f"best of {args.rounds} rounds, CPU µs per line")  # fmt: skip
    for name in measurements(lines, args.repeat):
        figures = "  ".join(f"{version} {best[name, version]:.2f}" for version in versions)
        print(f"  {name:34} {figures}")


if __name__ == "__main__":
    main()
