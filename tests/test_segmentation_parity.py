"""Our torch-free segmentation vs nnU-Net's own ``nnUNetPredictor`` (the acceptance that matters).

Same model (the committed fixture, trained by nnU-Net), same folds, step size and mirroring,
CPU. Bounds (issue 4): softmax probabilities on the input grid max |diff| <= 1e-2 and mean
<= 1e-4; labels agree on >= 99.9 % of voxels; Dice >= 0.995 per label with >= 1000 voxels.
Stage tests pin the preprocessing and the resampling to nnU-Net's functions directly.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.preprocessing.preprocessors.default_preprocessor import (
    DefaultPreprocessor,
)
from nnunetv2.preprocessing.resampling.default_resampling import (
    resample_data_or_seg_to_shape,
)

from hccatom import Segmenter, Volume, read_ct
from hccatom.segmentation import ResamplingSpec, preprocess, resample

pytestmark = pytest.mark.export

FIXTURE = Path(__file__).parent / "fixtures" / "nnunet"
MODEL = FIXTURE / "model" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
EXPORT = FIXTURE / "export"
VOLUMES = FIXTURE / "volumes"


@cache
def reference(folds: tuple[int, ...], mirroring: bool) -> nnUNetPredictor:
    torch.set_num_threads(1)
    pred = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
        perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False,
    )
    pred.initialize_from_trained_model_folder(str(MODEL), use_folds=folds)
    return pred


@cache
def ours(folds: tuple[int, ...], mirroring: bool) -> Segmenter:
    return Segmenter(EXPORT, device="cpu", threads=1, folds=list(folds), mirroring=mirroring)


def load(name: str) -> Volume:
    img = sitk.ReadImage(str(VOLUMES / name))
    return Volume.from_array(
        sitk.GetArrayFromImage(img).astype(np.float32), img.GetSpacing()[::-1]
    )


def real_ct(real_data: Path) -> Volume:
    return read_ct(real_data / "totalseg_example" / "example_ct_sm.nii.gz")


def compare(vol: Volume, folds: tuple[int, ...], mirroring: bool) -> dict[str, float]:
    """Run both; return the parity figures (and assert the bounds)."""
    ref = reference(folds, mirroring)
    seg_ref, prob_ref = ref.predict_single_npy_array(
        vol.array.astype(np.float32)[None], {"spacing": list(vol.spacing)}, None, None, True
    )
    probs, _ = ours(folds, mirroring).probabilities(vol)
    assert probs.shape == prob_ref.shape
    diff = np.abs(probs - prob_ref)
    labels = np.argmax(probs, axis=0)
    figures = {
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_prob_diff": float(diff.mean()),
        "label_agreement": float((labels == seg_ref).mean()),
    }
    for lab in range(1, probs.shape[0]):
        a, b = labels == lab, seg_ref == lab
        figures[f"voxels_{lab}"] = float(b.sum())
        figures[f"dice_{lab}"] = float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))
    print(f"parity {vol.shape} folds={folds} mirror={mirroring}: {figures}")
    assert figures["max_abs_prob_diff"] <= 1e-2, figures
    assert figures["mean_abs_prob_diff"] <= 1e-4, figures
    assert figures["label_agreement"] >= 0.999, figures
    for lab in range(1, probs.shape[0]):
        if figures[f"voxels_{lab}"] >= 1000:
            assert figures[f"dice_{lab}"] >= 0.995, figures
    return figures


CASES: dict[str, tuple[Callable[..., Volume], tuple[int, ...], bool]] = {
    "typical_2folds_mirror": (lambda r: load("typical_ct.nii.gz"), (0, 1), True),
    "anisotropic_separate_z_mirror": (lambda r: load("anisotropic_ct.nii.gz"), (0,), True),
    "smaller_than_patch_2folds_mirror": (lambda r: load("small_ct.nii.gz"), (0, 1), True),
    "zero_border_crop": (lambda r: load("zero_border_ct.nii.gz"), (1,), False),
    "real_ct": (real_ct, (0,), False),
    "no_foreground_air": (
        lambda r: Volume.from_array(
            np.random.default_rng(3).normal(-1000, 5, (20, 30, 40)).astype(np.float32),
            (3.0, 2.5, 2.5),
        ),
        (0,),
        False,
    ),
    "all_zero": (
        lambda r: Volume.from_array(np.zeros((12, 20, 24), np.float32), (3.0, 2.5, 2.5)),
        (0,),
        False,
    ),
}


SLOW = {"typical_2folds_mirror"}  # ~1 min on the 2-core CI machine (nnU-Net's side mostly)


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES]
)
def test_parity_with_nnunet_predictor(case: str, real_data: Path) -> None:
    make, folds, mirroring = CASES[case]
    vol = make(real_data)
    figures = compare(vol, folds, mirroring)
    if case == "typical_2folds_mirror":
        assert figures["voxels_1"] >= 1000 and figures["voxels_2"] > 0
    if case == "anisotropic_separate_z_mirror":
        assert max(vol.spacing) / min(vol.spacing) > 3


def test_one_fold_vs_two_folds_both_match(real_data: Path) -> None:
    vol = load("typical_ct.nii.gz")
    one = compare(vol, (0,), False)
    two = compare(vol, (0, 1), False)
    assert one != two


# --- stage by stage ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["typical", "anisotropic", "zero_border"])
def test_preprocessing_equals_nnunet(name: str) -> None:
    vol = load(f"{name}_ct.nii.gz")
    ref = reference((0,), False)
    data, _, props = DefaultPreprocessor(verbose=False).run_case_npy(
        vol.array[None].astype(np.float32), None, {"spacing": list(vol.spacing)},
        ref.plans_manager, ref.configuration_manager, ref.dataset_json,
    )
    pre = preprocess(vol.array, vol.spacing, ours((0,), False).spec)
    assert [list(b) for b in props["bbox_used_for_cropping"]] == pre.bbox
    assert data.shape == pre.data.shape
    np.testing.assert_allclose(pre.data, data, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "new_shape", "cur", "new", "order"),
    [
        ((9, 20, 22), (14, 17, 30), (3.0, 2.4, 2.4), (2.0, 2.8, 1.8), 3),
        ((5, 20, 22), (16, 17, 30), (9.0, 2.4, 2.4), (2.8, 2.8, 1.8), 3),  # separate z
        ((16, 17, 30), (5, 20, 22), (2.8, 2.8, 1.8), (9.0, 2.4, 2.4), 1),  # back, separate z
        ((12, 10, 9), (12, 31, 27), (1.0, 1.0, 1.0), (1.0, 0.3, 0.3), 1),  # target anisotropic
    ],
)
def test_resampling_equals_nnunet(
    shape: tuple[int, ...], new_shape: tuple[int, ...], cur: tuple[float, ...],
    new: tuple[float, ...], order: int,
) -> None:
    data = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    ref = resample_data_or_seg_to_shape(
        data, new_shape, cur, new, is_seg=False, order=order, order_z=0, force_separate_z=None
    )
    got = resample(data, new_shape, cur, new, ResamplingSpec(order=order, order_z=0))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_parity_with_a_transposing_plan(tmp_path: Path) -> None:
    """plans.transpose_forward != identity (axes reordered before cropping/normalising)."""
    import json
    import shutil

    folder = tmp_path / MODEL.name
    shutil.copytree(MODEL, folder, ignore=shutil.ignore_patterns("fold_1"))
    plans = json.loads((folder / "plans.json").read_text())
    plans["transpose_forward"], plans["transpose_backward"] = [2, 0, 1], [1, 2, 0]
    (folder / "plans.json").write_text(json.dumps(plans))
    torch.set_num_threads(1)
    ref = nnUNetPredictor(
        tile_step_size=0.5, use_mirroring=False, perform_everything_on_device=False,
        device=torch.device("cpu"), allow_tqdm=False,
    )
    ref.initialize_from_trained_model_folder(str(folder), use_folds=(0,))
    spec = ours((0,), False).spec.model_copy(
        update={"transpose_forward": [2, 0, 1], "transpose_backward": [1, 2, 0]}
    )
    seg = Segmenter(EXPORT, device="cpu", threads=1, folds=[0], mirroring=False, spec=spec)
    vol = load("small_ct.nii.gz")
    seg_ref, prob_ref = ref.predict_single_npy_array(
        vol.array[None], {"spacing": list(vol.spacing)}, None, None, True
    )
    probs, _ = seg.probabilities(vol)
    assert probs.shape == prob_ref.shape == (3, *vol.shape)
    assert np.abs(probs - prob_ref).max() <= 1e-2
    assert np.abs(probs - prob_ref).mean() <= 1e-4
    assert (np.argmax(probs, 0) == seg_ref).mean() >= 0.999


def _two_d_model(tmp_path: Path) -> Path:
    """A '2d' configuration next to the fixture's plans, with seeded random weights."""
    import json

    from hccatom.export.nnunet_export import build_network

    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__2d"
    (folder / "fold_0").mkdir(parents=True)
    dataset = json.loads((MODEL / "dataset.json").read_text())
    plans = json.loads((MODEL / "plans.json").read_text())
    cfg = json.loads(json.dumps(plans["configurations"]["3d_fullres"]))
    cfg.update(data_identifier="nnUNetPlans_2d", patch_size=[32, 40], spacing=cfg["spacing"][1:])
    ak = cfg["architecture"]["arch_kwargs"]
    ak.update(
        conv_op="torch.nn.modules.conv.Conv2d",
        norm_op="torch.nn.modules.instancenorm.InstanceNorm2d",
        kernel_sizes=[[3, 3]] * 4, strides=[[1, 1], [2, 2], [2, 2], [2, 2]],
    )
    plans["configurations"]["2d"] = cfg
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    torch.manual_seed(0)
    net = build_network(pm, pm.get_configuration("2d"), dataset, "nnUNetTrainer")
    torch.save(
        {"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
         "init_args": {"configuration": "2d"}, "inference_allowed_mirroring_axes": (0, 1)},
        folder / "fold_0" / "checkpoint_final.pth",
    )
    return folder


def test_parity_2d_configuration(tmp_path: Path) -> None:
    """The 2-D path (slice-wise tiles, 2-D Gaussian, mirror axes (0, 1)) on random weights."""
    from hccatom.export.nnunet_export import export_nnunet

    folder = _two_d_model(tmp_path)
    result = export_nnunet(folder, tmp_path / "export2d")
    assert result.spec.dims == 2 and result.spec.mirror_axes == [0, 1]
    torch.set_num_threads(1)
    ref = nnUNetPredictor(
        tile_step_size=0.5, use_mirroring=True, perform_everything_on_device=False,
        device=torch.device("cpu"), allow_tqdm=False,
    )
    ref.initialize_from_trained_model_folder(str(folder), use_folds=(0,))
    vol = load("anisotropic_ct.nii.gz")  # 14 slices; in-plane resampling only
    seg_ref, prob_ref = ref.predict_single_npy_array(
        vol.array[None], {"spacing": list(vol.spacing)}, None, None, True
    )
    probs, _ = Segmenter(tmp_path / "export2d", device="cpu", threads=1).probabilities(vol)
    diff = np.abs(probs - prob_ref)
    print(f"parity 2d {vol.shape}: max {diff.max():.2e} mean {diff.mean():.2e}")
    assert diff.max() <= 1e-2 and diff.mean() <= 1e-4
    assert (np.argmax(probs, 0) == seg_ref).mean() >= 0.999
