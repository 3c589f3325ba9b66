"""An ensemble of two DIFFERENT nnU-Net configurations (3d_fullres + 3d_lowres): parity.

``tests/test_segmentation_ensemble.py`` proves the ensemble runtime with two folds of one
configuration. Here the members differ in everything a configuration decides: target
spacing, patch size, mirroring and intensity statistics. Members: the committed 3d_fullres
fixture model (``tests/fixtures/nnunet``, fold 0) and the cascade fixture's 3d_lowres model
(``tests/fixtures/nnunet_cascade``, fold ``all``); both have the labels background 0,
liver 1, tumour 2 (their ``dataset.json``). No 2d model is committed; 3d_lowres is one of the
configurations ``nnUNetv2_find_best_configuration`` ensembles.

Torch-free: an ensemble spec over the committed ONNX files of both fixtures, against the
labels of nnU-Net's own ensemble (``tests/fixtures/nnunet/make_ensemble_references.py``:
``nnUNetPredictor`` per member, ``average_probabilities``, argmax). Export-marked: the pair
exported with ``export_nnunet_ensemble`` from the two model folders, against nnU-Net's
predictor and ensembling code run live.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from hccatom import Segmenter, Volume
from hccatom.segmentation.spec import SegmentationSpec

FIXTURES = Path(__file__).parent / "fixtures"
FULLRES_EXPORT = FIXTURES / "nnunet" / "export"
CASCADE_EXPORT = FIXTURES / "nnunet_cascade" / "export"
FULLRES_MODEL = FIXTURES / "nnunet" / "model" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
LOWRES_MODEL = (FIXTURES / "nnunet_cascade" / "model"
                / "nnUNetTrainerNoDA__nnUNetPlans__3d_lowres")
VOLUMES = FIXTURES / "nnunet" / "volumes"
REFERENCE = VOLUMES / "small_nnunet_fullres_lowres_ensemble_labels.nii.gz"


def load(name: str) -> Volume:
    img = sitk.ReadImage(str(VOLUMES / name))
    return Volume.from_array(sitk.GetArrayFromImage(img).astype(np.float32),
                             img.GetSpacing()[::-1])


def fullres_spec() -> SegmentationSpec:
    """The 3d_fullres fixture with fold 0 only (ONNX paths relative to its export)."""
    spec = SegmentationSpec.load(FULLRES_EXPORT)
    return spec.model_copy(update={"folds": spec.folds[:1]})


def lowres_spec() -> SegmentationSpec:
    """The cascade fixture's 3d_lowres stage as a spec of its own (relative to its export)."""
    lowres = SegmentationSpec.load(CASCADE_EXPORT).previous_stage
    assert lowres is not None
    return lowres


def rebased(spec: SegmentationSpec, folder: str) -> dict[str, Any]:
    """``spec`` as data with its ONNX paths relative to ``FIXTURES`` instead of ``folder``."""
    data: dict[str, Any] = json.loads(spec.to_json())
    data["folds"] = [dict(f, onnx=f"{folder}/{f['onnx']}") for f in data["folds"]]
    return data


def mixed_spec() -> SegmentationSpec:
    """3d_fullres (fold 0) first, 3d_lowres (fold all) as the second member; root FIXTURES."""
    data = rebased(fullres_spec(), "nnunet/export")
    data["ensemble"] = [rebased(lowres_spec(), "nnunet_cascade/export")]
    return SegmentationSpec.model_validate(data)


@cache
def mixed_segmenter() -> Segmenter:
    return Segmenter(FIXTURES, device="cpu", threads=1, spec=mixed_spec())


@cache
def member_probabilities() -> tuple[np.ndarray, np.ndarray]:
    vol = load("small_ct.nii.gz")
    fullres = Segmenter(FULLRES_EXPORT, device="cpu", threads=1, spec=fullres_spec())
    lowres = Segmenter(CASCADE_EXPORT, device="cpu", threads=1, spec=lowres_spec())
    return fullres.probabilities(vol)[0], lowres.probabilities(vol)[0]


def test_members_are_different_configurations_with_the_same_labels() -> None:
    spec = mixed_spec()
    member = spec.ensemble[0]
    assert (spec.configuration, member.configuration) == ("3d_fullres", "3d_lowres")
    assert spec.target_spacing_mm != member.target_spacing_mm
    assert spec.patch_size != member.patch_size
    assert spec.mirror_axes != member.mirror_axes
    assert spec.ct_intensity != member.ct_intensity
    assert spec.labels == member.labels
    for folder in (FULLRES_MODEL, LOWRES_MODEL):
        labels = json.loads((folder / "dataset.json").read_text())["labels"]
        assert labels == {"background": 0, "liver": 1, "tumour": 2}
    assert SegmentationSpec.model_validate_json(spec.to_json()) == spec
    assert [f.onnx for f in spec.all_folds()] == [
        "nnunet/export/fold_0.onnx", "nnunet_cascade/export/previous_stage/fold_all.onnx"]


def test_mixed_ensemble_probabilities_are_the_members_mean() -> None:
    vol = load("small_ct.nii.gz")
    probs, grid = mixed_segmenter().probabilities(vol)
    assert grid is vol
    fullres, lowres = member_probabilities()
    assert probs.shape == fullres.shape == lowres.shape == (3, *vol.array.shape)
    np.testing.assert_allclose(probs, (fullres + lowres) / 2, atol=1e-6)
    assert np.abs(fullres - lowres).max() > 0.1  # the members really disagree


def test_mixed_ensemble_labels_match_nnunet_ensemble() -> None:
    vol = load("small_ct.nii.gz")
    labels = mixed_segmenter().segment(vol).array
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(REFERENCE)))
    assert labels.shape == ref.shape
    assert (labels == ref).mean() >= 0.999
    assert (ref == 2).sum() > 0 and (labels == 2).sum() > 0
    # the reference is neither member's own segmentation: averaging decides voxels
    for member in member_probabilities():
        assert (np.argmax(member, axis=0) != ref).sum() > 0


@pytest.mark.export
def test_mixed_ensemble_export_matches_nnunet_ensembling_live(tmp_path: Path) -> None:
    """Export both model folders as one ensemble; probabilities against nnU-Net, run here."""
    pytest.importorskip("torch", reason="nnU-Net's predictor (torch) is the reference")
    pytest.importorskip("nnunetv2", reason="nnU-Net's own ensembling is the reference")
    from fixtures.nnunet.make_ensemble_references import ENSEMBLES, nnunet_ensemble

    from hccatom.export.nnunet_ensemble import EnsembleMember, export_nnunet_ensemble

    out = tmp_path / "mixed"
    result = export_nnunet_ensemble(
        [EnsembleMember(FULLRES_MODEL, folds=[0]), EnsembleMember(LOWRES_MODEL, folds=["all"])],
        out, window_before_segmentation=False, training_orientation="LPS")
    assert result.report["passed"]
    spec = SegmentationSpec.load(out)
    assert (spec.configuration, spec.ensemble[0].configuration) == ("3d_fullres", "3d_lowres")
    assert [f.onnx for f in spec.all_folds()] == [
        "member_0_3d_fullres/fold_0.onnx", "member_1_3d_lowres/fold_all.onnx"]

    vol = load("small_ct.nii.gz")
    probs, _ = Segmenter(out, device="cpu", threads=1).probabilities(vol)
    ref, ref_labels = nnunet_ensemble(ENSEMBLES["nnunet_fullres_lowres_ensemble"], vol.array,
                                      vol.spacing, tmp_path)
    diff = np.abs(probs - ref)
    assert diff.max() <= 1e-2 and diff.mean() <= 1e-4
    assert (np.argmax(probs, axis=0) == ref_labels).mean() >= 0.999
    committed = sitk.GetArrayFromImage(sitk.ReadImage(str(REFERENCE)))
    np.testing.assert_array_equal(ref_labels, committed)  # the committed reference is current
