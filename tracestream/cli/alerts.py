"""`tracestream alerts check|test|run|status`: validate, backtest, run and inspect alert rules."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from tracestream.alerts.delivery import DeliverySettings, failed_deliveries
from tracestream.alerts.rules import (
    RuleError,
    RuleSet,
    counted,
    format_ms,
    load_rules,
    refuse_windows_shorter_than,
)
from tracestream.alerts.runner import DEFAULT_GROUP, AlertRunner, RunSettings, backtest
from tracestream.alerts.store import home_stream, rule_states
from tracestream.cli.common import (
    TIME_FORMS,
    ArgumentParser,
    UsageError,
    add_command,
    duration_up_to,
    print_json,
    reader,
    settings,
    since_argument,
    time_argument,
    whole_number,
)
from tracestream.connection import Tls, node_for
from tracestream.settings import CONSOLE_URL_ENV
from tracestream.timeparse import iso_utc, parse_time_ms

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers

LONGEST = 30 * 86400.0


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "alerts",
        help="alert rules evaluated as records arrive: check, backtest, run, status",
        description="Alert rules from a YAML file (docs/alerts.md): `check` validates them, `test` "
        "backtests them over stored records, `run` evaluates them live through a consumer group, `status` "
        "shows each rule's state and the deliveries given up on.",
    )
    commands = parser.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    rules_file = ArgumentParser(add_help=False)
    rules_file.add_argument(
        "--console-url",
        default=os.environ.get(CONSOLE_URL_ENV, ""),
        metavar="URL",
        help=f"base URL for trace and search links (default: the file's console_url, or ${CONSOLE_URL_ENV})",
    )
    check = add_command(
        commands, "check", run_check, "validate a rule file", "Exit 2 naming the first bad rule and field."
    )
    check.add_argument("file", metavar="FILE")
    test = add_command(
        commands, "test", run_test, "backtest rules over stored records",
        "Replay the stored records through the rules and print when each would have fired and resolved. "
        "Writes nothing.", rules_file,
    )  # fmt: skip
    test.add_argument("file", metavar="FILE")
    test.add_argument(
        "--since",
        type=since_argument,
        default="24h",
        metavar="TIME",
        help=f"start: {TIME_FORMS} (default 24h)",
    )
    test.add_argument("--until", type=time_argument, metavar="TIME", help=f"end: {TIME_FORMS} (default now)")
    test.add_argument(
        "--step",
        type=duration_up_to(3600.0),
        default=1.0,
        metavar="DURATION",
        help="evaluation step (default 1s)",
    )
    add_command(
        commands, "status", run_status, "rule states and failed deliveries",
        "Each rule's stored state (ok, pending, firing) and the newest notifications given up on.",
    )  # fmt: skip
    live = add_command(
        commands, "run", run_live, "evaluate rules live and send notifications",
        "Read records through a consumer group, evaluate the rules every tick and deliver notifications. "
        "Run several with the same group to share the work; each notification is sent once.", rules_file,
    )  # fmt: skip
    live.add_argument("--rules", required=True, metavar="FILE", help="the rule file")
    live.add_argument("--group", default=DEFAULT_GROUP, help=f"consumer group (default {DEFAULT_GROUP})")
    live.add_argument("--consumer", help="consumer name in the group (default: host-pid)")
    live.add_argument(
        "--tick",
        type=duration_up_to(60.0),
        default=0.25,
        metavar="DURATION",
        help="evaluate every (default 250ms)",
    )
    live.add_argument(
        "--claim-idle",
        type=duration_up_to(LONGEST),
        default=30.0,
        metavar="DURATION",
        help="take over records and notifications a dead runner left this long (default 30s)",
    )
    live.add_argument(
        "--max-attempts",
        type=whole_number(1, 1000),
        default=8,
        metavar="N",
        help="per notification (default 8)",
    )
    live.add_argument(
        "--first-backoff",
        type=duration_up_to(LONGEST),
        default=1.0,
        metavar="DURATION",
        help="wait before the first retry, doubled each time up to 5m (default 1s)",
    )


def run_status(args: argparse.Namespace) -> int:
    config = settings(args)
    stream = home_stream(config.stream, config.redis_cluster)
    client = node_for(reader(args), stream)
    for name, state in rule_states(client, stream).items():
        status, change = state.get("status") or "ok", state.get("seq", "0")
        if args.json:  # a rule that never changed state is "ok" at change 0, as the text says
            print_json({"rule": name, **state, "status": status, "seq": change})
            continue
        since = state.get("fired_ms") if status == "firing" else state.get("resolved_ms")
        when = f" since {iso_utc(int(since) * 1_000_000)}" if since and since != "0" else ""
        print(f"{name}: {status}{when} (change {change})")
    failed = failed_deliveries(client, stream)
    for delivery in failed:
        if args.json:
            print_json({"failed_delivery": delivery})
        else:
            print(
                f"failed: {delivery['id']} to {delivery['target']} ({delivery['url'] or 'no URL'}): "
                f"{delivery['error']} after {delivery['attempt']} attempts"
            )
    return 0


def _rules(path: str, console_url: str = "") -> RuleSet:
    try:
        rules = load_rules(path)
    except RuleError as error:
        raise UsageError(str(error)) from None
    if console_url:
        rules = dataclasses.replace(rules, console_url=console_url.rstrip("/"))
    return rules


def _evaluated_every(rules: RuleSet, path: str, seconds: float, option: str) -> None:
    """Refuse, before touching Redis, a rule whose window the evaluations would step over."""
    try:
        refuse_windows_shorter_than(rules, round(seconds * 1000), option)
    except RuleError as error:
        raise UsageError(f"{path}: {error}") from None


def run_check(args: argparse.Namespace) -> int:
    rules = _rules(args.file)
    for rule in rules.rules:
        window = f" over {format_ms(rule.window_ms)}" if rule.kind != "match" else ""
        if args.json:
            print_json(
                {"rule": rule.name, "kind": rule.kind, "condition": rule.describe(), "notify": rule.notify}
            )
        else:
            targets = ", ".join(rule.notify)
            print(f"{rule.name}: {rule.kind}{window}, fires on {rule.describe()}; notifies {targets}")
    if not args.json:
        print(f"{counted(len(rules.rules), 'rule')} OK", file=sys.stderr)
    return 0


def run_test(args: argparse.Namespace) -> int:
    rules = _rules(args.file, args.console_url)
    _evaluated_every(rules, args.file, args.step, "--step")
    now_ms = int(time.time() * 1000)
    try:
        since_ms = parse_time_ms(args.since, now_ms)
        until_ms = parse_time_ms(args.until, now_ms) if args.until else now_ms
    except ValueError as error:
        raise UsageError(str(error)) from None
    if until_ms <= since_ms:
        raise UsageError("--until must be after --since")
    found = backtest(reader(args), settings(args).stream, rules, since_ms, until_ms, round(args.step * 1000))
    for payload in found:
        if args.json:
            print_json(payload)
        else:
            repeat = " (repeat)" if payload["repeat"] else ""
            print(f"{payload['at']} {payload['state']}{repeat} {payload['rule']}: value {payload['value']:g}")
    print(f"{counted(len(found), 'notification')} from {counted(len(rules.rules), 'rule')}", file=sys.stderr)
    return 0


def run_live(args: argparse.Namespace) -> int:
    rules = _rules(args.rules, args.console_url)
    _evaluated_every(rules, args.rules, args.tick, "--tick")
    config = settings(args)
    delivery = DeliverySettings(
        max_attempts=args.max_attempts, first_backoff=args.first_backoff, claim_idle=args.claim_idle
    )
    options = {"consumer": args.consumer} if args.consumer else {}
    run_settings = RunSettings(
        redis_url=config.redis_url,
        stream=config.stream,
        group=args.group,
        tick=args.tick,
        claim_idle=args.claim_idle,
        delivery=delivery,
        cluster=config.redis_cluster,
        tls=Tls.of(config),
        **options,
    )
    runner = AlertRunner(rules, run_settings, report=_report)

    def stop(signum: int, frame: object) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _collect_garbage_less_often()
    runner.run()
    return 0


def _collect_garbage_less_often() -> None:
    """A batch of thousands of records makes a few containers per record, all freed by reference
    counting; at the default threshold (700 allocations) the cycle collector would run dozens of
    times a batch, each time walking the process's live objects: a third of the runner's CPU per
    record (bench/alerts.py --backlog). What startup loaded is frozen out of those walks, and
    cycles are still collected, every 50,000 allocations."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _report(line: str) -> None:
    print(f"tracestream alerts: {line}", file=sys.stderr, flush=True)
