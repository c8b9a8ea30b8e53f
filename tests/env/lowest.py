"""The pins in lowest.txt, the floors in pyproject.toml, and what an environment has installed.

Run as a script in the environment `make test-lowest` built, it prints the Python and the pinned
packages' installed versions and exits 1, naming each, when one differs from its floor or pin
(for example when `opentelemetry-bootstrap` upgraded it).
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PINS = ROOT / "tests" / "env" / "lowest.txt"
PYPROJECT = ROOT / "pyproject.toml"


def pins(path: Path = PINS) -> dict[NormalizedName, Version]:
    """Each `name==version` line; comments and blank lines are skipped."""
    pinned: dict[NormalizedName, Version] = {}
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==":
            raise ValueError(f"{path.name}: {line!r} is not name==version")
        pinned[canonicalize_name(requirement.name)] = Version(specifiers[0].version)
    return pinned


def floors(path: Path = PYPROJECT) -> dict[NormalizedName, set[Version]]:
    """Every `>=` floor of each package in [project] dependencies and optional-dependencies."""
    project = tomllib.loads(path.read_text())["project"]
    extras = project["optional-dependencies"].values()
    lines = [*project["dependencies"], *(line for extra in extras for line in extra)]
    found: dict[NormalizedName, set[Version]] = {}
    for line in lines:
        requirement = Requirement(line)
        for specifier in requirement.specifier:
            if specifier.operator == ">=":
                found.setdefault(canonicalize_name(requirement.name), set()).add(Version(specifier.version))
    return found


def lowest_python(path: Path = PYPROJECT) -> Version:
    """The `>=` floor of requires-python."""
    specifiers = SpecifierSet(tomllib.loads(path.read_text())["project"]["requires-python"])
    return next(Version(specifier.version) for specifier in specifiers if specifier.operator == ">=")


def installed(name: str) -> Version | None:
    try:
        return Version(version(name))
    except PackageNotFoundError:
        return None


def main() -> int:
    python = Version("{}.{}".format(*sys.version_info[:2]))
    found = {name: (pinned, installed(name)) for name, pinned in pins().items()}
    print(
        f"lowest versions under test: python {sys.version.split()[0]}, "
        + ", ".join(f"{name} {have}" for name, (_, have) in found.items())
    )
    wrong = [
        f"{name} {have or 'missing'} (pinned {pin})" for name, (pin, have) in found.items() if have != pin
    ]
    if python != (floor := lowest_python()):
        wrong.insert(0, f"python {python} (requires-python's floor is {floor})")
    if wrong:
        print(f"not the pinned versions: {', '.join(wrong)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
