"""The import graph: ATOM and the engines load no image libraries or segmentation runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("SimpleITK", "scipy", "hccatom.segmentation", "hccatom.predictor", "hccatom.ct_io",
         "torch", "nnunetv2")


def loaded_after(statement: str) -> list[str]:
    """Top-level modules (and hccatom modules) in sys.modules after ``statement``, fresh."""
    code = (
        "import json, sys\n"
        f"{statement}\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    mods: list[str] = json.loads(out.stdout)
    return mods


@pytest.mark.parametrize(
    "statement",
    ["import hccatom.atom", "import hccatom.errors", "import hccatom.engines",
     "from hccatom.atom import decide, compare_policies, AtomPolicy"],
)
def test_atom_errors_and_engines_load_no_image_libraries(statement: str) -> None:
    mods = loaded_after(statement)
    heavy = [m for m in mods if m in HEAVY or m.split(".")[0] in ("SimpleITK", "scipy")]
    assert heavy == [], f"{statement} loaded {heavy}"


def test_atom_loads_only_standard_library_pydantic_and_errors() -> None:
    mods = loaded_after("import hccatom.atom")
    ours = sorted(m for m in mods if m.startswith("hccatom"))
    assert ours == ["hccatom", "hccatom.atom", "hccatom.atom.compare", "hccatom.atom.decision",
                    "hccatom.atom.policy", "hccatom.errors"]
    assert "numpy" not in mods and "onnxruntime" not in mods


def test_public_names_still_resolve_lazily() -> None:
    mods = loaded_after(
        "import hccatom\n"
        "assert 'hccatom.predictor' not in sys.modules\n"
        "from hccatom import Predictor, Volume, HccatomError, read_ct, Segmenter\n"
        "assert Predictor.__module__ == 'hccatom.predictor'\n"
        "assert set(hccatom.__all__) <= set(dir(hccatom))"
    )
    assert "hccatom.predictor" in mods and "SimpleITK" in mods


def test_unknown_attribute_is_an_attribute_error() -> None:
    import hccatom

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        hccatom.Nope  # noqa: B018
    assert json.dumps(hccatom.__version__)
