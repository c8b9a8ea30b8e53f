"""Static checks for the OpenTelemetry Collector configs in collector-config/.

No Collector binary is needed: each YAML file is parsed and checked for what otelcol-contrib would reject
at startup (dangling references, unknown component types) and for our own rules (memory_limiter first in
every pipeline, nothing secret or environment-specific written inline). The negative tests at the bottom
feed broken configs to the same checkers, so a checker that silently passes everything cannot go unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "collector-config"
CONFIG_FILES = sorted(CONFIG_DIR.glob("*.yaml"))
COMPONENTS_FILE = CONFIG_DIR / "components.txt"
README = CONFIG_DIR / "README.md"

KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")
TOP_LEVEL_KEYS = frozenset((*KINDS, "service"))
SIGNALS = frozenset(("traces", "logs", "metrics", "profiles"))

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
SECRET_ENV_REF = re.compile(r"\$\{env:[A-Za-z_][A-Za-z0-9_]*\}")
ANY_REF = re.compile(r"\$\{[^}]*\}")
BARE_DOLLAR_VAR = re.compile(r"(?<!\$)\$(?!\$)[A-Za-z_]")
COMPONENT_ID = re.compile(r"[a-z][a-z0-9_]*(/[^/\s]+)?")
SECRET_KEY = re.compile(
    r"pass(word|wd)|token|secret|authorization|credential|dsn|(^|[_-])(api[_-]?)?key($|[_-])", re.I
)
NOT_SECRET_KEYS = frozenset(("routing_key",))
ADDRESS_KEY = re.compile(r"(^|_)(endpoint|hostnames?|username|user)$", re.I)
URL_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)


@dataclass(frozen=True)
class Catalog:
    """Component types otelcol-contrib ships, per config section, plus renamed types to steer away from."""

    types: Mapping[str, frozenset[str]]
    deprecated: Mapping[tuple[str, str], str]


def load_catalog(path: Path) -> Catalog:
    """Parse components.txt: `[kind]` sections of type names and a `[deprecated]` kind/old = new section."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
        elif current is None:
            raise ValueError(f"{path.name}: {line!r} comes before any [section]")
        else:
            sections[current].append(line)
    deprecated: dict[tuple[str, str], str] = {}
    for entry in sections.pop("deprecated", []):
        old, new = (part.strip() for part in entry.split("=", 1))
        kind, old_type = old.split("/", 1)
        deprecated[(kind, old_type)] = new
    unknown = set(sections) - set(KINDS)
    if unknown:
        raise ValueError(f"{path.name}: unknown sections {sorted(unknown)}")
    return Catalog(types={kind: frozenset(sections.get(kind, ())) for kind in KINDS}, deprecated=deprecated)


def load_config(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def mapping(value: Any) -> Mapping[str, Any]:
    """The value if it is a mapping, else empty: lets every checker run on malformed input."""
    return value if isinstance(value, Mapping) else {}


def string_list(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def component_type(component_id: str) -> str:
    """`otlp_http/loki` -> `otlp_http`: the type picks the factory, `/loki` only names the instance."""
    return component_id.split("/", 1)[0]


def section_ids(config: Any, kind: str) -> set[str]:
    return {str(key) for key in mapping(mapping(config).get(kind))}


def walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Yield (key path, scalar) per leaf; list items keep their parent's key so key-based rules apply."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, path)
    else:
        yield path, node


def structure_errors(config: Any) -> list[str]:
    """Top-level shape: known sections only, well-formed component ids, a non-empty service.pipelines."""
    if not isinstance(config, Mapping):
        return ["the file is not a YAML mapping"]
    errors = [f"unknown top-level section {key!r}" for key in config if key not in TOP_LEVEL_KEYS]
    for kind in KINDS:
        section = config.get(kind)
        if section is not None and not isinstance(section, Mapping):
            errors.append(f"{kind}: must be a mapping of component id -> settings")
        errors += [
            f"{kind}: malformed component id {cid!r}"
            for cid in section_ids(config, kind)
            if not COMPONENT_ID.fullmatch(cid)
        ]
    if not mapping(mapping(config.get("service")).get("pipelines")):
        errors.append("service.pipelines is missing or empty")
    return errors


def pipeline_errors(config: Any) -> list[str]:
    """Pipelines name only components defined here (by full id) and start with memory_limiter."""
    receivers = section_ids(config, "receivers") | section_ids(config, "connectors")
    processors = section_ids(config, "processors")
    exporters = section_ids(config, "exporters") | section_ids(config, "connectors")
    errors: list[str] = []
    for name, pipeline in mapping(mapping(mapping(config).get("service")).get("pipelines")).items():
        where = f"service.pipelines.{name}"
        if component_type(str(name)) not in SIGNALS:
            errors.append(f"{where}: {name!r} does not start with one of {sorted(SIGNALS)}")
        spec = mapping(pipeline)
        for role, defined in (("receivers", receivers), ("processors", processors), ("exporters", exporters)):
            errors += [
                f"{where}: {role[:-1]} {cid!r} is not defined"
                for cid in string_list(spec.get(role))
                if cid not in defined
            ]
        for role in ("receivers", "exporters"):
            if not string_list(spec.get(role)):
                errors.append(f"{where}: has no {role}")
        first = string_list(spec.get("processors"))[:1]
        if [component_type(cid) for cid in first] != ["memory_limiter"]:
            errors.append(f"{where}: memory_limiter must be the first processor, got {first}")
    return errors


def wiring_errors(config: Any) -> list[str]:
    """No dead components, and every extension that is enabled or used as queue storage is defined/enabled."""
    service = mapping(mapping(config).get("service"))
    enabled = set(string_list(service.get("extensions")))
    defined_extensions = section_ids(config, "extensions")
    errors = [f"service.extensions: {cid!r} is not defined" for cid in sorted(enabled - defined_extensions)]
    errors += [
        f"extensions.{cid} is defined but not enabled in service.extensions"
        for cid in sorted(defined_extensions - enabled)
    ]
    used: set[str] = set()
    for pipeline in mapping(service.get("pipelines")).values():
        for role in ("receivers", "processors", "exporters"):
            used.update(string_list(mapping(pipeline).get(role)))
    for kind in ("receivers", "processors", "exporters", "connectors"):
        errors += [
            f"{kind}.{cid} is defined but used by no pipeline"
            for cid in sorted(section_ids(config, kind) - used)
        ]
    for kind in ("receivers", "processors", "exporters"):
        for path, value in walk(mapping(config).get(kind)):
            if path and path[-1] == "storage" and value not in enabled:
                errors.append(f"{kind}.{'.'.join(path)}: storage {value!r} is not an enabled extension")
    return errors


def component_type_errors(config: Any, catalog: Catalog) -> list[str]:
    """Each component type must be one otelcol-contrib registers for that section, by its current name."""
    errors: list[str] = []
    for kind in KINDS:
        for cid in sorted(section_ids(config, kind)):
            ctype = component_type(cid)
            renamed = catalog.deprecated.get((kind, ctype))
            if renamed is not None:
                errors.append(f"{kind}.{cid}: {ctype!r} is a deprecated alias, use {renamed!r}")
            elif ctype not in catalog.types[kind]:
                errors.append(f"{kind}.{cid}: unknown {kind[:-1]} type {ctype!r}")
    return errors


def is_secret_key(key: str) -> bool:
    return key not in NOT_SECRET_KEYS and SECRET_KEY.search(key) is not None


def secret_errors(config: Any) -> list[str]:
    """Secrets are exactly `${env:VAR}` (no inline default); addresses and header values use `${env:`."""
    errors: list[str] = []
    for path, value in walk(config):
        where = ".".join(path)
        text = value if isinstance(value, str) else None
        if text is not None:
            errors += [
                f"{where}: {ref!r} is not of the form ${{env:VAR}} or ${{env:VAR:-default}}"
                for ref in ANY_REF.findall(text)
                if not ENV_REF.fullmatch(ref)
            ]
            if BARE_DOLLAR_VAR.search(ANY_REF.sub("", text)):
                errors.append(f"{where}: bare $VAR reference; use ${{env:VAR}}")
            if URL_WITH_CREDENTIALS.search(ENV_REF.sub("", text)):
                errors.append(f"{where}: URL with inline user:password")
        if value is None or not path:
            continue
        key, parent = path[-1], path[-2] if len(path) > 1 else ""
        if is_secret_key(key):
            if text is None or not SECRET_ENV_REF.fullmatch(text):
                errors.append(f"{where}: secret must be exactly ${{env:VAR}} with no default")
        elif (ADDRESS_KEY.search(key) or parent == "headers") and (text is None or "${env:" not in text):
            errors.append(f"{where}: must come from the environment (${{env:VAR}})")
    return errors


def all_errors(config: Any, catalog: Catalog) -> list[str]:
    return (
        structure_errors(config)
        + pipeline_errors(config)
        + wiring_errors(config)
        + component_type_errors(config, catalog)
        + secret_errors(config)
    )


def env_vars(config: Any) -> set[str]:
    return {name for _, value in walk(config) if isinstance(value, str) for name in ENV_REF.findall(value)}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(COMPONENTS_FILE)


def test_the_documented_configs_exist() -> None:
    """Guards the parametrized tests below against silently running over zero files."""
    assert {"gateway.yaml", "agent.yaml", "agent-static.yaml"} <= {path.name for path in CONFIG_FILES}


def test_catalog_lists_every_kind_and_its_renames_point_at_listed_types(catalog: Catalog) -> None:
    for kind in KINDS:
        assert catalog.types[kind], f"no {kind} in {COMPONENTS_FILE.name}"
    assert {"otlp"} <= catalog.types["receivers"]
    assert {"memory_limiter", "batch"} <= catalog.types["processors"]
    assert {"otlp_grpc", "otlp_http", "clickhouse", "load_balancing"} <= catalog.types["exporters"]
    assert {"file_storage", "health_check"} <= catalog.types["extensions"]
    for (kind, old), new in catalog.deprecated.items():
        assert new in catalog.types[kind], f"{kind}/{old} is renamed to {new!r}, which is not listed"
        assert old not in catalog.types[kind], f"{kind}/{old} is both accepted and deprecated"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_parses_and_has_pipelines(path: Path) -> None:
    assert structure_errors(load_config(path)) == []


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_pipelines_and_extensions_are_wired(path: Path) -> None:
    config = load_config(path)
    assert pipeline_errors(config) + wiring_errors(config) == []


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_component_types_exist_in_otelcol_contrib(path: Path, catalog: Catalog) -> None:
    assert component_type_errors(load_config(path), catalog) == []


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_no_secrets_or_addresses_inlined(path: Path) -> None:
    assert secret_errors(load_config(path)) == []


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_readme_documents_every_env_var(path: Path) -> None:
    readme = README.read_text(encoding="utf-8")
    missing = sorted(name for name in env_vars(load_config(path)) if f"`{name}`" not in readme)
    assert missing == [], f"{path.name} reads variables README.md does not list"


VALID = """
extensions:
  file_storage:
    directory: ${env:STORAGE_DIR:-/tmp/otelcol}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: ${env:GRPC_ENDPOINT:-0.0.0.0:4317}
processors:
  memory_limiter:
    check_interval: 1s
    limit_percentage: 80
    spike_limit_percentage: 20
  resource_detection:
    detectors: [env]
exporters:
  otlp_http/loki:
    endpoint: ${env:LOKI_OTLP_ENDPOINT}
    headers:
      X-Scope-OrgID: ${env:LOKI_TENANT_ID:-tracestream}
    sending_queue:
      storage: file_storage
  clickhouse:
    endpoint: ${env:CLICKHOUSE_ENDPOINT}
    username: ${env:CLICKHOUSE_USERNAME}
    password: ${env:CLICKHOUSE_PASSWORD}
service:
  extensions: [file_storage]
  pipelines:
    logs:
      receivers: [otlp]
      processors: [memory_limiter, resource_detection]
      exporters: [otlp_http/loki, clickhouse]
"""


def valid_config() -> dict[str, Any]:
    """A fresh, passing config per test, so each mutation starts clean."""
    config: dict[str, Any] = yaml.safe_load(VALID)
    return config


def logs_pipeline(config: dict[str, Any]) -> dict[str, Any]:
    pipeline: dict[str, Any] = config["service"]["pipelines"]["logs"]
    return pipeline


def rename_exporter(config: dict[str, Any], old: str, new: str) -> None:
    config["exporters"][new] = config["exporters"].pop(old)
    exporters = logs_pipeline(config)["exporters"]
    exporters[exporters.index(old)] = new


def test_the_negative_tests_start_from_a_config_that_passes(catalog: Catalog) -> None:
    assert all_errors(valid_config(), catalog) == []


BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "undefined exporter",
        lambda c: logs_pipeline(c)["exporters"].append("otlp_grpc/tempo"),
        "exporter 'otlp_grpc/tempo' is not defined",
    ),
    (
        "id resolved by full name",
        lambda c: logs_pipeline(c)["exporters"].append("otlp_http"),
        "exporter 'otlp_http' is not defined",
    ),
    (
        "memory_limiter not first",
        lambda c: logs_pipeline(c)["processors"].reverse(),
        "memory_limiter must be the first processor",
    ),
    (
        "no processors",
        lambda c: logs_pipeline(c).pop("processors"),
        "memory_limiter must be the first processor",
    ),
    (
        "undefined extension",
        lambda c: c["service"]["extensions"].append("health_check"),
        "service.extensions: 'health_check' is not defined",
    ),
    (
        "dead exporter",
        lambda c: c["exporters"].update({"debug": None}),
        "exporters.debug is defined but used by",
    ),
    (
        "queue storage not enabled",
        lambda c: c["service"].update({"extensions": []}),
        "storage 'file_storage' is not an enabled extension",
    ),
    ("no pipelines", lambda c: c["service"].pop("pipelines"), "service.pipelines is missing or empty"),
    (
        "unknown type",
        lambda c: rename_exporter(c, "clickhouse", "clickhose"),
        "unknown exporter type 'clickhose'",
    ),
    (
        "type of another kind",
        lambda c: c["processors"].update({"clickhouse": None}),
        "unknown processor type 'clickhouse'",
    ),
    (
        "deprecated alias",
        lambda c: rename_exporter(c, "otlp_http/loki", "otlphttp/loki"),
        "'otlphttp' is a deprecated alias, use 'otlp_http'",
    ),
    (
        "inlined password",
        lambda c: c["exporters"]["clickhouse"].update({"password": "hunter2"}),
        "exporters.clickhouse.password: secret must be exactly ${env:VAR}",
    ),
    (
        "password with inline default",
        lambda c: c["exporters"]["clickhouse"].update({"password": "${env:PW:-hunter2}"}),
        "exporters.clickhouse.password: secret must be exactly ${env:VAR}",
    ),
    (
        "inlined header token",
        lambda c: c["exporters"]["otlp_http/loki"]["headers"].update({"Authorization": "Bearer x"}),
        "headers.Authorization: secret must be exactly ${env:VAR}",
    ),
    (
        "literal endpoint",
        lambda c: c["exporters"]["clickhouse"].update({"endpoint": "tcp://clickhouse:9000"}),
        "exporters.clickhouse.endpoint: must come from the environment",
    ),
    (
        "literal header value",
        lambda c: c["exporters"]["otlp_http/loki"]["headers"].update({"X-Scope-OrgID": "acme"}),
        "headers.X-Scope-OrgID: must come from the environment",
    ),
    (
        "credentials in a URL",
        lambda c: c["exporters"]["clickhouse"].update({"endpoint": "tcp://u:pw@${env:CH_HOST}"}),
        "exporters.clickhouse.endpoint: URL with inline user:password",
    ),
    (
        "old-style reference",
        lambda c: c["exporters"]["clickhouse"].update({"endpoint": "${CLICKHOUSE_ENDPOINT}"}),
        "is not of the form ${env:VAR}",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN]
)
def test_checkers_reject_broken_configs(
    mutate: Callable[[dict[str, Any]], None], expected: str, catalog: Catalog
) -> None:
    config = valid_config()
    mutate(config)
    errors = all_errors(config, catalog)
    assert any(expected in error for error in errors), errors
