"""`tracestream scrub-check FILE`: what scrubbing would redact in a sample, line by line.

It uses the same rules as the exporters (the TRACESTREAM_SCRUB_* settings in this
environment, plus any given here), so a team can try new keys, patterns and allow-lists
on real lines before deploying them. The secrets themselves are never printed: only the
line with each one replaced, and the kind and position of each finding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tracestream.cli.common import UsageError, add_command, print_json
from tracestream.scrubbing import scrubber_for
from tracestream.settings import Settings
from tracestream.terminal_text import visible

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "scrub-check",
        run,
        "show what secret scrubbing would redact in a sample file",
        "Show, line by line, what scrubbing would redact in FILE ('-' for stdin), with the rules "
        "services use (TRACESTREAM_SCRUB_* settings) plus the options below.",
    )
    parser.add_argument("file", metavar="FILE", help="sample lines, or - for stdin")
    parser.add_argument("--key", action="append", default=[], help="also treat this key name as sensitive")
    parser.add_argument("--pattern", action="append", default=[], help="also redact this regex")
    parser.add_argument("--allow-key", action="append", default=[], help="never redact under this key")
    parser.add_argument(
        "--allow-value", action="append", default=[], help="never redact values matching this regex"
    )
    parser.add_argument("--all", action="store_true", help="also print lines with nothing to redact")


def run(args: argparse.Namespace) -> int:
    base = Settings.load()
    config = Settings.load(
        scrub=True,
        scrub_keys=[*base.scrub_keys, *args.key],
        scrub_patterns=[*base.scrub_patterns, *args.pattern],
        scrub_allow_keys=[*base.scrub_allow_keys, *args.allow_key],
        scrub_allow_values=[*base.scrub_allow_values, *args.allow_value],
    )
    try:
        scrubber = scrubber_for(config)
    except ValueError as error:  # a key with no letters or digits
        raise UsageError(str(error)) from None
    assert scrubber is not None
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8", "replace")
    except OSError as error:
        raise UsageError(f"cannot read {args.file}: {error.strerror}") from None
    lines = text.splitlines()
    redacted = 0
    for number, line in enumerate(lines, 1):
        findings = scrubber.findings(line)
        redacted += bool(findings)
        if not findings and not args.all:
            continue
        scrubbed = scrubber.scrub_text(line)
        if args.json:
            found = [{"kind": f.kind, "start": f.start, "end": f.end} for f in findings]
            record = {"line": number, "findings": found, "scrubbed": scrubbed}
            print_json(record)
        else:
            kinds = ", ".join(f"{f.kind} at {f.start}-{f.end}" for f in findings) or "nothing"
            sys.stdout.write(f"{number}: {kinds}\n    {visible(scrubbed)}\n")
    if not args.json:
        sys.stdout.write(f"{redacted} of {len(lines)} lines would be redacted\n")
    return 0
