"""tests/env/lowest.txt, what `make test-lowest` runs on, pins exactly the floors in pyproject.toml."""

from __future__ import annotations

from tests.env.lowest import ROOT, floors, lowest_python, pins

# The versions an app on the oldest supported frameworks runs.
FRAMEWORKS = {"fastapi", "starlette", "uvicorn", "django", "celery", "redis"}
# Pinned at the floors Django and Celery declare themselves; pyproject.toml names neither.
THEIRS = {"asgiref", "kombu"}


def test_every_framework_is_pinned_at_its_floor() -> None:
    pinned = pins()
    assert pinned.keys() >= FRAMEWORKS
    ours = {name: {version} for name, version in pinned.items() if name not in THEIRS}
    assert {name: floors().get(name) for name in ours} == ours


def test_packages_pinned_at_the_frameworks_floors_have_none_of_ours() -> None:
    assert pins().keys() >= THEIRS
    assert not THEIRS & floors().keys()


def test_make_test_lowest_runs_on_the_lowest_python_pyproject_allows() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert f"LOWEST_PYTHON := python{lowest_python()}\n" in makefile
