"""A real virtualenv holding everything the test environment has, except some distributions.

Its site-packages mirrors ours with symlinks, leaving out every file the named
distributions installed, so it is built in a second, with nothing downloaded.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from importlib.metadata import distribution, distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def environment_without(root: Path, *distributions: str) -> Path:
    """Create the environment under `root`; return its python."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(root)], check=True)  # type: ignore[attr-defined]
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = Path(
        subprocess.run(
            [str(root / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    left_out = {(ours / file).resolve() for name in distributions for file in distribution(name).files or ()}
    parents = {parent for path in left_out for parent in path.parents}
    _mirror(ours, theirs, left_out, parents)
    return root / "bin" / "python"


def environment_of(root: Path, *kept: str) -> Path:
    """An environment holding only the `kept` distributions and what they require, extras left
    out: a package installed as a user installs it, beside nothing else."""
    needed: set[str] = set()
    wanted = [canonicalize_name(name) for name in kept]
    while wanted:
        name = wanted.pop()
        if name in needed:
            continue
        needed.add(name)
        for line in distribution(name).requires or ():
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(canonicalize_name(requirement.name))
    installed = {
        canonicalize_name(found.metadata["Name"]): found.metadata["Name"] for found in distributions()
    }
    return environment_without(root, *(name for key, name in installed.items() if key not in needed))


def _mirror(source: Path, target: Path, left_out: set[Path], parents: set[Path]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        resolved = entry.resolve()
        if resolved in left_out or (entry.name == "__pycache__" and resolved in parents):
            continue
        if resolved in parents and entry.is_dir():
            _mirror(entry, target / entry.name, left_out, parents)
            if not any((target / entry.name).iterdir()):
                (target / entry.name).rmdir()  # an empty package directory would still import
        else:
            (target / entry.name).symlink_to(entry)
