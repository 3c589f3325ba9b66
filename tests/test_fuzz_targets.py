"""Replay the fuzz seed corpus (including every past finding) through the fuzz targets.

Runs without atheris: each target is a plain function whose contract is "return or raise a
HccatomError". Findings of past fuzz runs are committed as ``fuzz/corpus/<target>/finding-*``
so each stays fixed. The fuzzing itself (atheris) is ``fuzz/run.py``; CI runs it briefly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fuzz"))

import targets  # noqa: E402

CORPUS = ROOT / "fuzz" / "corpus"
CASES = sorted(
    (t, p) for t in targets.TARGETS for p in (CORPUS / t).glob("*") if p.is_file()
)


def test_every_target_has_seeds() -> None:
    assert {t for t, _ in CASES} == set(targets.TARGETS)
    assert any(p.name.startswith("finding-") for _, p in CASES)


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{t}/{p.name}" for t, p in CASES])
def test_corpus_input_gives_a_typed_result(
    target: str, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if target in targets.NEEDS:
        pytest.importorskip(targets.NEEDS[target], reason=f"the {target} target needs it")
    for key, value in targets.FUZZ_ENV.items():
        monkeypatch.setenv(key, value)
    targets.TARGETS[target](path.read_bytes())  # anything but a HccatomError fails here


def test_every_target_names_the_modules_it_instruments() -> None:
    import importlib
    import importlib.util

    import run

    assert set(run.INSTRUMENTED) == set(targets.TARGETS)
    for name, modules in run.INSTRUMENTED.items():
        for module in modules:
            if module.startswith("hccatom.dicom.") and importlib.util.find_spec("pydicom") is None:
                continue  # the dicom extra is absent in the runtime-only environment
            assert importlib.import_module(module), (name, module)
