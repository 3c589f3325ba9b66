"""Preprocessing stages on the CPU, each next to a plain reference measured in the same run.

* DICOM series read: ``hccatom.read_ct`` (orientation, rescale, modality, slice-spacing and
  HU checks) vs a bare SimpleITK ``ImageSeriesReader`` on the same 20-slice real series.
* z resampling to 1 mm: ``hccatom.preprocess.resample_z`` (1-D spline as a slice-weight
  matrix) vs ``scipy.ndimage.zoom`` along z only (order 3), on a 160 x 512 x 512 study at
  1.25 mm.
* liver box crop + model image on one slice vs ``scipy.ndimage.zoom`` of the same box.

Run:  .venv/bin/pytest benchmarks/bench_preprocess.py -o python_files='bench_*.py' \
          --benchmark-only --benchmark-columns=median,min,max,rounds
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from hccatom import Volume, read_ct
from hccatom.preprocess import crop_liver_box, model_image, resample_z

DICOM_DIR = (
    Path(__file__).resolve().parents[1] / "tests" / "data" / "real" / "totalseg_example"
    / "example_ct_dicom"
)


@pytest.fixture(scope="module")
def study() -> Volume:
    """A 160 x 512 x 512 CT-like volume at 0.8 x 0.8 x 1.25 mm (smooth body + noise)."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:160, 0:512, 0:512].astype(np.float32)
    body = ((y - 256) / 200) ** 2 + ((x - 256) / 230) ** 2 < 1
    hu = np.where(body, 40.0 + 0.2 * z, -1000.0).astype(np.float32)
    hu += rng.normal(0, 10, hu.shape).astype(np.float32)
    return Volume.from_array(hu, (1.25, 0.8, 0.8))


def _bare_sitk_read(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


@pytest.mark.benchmark(group="dicom-read")
def test_dicom_read_hccatom(benchmark) -> None:  # type: ignore[no-untyped-def]
    vol = benchmark(read_ct, DICOM_DIR)
    assert vol.shape == (20, 512, 512)


@pytest.mark.benchmark(group="dicom-read")
def test_dicom_read_reference_sitk(benchmark) -> None:  # type: ignore[no-untyped-def]
    arr = benchmark(_bare_sitk_read, DICOM_DIR)
    assert arr.shape == (20, 512, 512)


@pytest.mark.benchmark(group="z-resample")
def test_resample_z_hccatom(benchmark, study: Volume) -> None:  # type: ignore[no-untyped-def]
    out = benchmark.pedantic(resample_z, args=(study, 1.0), rounds=3, iterations=1)
    assert out.shape == (200, 512, 512)


@pytest.mark.benchmark(group="z-resample")
def test_resample_z_reference_ndimage(benchmark, study: Volume) -> None:  # type: ignore[no-untyped-def]
    out = benchmark.pedantic(
        ndimage.zoom, args=(study.array, (1.25, 1.0, 1.0)), kwargs={"order": 3},
        rounds=3, iterations=1,
    )
    assert out.shape == (200, 512, 512)


@pytest.fixture(scope="module")
def liver_case(study: Volume) -> tuple[Volume, Volume, int]:
    labels = np.zeros(study.shape, np.uint8)
    labels[60:120, 150:330, 120:330] = 1
    labels[80:100, 200:240, 200:250] = 2
    return study, study.with_array(labels), 90


@pytest.mark.benchmark(group="crop")
def test_crop_hccatom(benchmark, liver_case: tuple[Volume, Volume, int]) -> None:  # type: ignore[no-untyped-def]
    ct, labels, k = liver_case

    def run() -> np.ndarray:
        return model_image(crop_liver_box(ct, labels, k))

    assert benchmark(run).shape == (3, 224, 224)


@pytest.mark.benchmark(group="crop")
def test_crop_reference_zoom(benchmark, liver_case: tuple[Volume, Volume, int]) -> None:  # type: ignore[no-untyped-def]
    ct, _, k = liver_case
    box = ct.array[k, 116:396, 85:365]  # 280 px = 224 mm at 0.8 mm

    def run() -> np.ndarray:
        return ndimage.zoom(box, 224 / 280, order=1)

    assert benchmark(run).shape == (224, 224)
