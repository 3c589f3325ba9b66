"""nnU-Net's 3d_cascade_fullres: the low-resolution stage's labels feed the full-resolution one.

Fixture: ``tests/fixtures/nnunet_cascade`` (a tiny 3d_lowres + 3d_cascade_fullres pair trained
with nnU-Net's own tooling by ``make_cascade_fixture.py``, exported with ``hccatom export
nnunet``, and nnUNetPredictor's own cascade labels in ``references/``). The hand-over pieces
(label resampling, preprocessing with the previous stage's labels) are pinned to nnU-Net's
functions directly in the export-marked tests.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydantic import ValidationError
from scipy import ndimage

from hccatom import Segmenter, Volume
from hccatom.errors import InputError
from hccatom.segmentation import ResamplingSpec, preprocess
from hccatom.segmentation.cascade import one_hot_foreground, resample_labels
from hccatom.segmentation.spec import SegmentationSpec

CASCADE = Path(__file__).parent / "fixtures" / "nnunet_cascade"
EXPORT = CASCADE / "export"
MODEL = CASCADE / "model"
REFERENCES = CASCADE / "references"
VOLUMES = Path(__file__).parent / "fixtures" / "nnunet" / "volumes"
LOWRES = MODEL / "nnUNetTrainerNoDA__nnUNetPlans__3d_lowres"
FULLRES = MODEL / "nnUNetTrainerNoDA__nnUNetPlans__3d_cascade_fullres"


def load(name: str) -> Volume:
    img = sitk.ReadImage(str(VOLUMES / name))
    return Volume.from_array(sitk.GetArrayFromImage(img).astype(np.float32),
                             img.GetSpacing()[::-1])


def reference(name: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(REFERENCES / f"{name}_labels.nii.gz")))


@cache
def segmenter() -> Segmenter:
    return Segmenter(EXPORT, device="cpu", threads=1)


def blobs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Label map with smooth regions of 0, 1, 2 (and -1 in a corner, as crop_to_nonzero marks)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(2, *shape)), sigma=(0, 2, 2, 2))
    labels = np.zeros(shape, dtype=np.int16)
    labels[field[0] > 0.05] = 1
    labels[(field[1] > 0.1) & (labels == 1)] = 2
    labels[:2, :3] = np.where(labels[:2, :3] == 0, -1, labels[:2, :3])
    return labels


# --- spec -------------------------------------------------------------------------------
def test_cascade_spec_has_both_stages() -> None:
    spec = SegmentationSpec.load(EXPORT)
    assert spec.configuration == "3d_cascade_fullres"
    assert spec.previous_stage is not None and spec.previous_stage.configuration == "3d_lowres"
    assert spec.num_input_channels == 1 + spec.num_output_channels - 1
    assert spec.resampling_segmentation is not None
    assert [f.onnx for f in spec.all_folds()] == ["previous_stage/fold_all.onnx",
                                                  "fold_all.onnx"]
    data = json.loads(spec.to_json())
    data.pop("resampling_segmentation")
    with pytest.raises(ValidationError, match="resampling_segmentation"):
        SegmentationSpec.model_validate(data)


def test_one_hot_encodes_foreground_labels_only() -> None:
    labels = np.array([[[-1, 0, 1, 2]]], dtype=np.int16)
    hot = one_hot_foreground(labels, 3)
    assert hot.shape == (2, 1, 1, 4) and hot.dtype == np.float32
    assert hot[:, 0, 0].T.tolist() == [[0, 0], [0, 0], [1, 0], [0, 1]]


# --- runtime vs nnUNetPredictor's cascade (references) ----------------------------------
def test_lowres_stage_matches_nnunet_lowres_labels() -> None:
    vol = load("small_ct.nii.gz")
    prev = segmenter()._previous
    assert prev is not None
    index = prev.channel_indices(vol)
    ref = reference("small_lowres")
    assert index.shape == ref.shape
    assert (index == ref).mean() >= 0.999


@pytest.mark.parametrize("name", ["small", "anisotropic"])
def test_cascade_labels_match_nnunet_cascade(name: str) -> None:
    vol = load(f"{name}_ct.nii.gz")
    timings: dict[str, float] = {}
    labels = segmenter().segment(vol, timings=timings)
    ref = reference(f"{name}_cascade")
    assert labels.array.shape == ref.shape
    assert (labels.array == ref).mean() >= 0.999
    assert "3d_lowres" in labels.notes[-1] and "3d_cascade_fullres" in labels.notes[-1]
    assert timings["network"] > 0


def test_cascade_stage_refuses_device_resident() -> None:
    with pytest.raises(InputError, match="host path only"):
        Segmenter(EXPORT, device="cpu", device_resident=True)
    auto = segmenter()
    assert not auto.device_resident  # the full-resolution stage falls back to the host path


def test_previous_labels_shape_must_match_the_image() -> None:
    spec = SegmentationSpec.load(EXPORT)
    image = np.zeros((8, 9, 10), dtype=np.float32)
    with pytest.raises(ValueError, match="differ in shape"):
        preprocess(image, (3.0, 2.5, 2.5), spec, None, np.zeros((8, 9, 9), dtype=np.uint8))


# --- the hand-over pinned to nnU-Net's functions -------------------------------------------
@pytest.mark.export
@pytest.mark.parametrize(("shape", "current", "target"), [
    ((20, 26, 30), (6.0, 5.0, 5.0), (3.0, 2.5, 2.5)),     # one 3-D resize
    ((7, 30, 28), (9.0, 2.2, 2.2), (3.0, 2.5, 2.5)),      # anisotropic: separate z (nearest)
    ((24, 20, 22), (2.0, 2.0, 2.0), (2.9, 3.1, 1.7)),     # shrink and grow
])
def test_resample_labels_matches_nnunet(shape: tuple[int, int, int],
                                        current: tuple[float, ...],
                                        target: tuple[float, ...]) -> None:
    pytest.importorskip("nnunetv2", reason="nnU-Net's resampling is the reference")
    from nnunetv2.preprocessing.resampling.default_resampling import (
        compute_new_shape,
        resample_data_or_seg_to_shape,
    )

    labels = blobs(shape, seed=sum(shape))
    new_shape = [int(s) for s in compute_new_shape(shape, current, target)]
    ref = resample_data_or_seg_to_shape(labels[None], new_shape, current, target, is_seg=True,
                                        order=1, order_z=0, force_separate_z=None)[0]
    ours = resample_labels(labels, new_shape, current, target, ResamplingSpec(order=1))
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.export
@pytest.mark.parametrize("name", ["small", "anisotropic"])
def test_preprocess_with_previous_stage_matches_nnunet(name: str) -> None:
    pytest.importorskip("nnunetv2", reason="nnU-Net's preprocessor is the reference")
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.label_handling.label_handling import convert_labelmap_to_one_hot
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((FULLRES / "plans.json").read_text())
    dataset_json = json.loads((FULLRES / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_cascade_fullres")
    vol = load(f"{name}_ct.nii.gz")
    prev = reference(f"{name}_lowres")
    data, seg, _ = DefaultPreprocessor().run_case_npy(
        vol.array[None].copy(), prev[None].astype(np.int16), {"spacing": list(vol.spacing)},
        pm, cm, dataset_json)
    lm = pm.get_label_manager(dataset_json)
    ref = np.vstack((data, convert_labelmap_to_one_hot(seg[0], lm.foreground_labels,
                                                       data.dtype)))
    ours = preprocess(vol.array, vol.spacing, SegmentationSpec.load(EXPORT), None, prev).data
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours[1:], ref[1:])
    assert ours[1:].sum() > 0  # the previous stage found something to hand on
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-4)


@pytest.mark.export
def test_cascade_probabilities_match_nnunet_predictor() -> None:
    pytest.importorskip("torch", reason="nnU-Net's predictor is the reference")
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(1)

    def predictor(folder: Path) -> nnUNetPredictor:
        pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                               perform_everything_on_device=False, device=torch.device("cpu"),
                               allow_tqdm=False)
        pred.initialize_from_trained_model_folder(str(folder), use_folds=("all",))
        return pred

    vol = load("small_ct.nii.gz")
    props = {"spacing": list(vol.spacing)}
    low = np.asarray(predictor(LOWRES).predict_single_npy_array(
        vol.array[None], props, None, None, False))
    _, ref = predictor(FULLRES).predict_single_npy_array(vol.array[None], props,
                                                         low[None].astype(np.int16),
                                                         None, True)
    probs, _ = segmenter().probabilities(vol)
    diff = np.abs(probs - ref)
    assert diff.max() <= 1e-2 and diff.mean() <= 1e-4
    assert (np.argmax(probs, axis=0) == np.argmax(ref, axis=0)).mean() >= 0.999


def test_bundle_with_a_cascade_builds_verifies_and_segments(tmp_path: Path) -> None:
    """Both stages' graphs go into the bundle, verify with their own patch and channels,
    and the Predictor hands each stage its engines."""
    from fixtures.bundle.helpers import build_fixture_bundle

    from hccatom import Predictor
    from hccatom.bundle import verify_bundle

    out = build_fixture_bundle(tmp_path / "bundle", segmentation=EXPORT)
    report = verify_bundle(out)
    assert report.ok, report.text()
    names = [c.name for c in report.checks if c.name.startswith("segmentation")]
    assert any("previous_stage/fold_all.onnx" in n for n in names) and len(names) == 2
    from hccatom.bundle import bundle_summary, load_bundle

    assert "cascade:     after 3d_lowres" in bundle_summary(load_bundle(out))
    predictor = Predictor.from_bundle(out, device="cpu")
    vol = load("small_ct.nii.gz")
    labels = predictor.segmenter.segment(vol).array
    assert (labels == reference("small_cascade")).mean() >= 0.999


@pytest.mark.export
def test_cli_exports_both_stages_of_a_cascade(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch", reason="the export extra (torch) exports the stages")
    import shutil

    from hccatom.export.nnunet_cli import main

    out = tmp_path / "cascade"
    rc = main(["--model-folder", str(FULLRES), "--out", str(out),
               "--no-window-before-segmentation", "--training-orientation", "LPS"])
    assert rc == 0, capsys.readouterr().err
    assert "3d_lowres folds ['all'] -> 3d_cascade_fullres (3 input channels)" in \
        capsys.readouterr().out
    spec = SegmentationSpec.load(out)
    assert spec.previous_stage is not None and spec.num_input_channels == 3
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file()) == [
        "fold_all.onnx", "parity_report.json", "previous_stage/fold_all.onnx",
        "previous_stage/parity_report.json", "segmentation_spec.json"]
    vol = load("small_ct.nii.gz")
    labels = Segmenter(out, device="cpu", threads=1).segment(vol).array
    assert (labels == reference("small_cascade")).mean() >= 0.999
    # without its 3d_lowres sibling the cascade stage cannot be exported
    alone = tmp_path / "alone" / FULLRES.name
    shutil.copytree(FULLRES, alone)
    rc = main(["--model-folder", str(alone), "--out", str(tmp_path / "x"),
               "--no-window-before-segmentation", "--training-orientation", "LPS"])
    assert rc == 2 and "--previous-stage-folder" in capsys.readouterr().err
