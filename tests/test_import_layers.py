"""The floors of the package: imports run down the data path, never up, and never in a circle.

Writer: otel_setup and integrations → exporters → schema → ground. Reader: cli, console, alerts,
forwarder → query and summary → schema → ground. The two sides meet only at the schema, and readers
never load the OpenTelemetry SDK. Imports inside functions are not counted: they are how an entry
point (`tracestream spool replay`, Django's app config) reaches a floor it does not live on.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import tracestream

PACKAGE = Path(tracestream.__file__).parent
GROUND = 0
SCHEMA = 1
WRITER, READER = "writer", "reader"

# (floor, side) by module prefix; the longest prefix wins. A side of None is shared by both.
FLOORS: dict[str, tuple[int, str | None]] = {
    "tracestream._internal_log": (GROUND, None),
    "tracestream.settings": (GROUND, None),
    "tracestream.connection": (GROUND, None),
    "tracestream.redis_errors": (GROUND, None),
    "tracestream.timeparse": (GROUND, None),
    "tracestream.terminal_text": (GROUND, None),
    "tracestream.export_status": (GROUND, None),
    "tracestream.django_settings": (GROUND, None),
    "tracestream.lua": (GROUND, None),
    "tracestream.forks": (GROUND, None),
    "tracestream.scrubbing": (GROUND, None),
    "tracestream.sql_text": (GROUND, None),
    "tracestream.embedded_redis": (GROUND, None),
    "tracestream.schema": (SCHEMA, None),
    "tracestream.shards": (SCHEMA, None),
    "tracestream.disk_spool": (SCHEMA, None),
    "tracestream.exporters": (2, WRITER),
    "tracestream.otel_setup": (3, WRITER),
    "tracestream.integrations": (3, WRITER),
    "tracestream.query": (2, READER),
    "tracestream.summary": (2, READER),
    "tracestream.otlp_encoding": (2, READER),
    "tracestream.error_issues": (2, READER),
    "tracestream.forwarder": (3, READER),
    "tracestream.alerts": (3, READER),
    "tracestream.console": (4, READER),
    "tracestream.cli": (5, READER),
    "tracestream": (6, None),  # the package's own __init__: the public API
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def floor_of(module: str) -> tuple[int, str | None]:
    prefix = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return FLOORS[prefix]


def module_level_imports(module: str) -> Iterator[str]:
    """Modules of this package imported when `module` is, outside functions and TYPE_CHECKING."""
    tree = ast.parse(MODULES[module].read_text())
    for node in _executed_at_import(tree.body):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("tracestream"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tracestream"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                yield submodule if submodule in MODULES else node.module


def _executed_at_import(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _executed_at_import(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _executed_at_import(getattr(node, field, []))


GRAPH = {module: sorted(set(module_level_imports(module)) - {module}) for module in MODULES}


def test_every_module_has_a_floor() -> None:
    assert all(floor_of(module) for module in MODULES)


def test_imports_never_run_up_the_floors_or_across_to_the_other_side() -> None:
    wrong = []
    for module, imported in GRAPH.items():
        floor, side = floor_of(module)
        for target in imported:
            target_floor, target_side = floor_of(target)
            if target_floor > floor or (target_side and side and target_side != side):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_import_cycle() -> None:
    cycles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in GRAPH.get(module, []):
            if state.get(target) == "open":
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_walk_sees_imports() -> None:
    """The checks above could pass on an empty graph; this pins a few known edges."""
    assert "tracestream.schema" in GRAPH["tracestream.query.scan"]
    assert "tracestream.exporters.encoding" in GRAPH["tracestream.exporters.redis_stream"]
    assert "tracestream.otel_setup.configure" not in GRAPH["tracestream"]  # loaded on first use


def test_readers_never_load_the_otel_sdk() -> None:
    """redis-py 8 loads part of the SDK itself (its metrics) when OTel is installed; readers add none."""
    readers = sorted(m for m in MODULES if floor_of(m)[1] == READER or m == "tracestream.schema")
    script = (
        "import importlib, sys\n"
        "import redis, redis.asyncio, redis.cluster\n"
        "baseline = {m for m in sys.modules if m.startswith('opentelemetry.sdk')}\n"
        "import django; from django.conf import settings\n"  # console.django_urls needs Django's auth app
        "settings.configure(INSTALLED_APPS=['django.contrib.auth', 'django.contrib.contenttypes'])\n"
        "django.setup()\n"
        f"for name in {readers!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk') and m not in baseline))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]", loaded.stdout


def test_the_writer_does_load_the_otel_sdk() -> None:
    """The check above can fail: the writer's modules do load SDK modules redis-py does not."""
    script = (
        "import sys, redis, redis.asyncio, redis.cluster\n"
        "baseline = {m for m in sys.modules if m.startswith('opentelemetry.sdk')}\n"
        "import tracestream.exporters\n"
        "print('opentelemetry.sdk.trace' in set(sys.modules) - baseline)\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "True"
