"""Run mypy over the hccatom namespace as it is installed (sdk/ -> hccatom, engines/ -> ...).

mypy maps modules from folders, and the repository folders are not named like the import
namespace, so this lays out a temporary tree of symlinks with the installed names and
checks that. Usage: ``python tools/typecheck.py`` (extra arguments go to mypy).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = {"engines": "engines", "atom": "atom", "export": "export"}


def build_tree(dest: Path) -> Path:
    """Symlink sdk/* into dest/hccatom and the other folders as its subpackages."""
    pkg = dest / "hccatom"
    pkg.mkdir()
    for entry in (ROOT / "sdk").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name, folder in SUBPACKAGES.items():
        (pkg / name).symlink_to(ROOT / folder)
    return pkg


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        build_tree(Path(tmp))
        cmd = [
            sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
            "-p", "hccatom", *sys.argv[1:],
        ]
        return subprocess.call(cmd, cwd=tmp, env={"MYPYPATH": tmp, "PATH": ""})


if __name__ == "__main__":
    raise SystemExit(main())
