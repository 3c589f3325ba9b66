"""Ensembles of nnU-Net configurations (``nnUNetv2_ensemble``): spec, runtime, parity.

Members here: the committed 3d_fullres fixture with fold 0 and with fold 1, as two
configurations (their softmax probabilities are averaged on the input grid, which differs
from nnU-Net's logit averaging across folds). The torch-free tests build that ensemble
spec over the committed fold ONNX files and compare with nnU-Net's own ensemble labels
(``tests/fixtures/nnunet/make_ensemble_references.py``) and, where torch is installed, live
with nnU-Net's predictor and ensembling code; the CLI test exports an ensemble
(``export_nnunet_ensemble``) from the fixture model folder.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydantic import ValidationError

from hccatom import Segmenter, Volume
from hccatom.errors import InputError
from hccatom.segmentation.ensemble import average_probabilities, split_by_stage
from hccatom.segmentation.spec import SegmentationSpec

FIXTURE = Path(__file__).parent / "fixtures" / "nnunet"
EXPORT = FIXTURE / "export"
MODEL = FIXTURE / "model" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
VOLUMES = FIXTURE / "volumes"


def base_spec() -> SegmentationSpec:
    return SegmentationSpec.load(EXPORT)


def ensemble_spec() -> SegmentationSpec:
    """Fold 0 as the first configuration, fold 1 as the second member."""
    data = json.loads(base_spec().to_json())
    member = dict(data, folds=[data["folds"][1]])
    return SegmentationSpec.model_validate(dict(data, folds=[data["folds"][0]], ensemble=[member]))


def load(name: str) -> Volume:
    img = sitk.ReadImage(str(VOLUMES / name))
    return Volume.from_array(sitk.GetArrayFromImage(img).astype(np.float32),
                             img.GetSpacing()[::-1])


@cache
def ensemble_segmenter() -> Segmenter:
    return Segmenter(EXPORT, device="cpu", threads=1, spec=ensemble_spec())


# --- spec ---------------------------------------------------------------------------------
def test_single_configuration_spec_serialises_without_stage_keys() -> None:
    data = json.loads(base_spec().to_json())
    assert not {"ensemble", "previous_stage", "resampling_segmentation"} & set(data)


def test_ensemble_spec_round_trips_and_lists_every_fold() -> None:
    spec = ensemble_spec()
    again = SegmentationSpec.model_validate_json(spec.to_json())
    assert again == spec
    assert [f.onnx for f in spec.all_folds()] == ["fold_0.onnx", "fold_1.onnx"]
    parts = split_by_stage(spec, ["a", "b"])
    assert (parts.previous, parts.own, parts.members) == ([], ["a"], [["b"]])
    with pytest.raises(ValueError, match="3 items given for 2 fold models"):
        split_by_stage(spec, ["a", "b", "c"])


def test_members_must_share_labels_and_distinct_files() -> None:
    data = json.loads(ensemble_spec().to_json())
    bad = json.loads(json.dumps(data))
    bad["ensemble"][0]["labels"]["channel_to_label"] = [0, 2, 1]
    bad["ensemble"][0]["labels"]["liver_channel"] = 2
    bad["ensemble"][0]["labels"]["tumour_channel"] = 1
    with pytest.raises(ValidationError, match="members must agree"):
        SegmentationSpec.model_validate(bad)
    dup = json.loads(json.dumps(data))
    dup["ensemble"][0]["folds"] = data["folds"]
    with pytest.raises(ValidationError, match="distinct"):
        SegmentationSpec.model_validate(dup)
    nested = json.loads(json.dumps(data))
    inner = dict(data["ensemble"][0], folds=[dict(data["folds"][0], onnx="other.onnx")])
    nested["ensemble"][0]["ensemble"] = [inner]
    with pytest.raises(ValidationError, match="no ensemble or postprocessing"):
        SegmentationSpec.model_validate(nested)


def test_average_probabilities_is_the_float32_mean() -> None:
    rng = np.random.default_rng(0)
    a, b, c = (rng.random((3, 4, 5, 6)).astype(np.float32) for _ in range(3))
    np.testing.assert_allclose(average_probabilities(iter([a, b, c])), (a + b + c) / 3,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="differ"):
        average_probabilities([a, a[:, :2]])
    with pytest.raises(ValueError, match="at least one"):
        average_probabilities([])


# --- runtime ------------------------------------------------------------------------------
def test_ensemble_probabilities_are_the_members_mean() -> None:
    vol = load("small_ct.nii.gz")
    probs, grid = ensemble_segmenter().probabilities(vol)
    assert grid is vol
    single = [Segmenter(EXPORT, device="cpu", threads=1, folds=[f]).probabilities(vol)[0]
              for f in (0, 1)]
    np.testing.assert_allclose(probs, (single[0] + single[1]) / 2, atol=1e-6)
    # averaging probabilities is not averaging logits (nnU-Net's fold ensemble)
    folds = Segmenter(EXPORT, device="cpu", threads=1).probabilities(vol)[0]
    assert np.abs(probs - folds).max() > 1e-4


def test_ensemble_labels_match_nnunet_ensemble() -> None:
    name = "small"  # the larger fixture volumes take ~25 s each on the 2-core VM
    vol = load(f"{name}_ct.nii.gz")
    labels = ensemble_segmenter().segment(vol).array
    ref = sitk.GetArrayFromImage(
        sitk.ReadImage(str(VOLUMES / f"{name}_nnunet_ensemble_labels.nii.gz")))
    assert labels.shape == ref.shape
    assert (labels == ref).mean() >= 0.999
    assert (ref == 2).sum() > 0 and (labels == 2).sum() > 0


def test_ensemble_confidence_and_device_path_members() -> None:
    vol = load("small_ct.nii.gz")
    host = ensemble_segmenter()
    labels, confidence = host.segment_with_confidence(vol)
    probs, _ = host.probabilities(vol)
    tumour = np.argmax(probs, axis=0) == 2
    assert confidence == pytest.approx(float(probs.max(axis=0)[tumour].mean()), rel=1e-6)
    assert "+ 3d_fullres (folds [1])" in labels.notes[-1]
    # members are single configurations: each may run device-resident (CPU provider here)
    device = Segmenter(EXPORT, device="cpu", threads=1, spec=ensemble_spec(),
                       device_resident=True)
    assert (device.segment(vol).array == labels.array).mean() >= 0.999


def test_ensemble_postprocessing_applies_to_the_averaged_labels(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """nnU-Net's postprocessing for an ensemble runs once, on the ensemble's labels."""
    import hccatom.segmentation.segmenter as segmenter_module
    from hccatom.segmentation.postprocessing import KeepLargestComponent, Postprocessing

    post = Postprocessing(steps=[KeepLargestComponent(labels=[2])])
    spec = ensemble_spec().model_copy(update={"postprocessing": post})
    vol = load("small_ct.nii.gz")
    plain = ensemble_segmenter().segment(vol).array
    calls: list[np.ndarray] = []

    def spy(labels: np.ndarray, given: Postprocessing, lut: list[int]) -> np.ndarray:
        assert given == post and lut == [0, 1, 2]
        calls.append(labels.copy())
        return np.where(labels == 2, 0, labels).astype(np.uint8)  # a visible change

    monkeypatch.setattr(segmenter_module, "apply_postprocessing", spy)
    engines = [*ensemble_segmenter().engines, *ensemble_segmenter()._members[0].engines]
    labels = Segmenter(None, spec=spec, engines=engines).segment(vol).array
    assert len(calls) == 1  # once for the ensemble, not per member
    np.testing.assert_array_equal(calls[0], plain)
    assert (plain == 2).any() and not (labels == 2).any()


def test_ensemble_refuses_fold_selection_and_wrong_engine_count() -> None:
    with pytest.raises(InputError, match="cascade or an ensemble"):
        Segmenter(EXPORT, device="cpu", spec=ensemble_spec(), folds=[0])
    engines = ensemble_segmenter().engines
    with pytest.raises(InputError, match="1 items given for 2 fold models"):
        Segmenter(None, spec=ensemble_spec(), engines=engines)


# --- export + live parity with nnU-Net's ensembling ---------------------------------------
@pytest.mark.export
def test_ensemble_matches_nnunet_ensembling_live(tmp_path: Path) -> None:
    """Probabilities against nnU-Net's own predictor + ``average_probabilities``, run here."""
    pytest.importorskip("torch", reason="nnU-Net's predictor (torch) is the reference")
    pytest.importorskip("nnunetv2", reason="nnU-Net's own ensembling is the reference")
    from fixtures.nnunet.make_ensemble_references import ENSEMBLES, nnunet_ensemble

    vol = load("small_ct.nii.gz")
    probs, _ = ensemble_segmenter().probabilities(vol)
    ref, ref_labels = nnunet_ensemble(ENSEMBLES["nnunet_ensemble"], vol.array, vol.spacing,
                                      tmp_path)
    diff = np.abs(probs - ref)
    assert diff.max() <= 1e-2 and diff.mean() <= 1e-4
    assert (np.argmax(probs, axis=0) == ref_labels).mean() >= 0.999


@pytest.mark.export
def test_cli_exports_an_ensemble_of_model_folders(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch", reason="the export extra (torch) exports the members")
    from hccatom.export.nnunet_cli import main

    out = tmp_path / "cli"
    rc = main(["--model-folder", str(MODEL), str(MODEL), "--folds", "0", "--out", str(out),
               "--no-window-before-segmentation", "--training-orientation", "LPS"])
    assert rc == 0, capsys.readouterr().err
    assert "ensemble of 2 configurations" in capsys.readouterr().out
    spec = SegmentationSpec.load(out)
    assert len(spec.ensemble) == 1 and spec.ensemble[0].configuration == "3d_fullres"
    assert [f.onnx for f in spec.all_folds()] == [
        "member_0_3d_fullres/fold_0.onnx", "member_1_3d_fullres/fold_0.onnx"]
    assert [p.relative_to(out).as_posix() for p in out.rglob("segmentation_spec.json")] == [
        "segmentation_spec.json"]  # one spec at the top, none in the member folders
    report = json.loads((out / "parity_report.json").read_text())
    assert report["kind"] == "nnunet-ensemble" and report["passed"]
    # two identical members: the ensemble's probabilities are the member's own
    vol = load("small_ct.nii.gz")
    probs, _ = Segmenter(out, device="cpu", threads=1).probabilities(vol)
    single, _ = Segmenter(EXPORT, device="cpu", threads=1, folds=[0]).probabilities(vol)
    np.testing.assert_allclose(probs, single, atol=1e-6)
    rc = main(["--model-folder", str(MODEL), str(MODEL), "--out", str(tmp_path / "x"),
               "--precision", "fp16", "--no-window-before-segmentation",
               "--training-orientation", "LPS"])
    assert rc == 2 and "not supported for ensembles" in capsys.readouterr().err
