"""One base per kind of record: ``FrozenModel`` (strict) and ``ManifestModel`` (forward
compatible), not a private ``_Model`` copy per module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from hccatom.model_base import FrozenModel, ManifestModel

SDK = Path(__file__).resolve().parents[1] / "sdk"


class _Strict(FrozenModel):
    a: int


class _Lenient(ManifestModel):
    a: int


def test_frozen_model_refuses_unknown_fields_and_changes() -> None:
    with pytest.raises(ValidationError, match="b"):
        _Strict.model_validate({"a": 1, "b": 2})
    rec = _Strict(a=1)
    with pytest.raises(ValidationError, match="frozen"):
        rec.a = 2  # type: ignore[misc]


def test_manifest_model_skips_fields_of_a_newer_minor_schema() -> None:
    rec = _Lenient.model_validate({"a": 1, "added_in_1_9": True})
    assert rec.model_dump() == {"a": 1}
    with pytest.raises(ValidationError, match="frozen"):
        rec.a = 2  # type: ignore[misc]


def test_records_use_the_shared_bases() -> None:
    from hccatom.bundle.manifest import FileEntry, Manifest
    from hccatom.explain.result import Explanation
    from hccatom.recommendation import Recommendation
    from hccatom.safety.limits import SafetyLimits
    from hccatom.segmentation.spec import SegmentationSpec

    assert issubclass(Recommendation, FrozenModel) and issubclass(Explanation, FrozenModel)
    assert issubclass(SegmentationSpec, FrozenModel)
    assert issubclass(Manifest, ManifestModel) and issubclass(FileEntry, ManifestModel)
    assert issubclass(SafetyLimits, ManifestModel)


def test_no_module_defines_its_own_base_again() -> None:
    """A private ``class _Model`` or a repeated frozen config line is a second copy."""
    pattern = re.compile(r"^class _Model\(|ConfigDict\((?=[^)]*frozen=True)(?=[^)]*extra=)", re.M)
    copies = [str(p.relative_to(SDK)) for p in sorted(SDK.rglob("*.py"))
              if p.name != "model_base.py" and pattern.search(p.read_text(encoding="utf-8"))]
    assert copies == [], f"derive from hccatom.model_base instead: {copies}"


def test_without_absent_drops_only_the_named_unset_fields() -> None:
    from hccatom.model_base import without_absent

    data = {"a": None, "b": None, "c": 0, "d": []}
    assert without_absent(data, ("a", "c", "d", "missing")) == {"b": None, "c": 0, "d": []}


def test_unset_optional_fields_stay_out_of_the_written_manifest_and_spec() -> None:
    from hccatom.bundle import load_bundle
    from hccatom.demo import demo_bundle_path
    from hccatom.segmentation.spec import SegmentationSpec

    bundle = load_bundle(demo_bundle_path())
    selection = bundle.manifest.model_dump(mode="json", by_alias=True)["selection"]
    assert selection.get("explain", "absent") is not None
    for model in selection["models"].values():
        assert model.get("path_fp16", "absent") is not None
        assert model.get("parity_fp16", "absent") is not None
    spec = SegmentationSpec.load(bundle.segmentation_dir).model_dump(mode="json")
    for key in ("window_before_segmentation", "training_orientation", "postprocessing",
                "previous_stage", "resampling_segmentation"):
        assert spec.get(key, "absent") is not None, key
    for fold in spec["folds"]:
        assert fold.get("onnx_fp16", "absent") is not None
