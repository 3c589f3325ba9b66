"""What a cold `hccatom` process pays before it does any work (imports, engine creation)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HEAVY = ("numpy", "scipy", "SimpleITK", "onnxruntime", "pydantic", "cryptography",
         "hccatom.synthetic", "torch")


def test_cli_and_demo_modules_import_nothing_heavy() -> None:
    code = ("import sys, hccatom, hccatom.cli, hccatom.demo; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""  # `hccatom --help`, `--version`, `demo --help` stay fast


def test_public_names_still_resolve_lazily() -> None:
    import hccatom

    assert hccatom.Predictor.__name__ == "Predictor"
    assert "Predictor" in dir(hccatom)
    with pytest.raises(AttributeError):
        _ = hccatom.NoSuchName  # type: ignore[attr-defined]


def test_engines_made_in_parallel_keep_their_order(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    import hccatom.predictor as predictor

    seen: set[str] = set()

    def make(p: Path) -> Any:
        seen.add(threading.current_thread().name)
        time.sleep(0.05 if p.name == "a" else 0.0)  # the first finishes last
        return p.name

    paths = [Path(n) for n in ("a", "b", "c", "d", "e")]
    monkeypatch.setattr(predictor.os, "cpu_count", lambda: 8)
    assert predictor.make_engines(make, paths) == ["a", "b", "c", "d", "e"]
    assert len(seen) > 1 and all(n.startswith("hccatom-engine") for n in seen)
    monkeypatch.setattr(predictor.os, "cpu_count", lambda: 2)
    seen.clear()
    assert predictor.make_engines(make, paths) == ["a", "b", "c", "d", "e"]
    assert seen == {threading.current_thread().name}
