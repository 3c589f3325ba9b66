"""The paper's preprocessing: known answers for resampling, window, slice pick, crop, image."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from hccatom.ct_io import read_ct, read_labels
from hccatom.errors import CTInputError, NoLiverError, NoTumourError
from hccatom.preprocess import (
    CropResult,
    PreprocessSpec,
    crop_liver_box,
    model_image,
    pick_slice,
    resample_z,
    resize_center_crop,
    window_hu,
)
from hccatom.volume import Volume


# --- spec -------------------------------------------------------------------------------
def test_spec_defaults_are_the_papers() -> None:
    spec = PreprocessSpec()
    assert spec.slice_thickness_mm == 1.0
    assert spec.hu_window == (-50.0, 350.0)
    assert spec.crop_mm == 224.0 and spec.image_size_px == 224
    assert (spec.norm_mean, spec.norm_std) == (0.5, 0.5)
    assert spec.pad_value_hu == -50.0
    assert spec.apply_window_before_segmentation is False
    assert PreprocessSpec.model_validate_json(spec.model_dump_json()) == spec
    assert PreprocessSpec(crop_pad_value_hu=-1000).pad_value_hu == -1000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hu_window": (350, -50)},
        {"slice_thickness_mm": 0},
        {"norm_std": 0},
        {"liver_label": 2},
        {"resize_center_crop_px": 100},
        {"unknown": 1},
    ],
)
def test_spec_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        PreprocessSpec(**kwargs)


# --- resample_z ---------------------------------------------------------------------------
def _ramp_volume(nz: int, sz: float, origin_z: float = 100.0, seed: int = 0) -> Volume:
    """value = physical z (mm) + an in-plane pattern that must survive untouched."""
    pattern = np.random.default_rng(seed).uniform(-500, 500, (5, 6))
    z = origin_z + sz * np.arange(nz)
    arr = (z[:, None, None] + pattern[None]).astype(np.float32)
    return Volume.from_array(arr, (sz, 0.7, 0.9), origin=(origin_z, -3.0, 4.0))


@pytest.mark.parametrize(
    ("nz", "sz", "thickness"), [(9, 2.5, 1.0), (12, 0.7, 2.0), (7, 1.0, 1.0), (5, 3.0, 1.25)]
)
@pytest.mark.parametrize("order", [1, 3])
def test_resample_z_linear_ramp_stays_linear(
    nz: int, sz: float, thickness: float, order: int
) -> None:
    vol = _ramp_volume(nz, sz)
    out = resample_z(vol, thickness, order=order)
    n = out.shape[0]
    assert n == max(1, round(nz * sz / thickness))
    assert out.spacing == pytest.approx((thickness, 0.7, 0.9))
    assert out.array.dtype == np.float32
    # extent preserved to within half a new slice, and centred on the old centre
    assert abs(n * thickness - nz * sz) <= thickness / 2 + 1e-9
    old_centre = vol.origin[0] + (nz - 1) / 2 * sz
    new_centre = out.origin[0] + (n - 1) / 2 * thickness
    assert new_centre == pytest.approx(old_centre)
    assert out.origin[1:] == vol.origin[1:]
    # ramp: the value at every new slice equals its physical z; in-plane pattern untouched
    new_z = out.origin[0] + thickness * np.arange(n)
    pattern = vol.array[0] - vol.origin[0]
    expected = new_z[:, None, None] + pattern[None]
    np.testing.assert_allclose(out.array, expected, atol=2e-3)
    assert any("z resampled" in note for note in out.notes)


def test_resample_z_cubic_reproduces_a_cubic() -> None:
    z = np.arange(8, dtype=np.float64) * 2.0
    arr = np.broadcast_to((0.01 * z**3 - 0.3 * z**2 + z)[:, None, None], (8, 3, 3))
    vol = Volume.from_array(arr.astype(np.float32), (2.0, 1.0, 1.0))
    out = resample_z(vol, 0.5, order=3)
    zn = out.origin[0] + 0.5 * np.arange(out.shape[0])
    np.testing.assert_allclose(out.array[:, 1, 1], 0.01 * zn**3 - 0.3 * zn**2 + zn, atol=2e-3)


def test_resample_z_same_spacing_is_identity(real_data: Path) -> None:
    vol = read_ct(real_data / "dcmqi_ct3slice" / "dicom")  # 1 mm slices
    out = resample_z(vol, 1.0)
    assert out.shape == vol.shape
    np.testing.assert_allclose(out.array, vol.array, atol=1e-3)
    assert out.origin == pytest.approx(vol.origin, abs=1e-6)


def test_resample_z_real_series_known_grid(real_data: Path) -> None:
    vol = read_ct(real_data / "totalseg_example" / "example_ct_dicom")  # 20 x 2 mm
    out = resample_z(vol, 1.0)
    assert out.shape == (40, 512, 512)
    # first new slice centre sits 0.5 mm below the first old centre (same 40 mm extent)
    assert out.origin == pytest.approx((-805.0, vol.origin[1], vol.origin[2]))
    # new slice k lies at old index (k - 0.5) / 2: new slice 1 at 0.25, between old 0 and 1
    lo = np.minimum(vol.array[0], vol.array[1]) - 200
    hi = np.maximum(vol.array[0], vol.array[1]) + 200
    assert np.mean((out.array[1] >= lo) & (out.array[1] <= hi)) > 0.99


def test_resample_z_labels_nearest_keeps_dtype() -> None:
    lab = np.zeros((4, 3, 3), np.uint8)
    lab[1] = 1
    lab[2] = 2
    vol = Volume.from_array(lab, (3.0, 1.0, 1.0))
    out = resample_z(vol, 1.0, order=0)
    assert out.array.dtype == np.uint8 and out.shape == (12, 3, 3)
    np.testing.assert_array_equal(out.array[:, 0, 0], [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0])


def test_resample_z_moves_origin_along_oblique_axis() -> None:
    c, s = math.cos(0.3), math.sin(0.3)
    # z axis tilted towards y: column 0 of the direction is (c, s, 0) in (z, y, x)
    direction = ((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0))
    vol = Volume.from_array(
        np.zeros((4, 2, 2), np.float32), (2.0, 1.0, 1.0), origin=(0, 0, 0), direction=direction
    )
    out = resample_z(vol, 1.0)
    first = -0.25 * 2.0  # new first centre in mm along the z axis
    assert out.origin == pytest.approx((c * first, s * first, 0.0))
    assert out.direction == vol.direction


def test_resample_z_rejects_bad_arguments() -> None:
    vol = _ramp_volume(4, 2.0)
    with pytest.raises(ValueError, match="thickness_mm"):
        resample_z(vol, 0.0)
    with pytest.raises(ValueError, match="order"):
        resample_z(vol, 1.0, order=7)


# --- window -------------------------------------------------------------------------------
def test_window_hu_volume_and_array() -> None:
    arr = np.array([-1000, -50, 0, 349, 351, 3000], np.float32).reshape(1, 2, 3)
    vol = window_hu(Volume.from_array(arr, (1, 1, 1)), -50, 350)
    np.testing.assert_array_equal(vol.array.ravel(), [-50, -50, 0, 349, 350, 350])
    assert vol.notes[-1] == "HU window [-50, 350]"
    np.testing.assert_array_equal(window_hu(arr, 0, 100).ravel(), [0, 0, 0, 100, 100, 100])
    with pytest.raises(ValueError, match="lo < hi"):
        window_hu(arr, 10, 10)


# --- slice pick ---------------------------------------------------------------------------
def test_pick_slice_largest_tumour_area_in_mm2() -> None:
    lab = np.zeros((6, 40, 40), np.uint8)
    lab[:, 5:35, 5:35] = 1
    lab[1, 10:14, 10:14] = 2  # 16 px
    lab[3, 10:15, 10:15] = 2  # 25 px: the largest
    lab[4, 10:13, 10:13] = 2  # 9 px
    vol = Volume.from_array(lab, (2.0, 0.5, 0.8), origin=(-30.0, 0.0, 0.0))
    pick = pick_slice(vol)
    assert pick.index == 3
    assert pick.tumour_area_mm2 == pytest.approx(25 * 0.5 * 0.8)
    assert pick.liver_area_mm2 == pytest.approx(30 * 30 * 0.5 * 0.8)
    assert pick.z_mm == pytest.approx(-30.0 + 3 * 2.0)


def test_pick_slice_ties_broken_by_liver_area() -> None:
    lab = np.zeros((5, 30, 30), np.uint8)
    lab[1, 5:20, 5:20] = 1
    lab[3, 5:25, 5:25] = 1  # larger liver
    lab[1, 8:12, 8:12] = 2
    lab[3, 8:12, 8:12] = 2  # same tumour area
    pick = pick_slice(Volume.from_array(lab, (1.0, 1.0, 1.0)))
    assert pick.index == 3
    lab[3, 5:25, 5:25] = 0
    lab[3, 5:20, 5:20] = 1
    lab[3, 8:12, 8:12] = 2  # exact tie: the first slice wins (deterministic)
    assert pick_slice(Volume.from_array(lab, (1.0, 1.0, 1.0))).index == 1


def test_pick_slice_custom_labels() -> None:
    lab = np.zeros((3, 10, 10), np.uint8)
    lab[:, 2:8, 2:8] = 5
    lab[2, 4:6, 4:6] = 7
    assert pick_slice(Volume.from_array(lab, (1, 1, 1)), liver_label=5, tumour_label=7).index == 2


def test_pick_slice_errors(real_data: Path) -> None:
    lab = np.zeros((3, 10, 10), np.uint8)
    with pytest.raises(NoLiverError, match="no liver"):
        pick_slice(Volume.from_array(lab, (1, 1, 1)))
    lab[:, 2:8, 2:8] = 1
    with pytest.raises(NoTumourError, match="no tumour"):
        pick_slice(Volume.from_array(lab, (1, 1, 1)))
    real = read_labels(real_data / "dcmqi_ct3slice" / "liver_seg.nrrd")  # liver only
    with pytest.raises(NoTumourError):
        pick_slice(real)


# --- crop -----------------------------------------------------------------------------------
def _slice_volume(ny: int, nx: int, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    ct = np.full((1, ny, nx), fill, np.float32)
    lab = np.zeros((1, ny, nx), np.uint8)
    return ct, lab


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())


def test_crop_anisotropic_pixels_known_geometry() -> None:
    sy, sx = 0.5, 1.0  # 0.5 mm rows, 1 mm columns
    ct, lab = _slice_volume(600, 300)
    # liver 100 mm (y) x 60 mm (x): rows 200..399, columns 100..159
    lab[0, 200:400, 100:160] = 1
    xs = np.arange(300) * sx
    ct[0] = xs[None, :]  # value = x position in mm: a known answer for the resampling
    ctv = Volume.from_array(ct, (1.0, sy, sx))
    labv = Volume.from_array(lab, (1.0, sy, sx))
    crop = crop_liver_box(ctv, labv, 0, box_mm=224.0, size_px=224, pad_value=-50.0)
    assert isinstance(crop, CropResult)
    assert crop.image.shape == (224, 224) and crop.image.dtype == np.float32
    assert crop.pixel_spacing_mm == pytest.approx((1.0, 1.0))
    assert crop.liver_extent_mm == pytest.approx((100.0, 60.0))
    assert not (crop.box_enlarged or crop.liver_touches_border or crop.padded)
    y0, y1, x0, x1 = _bbox(crop.labels == 1)
    # 1 mm output pixels: the liver covers 100 x 60 pixels, centred in the box
    assert y1 - y0 + 1 == pytest.approx(100, abs=1)
    assert x1 - x0 + 1 == pytest.approx(60, abs=1)
    assert (y0 + y1) / 2 == pytest.approx(111.5, abs=0.6)
    assert (x0 + x1) / 2 == pytest.approx(111.5, abs=0.6)
    # pixel j's centre is at x = centre_x - 112 + j + 0.5 mm (linear ramp is exact)
    cx = crop.centre_yx_mm[1]
    expected = cx - 112.0 + np.arange(224) + 0.5
    np.testing.assert_allclose(crop.image[50], expected, atol=1e-3)


def test_crop_liver_at_border_is_flagged_and_padded() -> None:
    ct, lab = _slice_volume(200, 200, fill=100.0)
    lab[0, 50:150, 0:60] = 1  # touches the left edge (x = 0)
    ctv = Volume.from_array(ct, (1.0, 0.8, 0.8))
    crop = crop_liver_box(ctv, Volume.from_array(lab, (1.0, 0.8, 0.8)), 0, pad_value=-50.0)
    assert crop.liver_touches_border and crop.padded and not crop.box_enlarged
    assert any("border" in n for n in crop.notes) and any("outside" in n for n in crop.notes)
    # box 224 mm centred at x = 23.6 mm: the left ~88 mm lie outside the image -> pad value
    assert np.all(crop.image[:, :80] == -50.0)
    assert np.all(crop.image[40:180, 120:] == 100.0)  # rows 33..191 lie inside the image
    # the image is 160 mm tall, the box 224: rows at the top and bottom are padding too
    assert np.all(crop.image[:20, 150] == -50.0) and np.all(crop.image[-20:, 150] == -50.0)


def test_crop_liver_wider_than_box_is_enlarged() -> None:
    ct, lab = _slice_volume(400, 450)
    lab[0, 100:300, 50:400] = 1  # 350 px x 0.9 mm = 315 mm wide
    crop = crop_liver_box(
        Volume.from_array(ct, (1.0, 0.9, 0.9)), Volume.from_array(lab, (1.0, 0.9, 0.9)), 0
    )
    assert crop.box_enlarged and crop.box_mm == pytest.approx(315.0)
    assert crop.pixel_spacing_mm == pytest.approx((315.0 / 224, 315.0 / 224))
    assert any("enlarged" in n for n in crop.notes)
    # the whole liver width is inside the crop (first and last columns hold liver)
    assert crop.labels[112, 0] == 1 and crop.labels[112, -1] == 1
    assert crop.image.shape == (224, 224)


def test_crop_errors() -> None:
    ct, lab = _slice_volume(50, 50)
    ctv = Volume.from_array(ct, (1.0, 1.0, 1.0))
    with pytest.raises(NoLiverError, match="slice 0"):
        crop_liver_box(ctv, Volume.from_array(lab, (1.0, 1.0, 1.0)), 0)
    with pytest.raises(CTInputError, match="different grids"):
        crop_liver_box(ctv, Volume.from_array(lab, (1.0, 2.0, 1.0)), 0)
    with pytest.raises(ValueError, match="slice_index"):
        crop_liver_box(ctv, Volume.from_array(lab, (1.0, 1.0, 1.0)), 3)


def test_crop_real_liver_slice(real_data: Path) -> None:
    ct = read_ct(real_data / "dcmqi_ct3slice" / "dicom")
    liver = read_labels(real_data / "dcmqi_ct3slice" / "liver_seg.nrrd")
    crop = crop_liver_box(ct, liver, 1, box_mm=224.0, size_px=224, pad_value=-50.0)
    y0, y1, x0, x1 = _bbox(crop.labels == 1)
    assert (y0 + y1) / 2 == pytest.approx(111.5, abs=1.0)
    assert (x0 + x1) / 2 == pytest.approx(111.5, abs=1.0)
    assert 20.0 < float(np.median(crop.image[crop.labels == 1])) < 200.0
    img = model_image(crop, (-50.0, 350.0))
    assert img.shape == (3, 224, 224)


# --- model image ------------------------------------------------------------------------------
def test_model_image_known_values() -> None:
    crop = np.array([[-1000.0, -50.0], [150.0, 350.0], [1000.0, 250.0]], np.float32)
    img = model_image(crop, (-50.0, 350.0), 0.5, 0.5)
    assert img.shape == (3, 3, 2) and img.dtype == np.float32
    np.testing.assert_allclose(img[0], [[-1.0, -1.0], [0.0, 1.0], [1.0, 0.5]], atol=1e-6)
    np.testing.assert_array_equal(img[0], img[1])
    np.testing.assert_array_equal(img[0], img[2])
    per_channel = model_image(crop, (-50.0, 350.0), mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 0.25))
    np.testing.assert_allclose(per_channel[:, 1, 0], [0.5, 0.0, -2.0], atol=1e-6)
    with pytest.raises(ValueError, match="2-D"):
        model_image(np.zeros((2, 2, 2)), (-50, 350))
    with pytest.raises(ValueError, match="low < high"):
        model_image(crop, (350, -50))


def test_resize_center_crop_authors_transform() -> None:
    img = np.broadcast_to(np.arange(224, dtype=np.float32)[None, None, :], (3, 224, 224))
    out = resize_center_crop(img, 256, 224)
    assert out.shape == (3, 224, 224)
    # a zoom by 256/224 about the centre: the centre stays, the slope grows to 224/256
    row = out[0, 112]
    assert np.mean(np.diff(row[20:200])) == pytest.approx(224 / 256, rel=1e-3)
    assert (row[111] + row[112]) / 2 == pytest.approx(111.5, abs=0.01)
