"""Training orientation: codes, reorientation (checked against SimpleITK), and a model trained
on RAS-stored arrays run on hccatom's LPS volumes."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hccatom import Segmenter, Volume
from hccatom.engines import OnnxRuntimeEngine
from hccatom.engines.base import TensorSpec
from hccatom.segmentation import SegmentationSpec
from hccatom.segmentation.orientation import Reorientation, is_code, orientation_of

FIXTURE = Path(__file__).parent / "fixtures" / "nnunet"
CODES = ["".join(p) for letters in itertools.product("LR", "PA", "SI")
         for p in itertools.permutations(letters)]


def test_codes() -> None:
    assert len(CODES) == 48 and all(is_code(c) for c in CODES)
    assert not is_code("LLS") and not is_code("LPX") and not is_code("lps")
    assert orientation_of(np.eye(3)) == "LPS"
    ras = Reorientation.between("LPS", "RAS")
    assert ras.source_axis == (0, 1, 2) and ras.flip == (False, True, True)


@pytest.mark.parametrize("seed", range(8))
def test_reorientation_matches_simpleitk_dicomorient(seed: int) -> None:
    rng = np.random.default_rng(seed)
    src, dst = rng.choice(CODES, 2)
    img = sitk.GetImageFromArray(rng.normal(size=(3, 4, 5)).astype(np.float32))
    img.SetSpacing((0.5, 0.7, 2.0))
    img.SetDirection(sitk.DICOMOrientImageFilter.GetDirectionCosinesFromOrientation(src))
    # our reading of the direction matrix agrees with SimpleITK's code
    d = np.asarray(img.GetDirection()).reshape(3, 3)[::-1, ::-1]  # (z, y, x) / (S, P, L)
    assert orientation_of(d) == src
    ro = Reorientation.between(str(src), str(dst))
    theirs = sitk.DICOMOrient(img, str(dst))
    np.testing.assert_array_equal(ro.forward(sitk.GetArrayFromImage(img)),
                                  sitk.GetArrayFromImage(theirs))
    assert ro.forward_spacing(img.GetSpacing()[::-1]) == pytest.approx(theirs.GetSpacing()[::-1])
    a = rng.normal(size=(2, 3, 4, 5))
    np.testing.assert_array_equal(ro.backward(ro.forward(a)), a)  # leading channel axis too


class RasTrainedEngine:
    """The fixture network as if it had been trained on RAS-stored copies of its data.

    The fixture was trained on arrays stored LPS. The same network fed the x/y-mirrored
    input, with its output mirrored back, is the model that sees RAS-stored arrays exactly as
    the fixture saw LPS ones: g(a) = flip_xy(f(flip_xy(a))).
    """

    def __init__(self, inner: OnnxRuntimeEngine) -> None:
        self.inner = inner

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.inner.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.inner.outputs

    @property
    def providers(self) -> list[str]:
        return self.inner.providers

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        flipped = {k: np.ascontiguousarray(v[..., ::-1, ::-1]) for k, v in feeds.items()}
        out = self.inner.run(flipped)
        return {k: np.ascontiguousarray(v[..., ::-1, ::-1]) for k, v in out.items()}


def load(name: str) -> Volume:
    img = sitk.ReadImage(str(FIXTURE / "volumes" / name))
    return Volume.from_array(sitk.GetArrayFromImage(img).astype(np.float32),
                             img.GetSpacing()[::-1])


def test_model_trained_on_ras_arrays_sees_them_on_lps_input() -> None:
    spec = SegmentationSpec.load(FIXTURE / "export")
    assert spec.training_orientation is None
    fold = spec.folds[0]
    ras_spec = SegmentationSpec.model_validate(
        {**spec.model_dump(by_alias=True), "training_orientation": "RAS", "folds": [fold]}
    )
    engine = RasTrainedEngine(OnnxRuntimeEngine(FIXTURE / "export" / fold.onnx, device="cpu",
                                                threads=1))
    ct = load("typical_ct.nii.gz")  # canonical LPS, as read_ct gives
    assert orientation_of(ct.direction) == "LPS"
    kw = {"mirroring": False, "threads": 1}
    reference = Segmenter(FIXTURE / "export", device="cpu", folds=[fold.fold],
                          **kw).segment(ct).array  # the LPS-trained model on LPS input
    declared = Segmenter(None, spec=ras_spec, engines=[engine], **kw).segment(ct).array
    undeclared = Segmenter(None, spec=spec.model_copy(update={"folds": [fold]}),
                           engines=[engine], **kw).segment(ct).array
    agree = float((declared == reference).mean())
    assert agree >= 0.999, agree
    # the same RAS-trained model fed the LPS array as is (orientation not recorded) is worse
    assert float((undeclared == reference).mean()) < agree
    # (measured: 32 voxels differ when declared - flipped tiling/resampling rounding - and
    # 260 when not, on 39 x 54 x 62)
    assert (undeclared != reference).sum() > 4 * (declared != reference).sum()
    truth = load("typical_labels.nii.gz").array

    def tumour_dice(a: np.ndarray) -> float:
        return float(2 * ((a == 2) & (truth == 2)).sum() / ((a == 2).sum() + (truth == 2).sum()))
    assert tumour_dice(declared) > tumour_dice(undeclared)
    # probabilities come back on the input's grid too
    probs, _ = Segmenter(None, spec=ras_spec, engines=[engine], **kw).probabilities(ct)
    assert probs.shape[1:] == ct.shape
    assert float((np.argmax(probs, axis=0) == declared).mean()) >= 0.999
