"""Secret scrubbing cost per log line, at first sight and once the text has been seen.

The lines are tests/corpus/ordinary.txt (clean lines, some mentioning trigger words such as
`session`, `token_count` or a URL, so those run their rules). For first sight each line is
made unique with a suffix; for "seen before" the same lines come round again. "In batches"
is first sight through `scrub_texts`, 4096 lines a call, as the export worker scrubs them.
The last line does the same for plain lines without trigger words, as most log lines are
(`order 17 shipped to warehouse-3`, each unique).

Run: .venv/bin/python bench/scrub_cost.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tracestream.scrubbing import Scrubber

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "ordinary.txt"


def per_line(scrubber: Scrubber, texts: list[str]) -> float:
    started = time.perf_counter()
    for text in texts:
        scrubber.scrub_text(text)
    return (time.perf_counter() - started) / len(texts) * 1e6


def per_line_in_batches(scrubber: Scrubber, texts: list[str], size: int = 4096) -> float:
    started = time.perf_counter()
    for start in range(0, len(texts), size):
        scrubber.scrub_texts(texts[start : start + size])
    return (time.perf_counter() - started) / len(texts) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    lines = [line for line in CORPUS.read_text().splitlines() if line and not line.startswith("#")]
    scrubber = Scrubber()
    first = per_line(scrubber, [f"{line} #{i}" for i in range(args.repeat) for line in lines])
    again = per_line(scrubber, lines * args.repeat)
    batched = per_line_in_batches(Scrubber(), [f"{line} #{i}" for i in range(args.repeat) for line in lines])
    print(f"$ python bench/scrub_cost.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"  {len(lines)} ordinary lines x {args.repeat}: first sight {first:.2f} us per line,", end=" ")
    print(f"seen before {again:.2f} us, first sight in batches {batched:.2f} us")
    plain = [f"order {i} shipped to warehouse-{i % 7}" for i in range(len(lines) * args.repeat)]
    alone, together = per_line(Scrubber(), plain), per_line_in_batches(Scrubber(), plain)
    print(f"  {len(plain)} plain lines: first sight {alone:.2f} us per line, in batches {together:.2f} us")


if __name__ == "__main__":
    main()
