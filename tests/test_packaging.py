"""The package installs as one namespace and its runtime never needs torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_subpackages_live_under_one_namespace() -> None:
    import hccatom.atom
    import hccatom.engines

    for mod in (hccatom.engines, hccatom.atom):
        assert mod.__name__.startswith("hccatom.")


def test_runtime_imports_when_torch_import_raises() -> None:
    """Import the whole runtime in a process where importing torch (or nnunetv2) fails."""
    code = textwrap.dedent(
        """
        import builtins, sys
        real_import = builtins.__import__
        def guarded(name, *args, **kwargs):
            if name.split('.')[0] in {'torch', 'nnunetv2', 'onnx'}:
                raise ImportError('blocked in this test: ' + name)
            return real_import(name, *args, **kwargs)
        builtins.__import__ = guarded
        import hccatom, hccatom.engines, hccatom.atom
        import pkgutil, importlib
        for pkg in (hccatom, hccatom.engines, hccatom.atom):
            for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.'):
                if info.name.startswith('hccatom.export'):
                    continue
                importlib.import_module(info.name)
        assert 'torch' not in sys.modules
        print('ok')
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_no_generic_top_level_packages(tmp_path: Path) -> None:
    """What is installed puts nothing named sdk/engines/export/atom at the top of sys.path."""
    code = (
        "import importlib.util, hccatom\n"
        "names = ['sdk', 'engines', 'export', 'atom']\n"
        "print([n for n in names if importlib.util.find_spec(n) is not None])\n"
    )
    # -I: isolated mode, so neither the repository root nor the cwd is on sys.path
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_source_package_is_declared_in_pyproject() -> None:
    """A new subpackage folder must be listed in pyproject, or `pip install .` drops it."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in config["package-dir"].items():  # the mapped folders are disjoint
        for init in (root / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(root / folder).parts
            found.add(".".join((package, *parts)))
    declared = set(config["packages"])
    missing, stale = sorted(found - declared), sorted(declared - found)
    assert found == declared, f"declare {missing}; remove {stale}"
