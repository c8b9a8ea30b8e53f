"""A real virtualenv holding everything the test environment has, except some distributions.

Its site-packages mirrors ours with symlinks, leaving out every file the named
distributions installed, so it is built in a second, with nothing downloaded.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from importlib.metadata import distribution
from pathlib import Path


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
