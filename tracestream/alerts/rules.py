"""Alert rules from a YAML file: validated whole, so a mistake is one line naming the rule and field.

Filters are the query API's (`tracestream.query.Query`); `route` and `task` are shorthands for
the attributes request and task records carry. Durations are written like the CLI's `--since`.
Webhook URLs may hold credentials: no error message ever repeats one.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tracestream.query import Query, QueryError
from tracestream.settings import PERCENT_ENCODING_HINT, installing, parse_duration, password_not_encoded

KINDS = ("match", "rate", "ratio", "absence", "latency", "new_issue")
ROUTE_ATTRIBUTE = "http.route"
TASK_ATTRIBUTE = "celery.task.name"
# Request and task records carry their duration in milliseconds under one of these.
DURATION_ATTRIBUTES = ("http.server.duration_ms", "celery.task.runtime_ms")
FILTER_KEYS = ("service", "severity", "text", "regex", "attribute", "route", "task")
DEFAULT_REPEAT_MS = 4 * 3600_000
DEFAULT_MATCH_COOLDOWN_MS = 60_000
# A window is counted in this many buckets, none shorter than BUCKET_FLOOR_MS: it slides in steps
# of 1/20 of its length, and reading it costs 20 keys whatever its length.
BUCKETS_PER_WINDOW = 20
BUCKET_FLOOR_MS = 100
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RULE_KEYS = {
    "common": {"name", "kind", "filter", "for", "repeat", "cooldown", "notify"},
    "match": set(),
    "rate": {"window", "above"},
    "ratio": {"window", "above", "match", "min_count"},
    "absence": {"window"},
    "latency": {"window", "above", "percentile", "min_count"},
    "new_issue": set(),
}
# Error issues are grouped records: a new_issue rule can only pick them by service.
ISSUE_FILTER_KEYS = ("service",)


class RuleError(ValueError):
    """A rule file that cannot be used; the message names the rule (or target) and the field."""

    rule_index: int | None = None  # the rule it is about, by its place in `rules`


@dataclass(frozen=True)
class Target:
    """Where notifications go: a generic JSON webhook or a Slack-compatible one."""

    name: str
    url: str
    slack: bool = False

    @property
    def shown_url(self) -> str:
        return mask_url(self.url)


def mask_url(url: str) -> str:
    """Scheme, host and port only: credentials hide in userinfo, paths (Slack) and query strings."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    hidden = "/***" if (parts.path.strip("/") or parts.query or parts.username) else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    filter: Query
    notify: tuple[str, ...]
    window_ms: int = 0
    above: float = 0.0
    for_ms: int = 0
    repeat_ms: int = DEFAULT_REPEAT_MS
    cooldown_ms: int = 0
    match: Query | None = None  # ratio: which of the filtered records count as matching
    min_count: int = 1
    percentile: float = 99.0
    filter_params: dict[str, str | list[str]] = field(default_factory=dict)

    @cached_property
    def bucket_ms(self) -> int:
        return max(BUCKET_FLOOR_MS, math.ceil(self.window_ms / BUCKETS_PER_WINDOW))

    def buckets(self, now_ms: int) -> range:
        """The buckets the window ending at `now_ms` covers."""
        last = now_ms // self.bucket_ms
        return range(last - math.ceil(self.window_ms / self.bucket_ms) + 1, last + 1)

    def describe(self) -> str:
        """The condition in words, for notifications."""
        window = format_ms(self.window_ms)
        if self.kind == "match":
            return "a matching record"
        if self.kind == "rate":
            return f"more than {self.above:g} matching records in {window}"
        if self.kind == "ratio":
            return f"matching/total above {self.above:g} in {window} (at least {self.min_count} records)"
        if self.kind == "absence":
            return f"no matching record for {window}"
        if self.kind == "new_issue":
            of = f" of {', '.join(self.filter.services)}" if self.filter.services else ""
            return f"a new error issue{of}, or one that regresses"
        return f"p{self.percentile:g} duration above {self.above:g} ms in {window}"


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    targets: Mapping[str, Target]
    console_url: str = ""


def counted(count: int, noun: str) -> str:
    """`1 rule`, `2 rules`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _article(word: str) -> str:
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def refuse_windows_shorter_than(rules: RuleSet, every_ms: int, option: str) -> None:
    """A window shorter than the time between two evaluations (`--tick`, a backtest's `--step`) is
    never read whole: records in the part no evaluation covers are never counted, so a rate misses
    them and an absence fires while they arrive."""
    for rule in rules.rules:
        if rule.kind != "new_issue" and rule.window_ms < every_ms:
            field_name = "cooldown" if rule.kind == "match" else "window"
            raise RuleError(
                f"rule {rule.name!r}: field {field_name!r}: {format_ms(rule.window_ms)} is shorter than "
                f"{option} {format_ms(every_ms)}, so records between two evaluations would never be counted"
            )


def format_ms(ms: int) -> str:
    for unit, size in (("h", 3600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rule file; raises `RuleError` (one line) for anything wrong."""
    try:
        import yaml
    except ImportError:
        raise RuleError(f"alert rules need PyYAML: {installing('alerts')}") from None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RuleError(f"cannot read rule file {str(path)!r}: {error}") from None
    loader = yaml.SafeLoader(text)  # what safe_load does, keeping the nodes: they have the lines
    try:
        root = loader.get_single_node()
        _refuse_a_key_written_twice(root, path)  # before merge keys (`<<: *base`) are copied in
        document = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RuleError(
            f"{path}: not valid YAML{where}: {getattr(error, 'problem', None) or error}"
        ) from None
    finally:
        loader.dispose()
    try:
        return parse_rules(document)
    except RuleError as error:
        line = _rule_line(root, error.rule_index)
        raise RuleError(f"{path}{f':{line}' if line else ''}: {error}") from None


def _refuse_a_key_written_twice(node: Any, path: str | Path, visited: set[int] | None = None) -> None:
    """YAML keeps the last of two equal keys in a mapping, without a word: a rule's second
    `above` silently replaced its first. (An alias is visited once: anchors can nest.)"""
    visited = set() if visited is None else visited
    children = getattr(node, "value", None)
    if id(node) in visited or not isinstance(children, list):
        return
    visited.add(id(node))
    seen: set[object] = set()
    for child in children:
        if isinstance(child, tuple):  # a mapping's (key, value)
            key, value = child
            name = getattr(key, "value", None)
            if name in seen:
                raise RuleError(
                    f"{path}:{key.start_mark.line + 1}: key {name!r} written twice in one mapping"
                )
            seen.add(name)
            _refuse_a_key_written_twice(value, path, visited)
        else:
            _refuse_a_key_written_twice(child, path, visited)


def _rule_line(root: Any, index: int | None) -> int | None:
    """The line a rule starts on in the file (a YAML node's mark counts from 0)."""
    if index is None or not isinstance(getattr(root, "value", None), list):
        return None
    for key, value in root.value:
        items = value.value if getattr(key, "value", None) == "rules" else None
        if isinstance(items, list) and index < len(items):
            return int(items[index].start_mark.line) + 1
    return None


def parse_rules(document: object) -> RuleSet:
    if not isinstance(document, Mapping):
        raise RuleError("rule file: expected a mapping with 'notify' and 'rules'")
    unknown = set(document) - {"notify", "rules", "console_url"}
    if unknown:
        raise RuleError(
            f"rule file: unknown key {sorted(map(str, unknown))[0]!r} (expected notify, rules, console_url)"
        )
    targets = _targets(document.get("notify"))
    console_url = document.get("console_url", "")
    if not isinstance(console_url, str) or (console_url and not _is_http_url(console_url)):
        raise RuleError("rule file: field 'console_url': expected an http:// or https:// URL")
    rules = document.get("rules")
    if not isinstance(rules, list) or not rules:
        raise RuleError("rule file: field 'rules': expected a non-empty list of rules")
    parsed: list[Rule] = []
    for index, item in enumerate(rules):
        try:
            rule = _rule(item, index, targets)
            if any(existing.name == rule.name for existing in parsed):
                raise RuleError(f"rule {rule.name!r}: field 'name': used by an earlier rule too")
        except RuleError as error:
            error.rule_index = index
            raise
        parsed.append(rule)
    return RuleSet(tuple(parsed), targets, console_url.rstrip("/"))


def _targets(section: object) -> dict[str, Target]:
    if not isinstance(section, Mapping) or not section:
        raise RuleError("rule file: field 'notify': expected a mapping of target names to {webhook: URL}")
    targets = {}
    for name, spec in section.items():
        where = f"notify {str(name)!r}"
        if (
            not isinstance(spec, Mapping)
            or len(spec) != 1
            or next(iter(spec)) not in ("webhook", "slack_webhook")
        ):
            raise RuleError(f"{where}: expected exactly one of webhook or slack_webhook")
        kind, url = next(iter(spec.items()))
        if not isinstance(url, str):
            raise RuleError(f"{where}: field {kind!r}: expected a URL")
        url = _expand_environment(url, f"{where}: field {kind!r}")
        # The URL itself is never repeated: it may hold credentials.
        if password_not_encoded(url):  # part of the password would be read as the host or port
            raise RuleError(
                f"{where}: field {kind!r}: the host cannot be told from the password: "
                f"{PERCENT_ENCODING_HINT}, and an '@' in the path as %40"
            )
        if not _is_http_url(url):
            raise RuleError(f"{where}: field {kind!r}: expected an http:// or https:// URL")
        targets[str(name)] = Target(str(name), url, slack=kind == "slack_webhook")
    return targets


def _expand_environment(text: str, where: str) -> str:
    """`${NAME}` from the environment, so secrets can stay out of the rule file."""

    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name not in os.environ:
            raise RuleError(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REFERENCE.sub(value, text)


def _is_http_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _rule(item: object, index: int, targets: Mapping[str, Target]) -> Rule:
    if not isinstance(item, Mapping):
        raise RuleError(f"rule #{index + 1}: expected a mapping with name, kind, filter and notify")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "\n\r{}"):
        raise RuleError(f"rule #{index + 1}: field 'name': expected a non-empty name on one line")
    rule = _RuleFields(name, item)
    kind = item.get("kind")
    if kind not in KINDS:
        raise RuleError(f"rule {name!r}: field 'kind': expected one of {', '.join(KINDS)}")
    allowed = _RULE_KEYS["common"] | _RULE_KEYS[kind]
    extra = sorted(str(key) for key in item if key not in allowed)
    if extra:
        raise RuleError(f"rule {name!r}: field {extra[0]!r}: not a field of {_article(kind)} {kind} rule")
    notify = item.get("notify")
    if isinstance(notify, str):
        notify = [notify]
    if not isinstance(notify, list) or not notify:
        raise RuleError(f"rule {name!r}: field 'notify': expected a list of target names")
    for target in notify:
        if target not in targets:
            raise RuleError(f"rule {name!r}: field 'notify': no target named {str(target)!r} under notify")
    windowed = kind not in ("match", "new_issue")
    cooldown_default = 0 if windowed else DEFAULT_MATCH_COOLDOWN_MS
    # A match rule counts its matches in a window of its cooldown.
    cooldown = (
        rule.window("cooldown", cooldown_default)
        if kind == "match"
        else rule.duration("cooldown", cooldown_default)
    )
    params, query = rule.issue_filter() if kind == "new_issue" else rule.filter("filter")
    return Rule(
        name=name,
        kind=kind,
        filter=query,
        notify=tuple(str(target) for target in notify),
        # A match (new_issue) rule stays firing while matches (issues) come less than `cooldown` apart.
        window_ms=rule.window("window", None) if windowed else cooldown,
        above=rule.threshold(kind) if kind in ("rate", "ratio", "latency") else 0.0,
        for_ms=rule.duration("for", 0),
        repeat_ms=rule.duration("repeat", DEFAULT_REPEAT_MS, positive=True),
        cooldown_ms=cooldown if windowed else 0,
        match=rule.filter("match")[1] if kind == "ratio" else None,
        min_count=rule.whole("min_count", 1),
        percentile=rule.percentile(),
        filter_params=params,
    )


class _RuleFields:
    """Reads one rule's fields; every error names the rule and the field."""

    def __init__(self, name: str, item: Mapping[str, Any]) -> None:
        self.name = name
        self.item = item

    def error(self, field_name: str, problem: str) -> RuleError:
        return RuleError(f"rule {self.name!r}: field {field_name!r}: {problem}")

    def duration(self, key: str, default: int | None, positive: bool = False) -> int:
        value = self.item.get(key)
        if value is None:
            if default is None:
                raise self.error(key, "required, a duration such as 30s, 5m or 1h")
            return default
        if _bare_number(value) and float(value) != 0:  # as with --since: 30 could mean seconds or minutes
            raise self.error(key, f"{value!r} needs its unit, as in 30s, 5m or 1h")
        try:
            ms = round(parse_duration(str(value)) * 1000)
        except ValueError as error:
            raise self.error(key, str(error)) from None
        if positive and ms <= 0:
            raise self.error(key, "must be longer than 0")
        return ms

    def window(self, key: str, default: int | None) -> int:
        """A duration a rule counts records over, in buckets no shorter than BUCKET_FLOOR_MS: a
        shorter window would be one bucket that empties as it starts."""
        ms = self.duration(key, default)
        if ms < BUCKET_FLOOR_MS:
            raise self.error(
                key, f"at least {BUCKET_FLOOR_MS}ms: records are counted in {BUCKET_FLOOR_MS}ms steps"
            )
        return ms

    def threshold(self, kind: str) -> float:
        value = self.item.get("above")
        if value is None:
            raise self.error("above", "required, the threshold the value must exceed")
        if kind == "latency":
            if _bare_number(value):
                # the value is in ms, a bare number would read as seconds: 500 meant as 500 ms never fires
                raise self.error("above", f"a duration with its unit, e.g. {value}ms or {value}s")
            return self.duration("above", None, positive=True)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < 0
            or not math.isfinite(value)
        ):
            raise self.error("above", "expected a number from 0 up")
        if kind == "ratio" and value >= 1:
            raise self.error("above", "a ratio threshold is a fraction below 1, e.g. 0.05")
        return float(value)

    def whole(self, key: str, default: int) -> int:
        value = self.item.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(key, "expected a whole number from 1 up")
        return value

    def percentile(self) -> float:
        value = self.item.get("percentile", 99)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
            raise self.error("percentile", "expected a number above 0, up to 100")
        return float(value)

    def issue_filter(self) -> tuple[dict[str, str | list[str]], Query]:
        """A new_issue rule's filter: optional, services only."""
        spec = self.item.get("filter", {})
        if isinstance(spec, Mapping):
            for name in spec:
                if name not in ISSUE_FILTER_KEYS:
                    raise self.error(f"filter.{name}", "a new_issue rule picks issues by service only")
        return self.filter("filter") if spec else ({}, Query())

    def filter(self, key: str) -> tuple[dict[str, str | list[str]], Query]:
        spec = self.item.get(key)
        if spec is None:
            raise self.error(key, "required, e.g. {service: api}; {} matches every record")
        if not isinstance(spec, Mapping):
            raise self.error(key, "expected a mapping such as {service: api, severity: ERROR}")
        params: dict[str, str | list[str]] = {}
        for name, value in spec.items():
            if name not in FILTER_KEYS:
                raise self.error(f"{key}.{name}", f"not a filter (expected one of {', '.join(FILTER_KEYS)})")
            many = name in ("service", "attribute")
            values = value if isinstance(value, list) and many else [value]
            if not values or not all(
                isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values
            ):
                raise self.error(f"{key}.{name}", "expected text" + (" or a list of text" if many else ""))
            texts = [str(v) for v in values]
            if not all(text.strip() for text in texts):  # read as no filter: every record matched
                raise self.error(f"{key}.{name}", "is empty: leave the key out to match every record")
            params[str(name)] = texts if many else texts[0]
        try:
            return params, _query(params)
        except QueryError as error:
            bad = next(name for name in params if _fails(name, params[name]))
            raise self.error(f"{key}.{bad}", str(error)) from None


def _query(params: Mapping[str, str | list[str]]) -> Query:
    def text(name: str) -> str | None:
        value = params.get(name)
        return value if isinstance(value, str) else None

    def many(name: str) -> list[str]:
        value = params.get(name, [])
        return [value] if isinstance(value, str) else value

    shorthands = [f"{ROUTE_ATTRIBUTE}={text('route')}"] if "route" in params else []
    shorthands += [f"{TASK_ATTRIBUTE}={text('task')}"] if "task" in params else []
    return Query.parse(
        services=many("service"),
        severity=text("severity"),
        text=text("text"),
        regex=text("regex"),
        attributes=[*many("attribute"), *shorthands],
    )


def _bare_number(value: object) -> bool:
    return isinstance(value, (int, float)) or str(value).strip().replace(".", "", 1).isdigit()


def _fails(name: str, value: str | list[str]) -> bool:
    try:
        _query({name: value})
    except QueryError:
        return True
    return False
