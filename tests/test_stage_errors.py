"""Stage functions raise typed HccatomErrors (so recommend_many(on_error='yield') sees them)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from hccatom.clinical_encoding import ClinicalEncoding
from hccatom.errors import ClinicalInputError, HccatomError, InputError
from hccatom.predictor import _phase_workers
from hccatom.preprocess import (
    crop_liver_box,
    model_image,
    resample_z,
    resize_center_crop,
    window_hu,
)
from hccatom.volume import Volume


def _volume() -> Volume:
    return Volume(array=np.zeros((4, 8, 8), np.float32), spacing=(2.0, 1.0, 1.0))


def _labels() -> Volume:
    lab = np.zeros((4, 8, 8), np.uint8)
    lab[1, 2:6, 2:6] = 1
    return Volume(array=lab, spacing=(2.0, 1.0, 1.0))


CASES: dict[str, Callable[[], object]] = {
    "resample_z thickness": lambda: resample_z(_volume(), 0.0),
    "resample_z order": lambda: resample_z(_volume(), 1.0, order=7),
    "window_hu": lambda: window_hu(_volume(), 10.0, 10.0),
    "crop slice_index": lambda: crop_liver_box(_volume(), _labels(), 9),
    "crop box_mm": lambda: crop_liver_box(_volume(), _labels(), 1, box_mm=0.0),
    "model_image 3-D": lambda: model_image(np.zeros((2, 4, 4), np.float32)),
    "model_image window": lambda: model_image(np.zeros((4, 4), np.float32), window=(1, 0)),
    "model_image std": lambda: model_image(np.zeros((4, 4), np.float32), std=0.0),
    "resize_center_crop": lambda: resize_center_crop(np.zeros((4, 4), np.float32), 4, 8),
    "phase_workers": lambda: _phase_workers(3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_stage_argument_errors_are_typed(name: str) -> None:
    with pytest.raises(InputError) as info:
        CASES[name]()
    assert isinstance(info.value, HccatomError)
    assert isinstance(info.value, ValueError)  # still a ValueError for older callers
    assert str(info.value)


def test_fit_standardise_errors_are_clinical_input_errors() -> None:
    with pytest.raises(ClinicalInputError, match="at least 2 patients"):
        ClinicalEncoding.fit_standardise([])
