"""hccatom.read_ct / read_labels / write_volume: real files, orientation, every input error."""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hccatom
from hccatom.ct_io import AIR_HU, read_ct, read_labels, to_sitk, write_volume
from hccatom.errors import CTInputError
from hccatom.volume import Volume

IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


# --- helpers ----------------------------------------------------------------------------
def _phantom(shape: tuple[int, int, int] = (6, 20, 24), seed: int = 0) -> np.ndarray:
    """A small CT-like int16 array: air outside, soft tissue and a bright spot inside."""
    rng = np.random.default_rng(seed)
    arr = np.full(shape, -1000, dtype=np.int16)
    z, y, x = shape
    arr[:, 2 : y - 2, 3 : x - 3] = rng.integers(-100, 200, (z, y - 4, x - 6))
    arr[min(1, z - 1), 4, 5] = 1500
    return arr


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    *,
    z_positions: list[float] | None = None,
    uid: str = "1.2.826.0.1.3680043.10.1",
    modality: str = "CT",
    description: str = "synthetic",
    pixel_mm: float = 0.8,
    prefix: str = "s",
) -> None:
    """Write a (z, y, x) int16 HU array as one DICOM file per slice (rescale -1024 / 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    zs = z_positions if z_positions is not None else [2.0 * i for i in range(hu.shape[0])]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i, z in enumerate(zs):
        sl = sitk.GetImageFromArray(hu[i : i + 1].astype(np.int16))
        sl.SetSpacing((pixel_mm, pixel_mm, 2.0))
        sl.SetOrigin((-10.0, -20.0, float(z)))
        tags = {
            "0008|0060": modality,
            "0020|000e": uid,
            "0008|103e": description,
            "0020|0013": str(i + 1),
            "0008|0018": f"{uid}.{i + 1}",
            "0028|1052": "-1024",
            "0028|1053": "1",
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{prefix}{i:03d}.dcm"))
        writer.Execute(sl)


def _write_image(path: Path, array: np.ndarray, spacing_xyz: tuple[float, ...]) -> Path:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing_xyz)
    sitk.WriteImage(img, str(path))
    return path


# --- real files ---------------------------------------------------------------------------
def test_real_nifti_reoriented_to_lps(real_data: Path) -> None:
    path = real_data / "totalseg_example" / "example_ct_sm.nii.gz"
    raw = sitk.ReadImage(str(path))
    # the file is stored with x -> Right, y -> Anterior (direction diag(-1, -1, 1) in LPS)
    assert np.allclose(raw.GetDirection(), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    vol = read_ct(path)
    assert vol.shape == (30, 101, 122)
    assert vol.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert vol.direction == IDENTITY
    assert vol.array.dtype == np.float32
    raw_zyx = sitk.GetArrayFromImage(raw)
    np.testing.assert_array_equal(vol.array, raw_zyx[:, ::-1, ::-1])
    assert float(vol.array.min()) == -1100.0 and float(vol.array.max()) == 1207.0
    # origin is the LPS point of the new voxel (0, 0, 0): the old far corner in x and y
    far = raw.TransformIndexToPhysicalPoint((121, 100, 0))
    assert vol.origin == pytest.approx((far[2], far[1], far[0]))
    assert vol.notes == ()


def test_real_totalseg_dicom_series(real_data: Path) -> None:
    folder = real_data / "totalseg_example" / "example_ct_dicom"
    vol = read_ct(folder)
    assert vol.shape == (20, 512, 512)
    assert vol.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert vol.direction == IDENTITY
    assert vol.origin == pytest.approx((-804.5, -437.51171875, -249.51171875))
    # stored values 0.. with intercept -1024: air outside the body reads -1024 HU
    assert float(vol.array.min()) == -1024.0 and float(vol.array.max()) == 1839.0
    assert vol.notes == ()
    # the same series as a SimpleITK image and as a Volume reads to the same thing
    again = read_ct(vol)
    np.testing.assert_array_equal(again.array, vol.array)
    assert again.same_grid(vol)


def test_real_dcmqi_padding_and_rescale(real_data: Path) -> None:
    folder = real_data / "dcmqi_ct3slice" / "dicom"
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    info = sitk.ImageFileReader()
    info.SetFileName(files[0])
    info.ReadImageInformation()
    stored_padding = float(info.GetMetaData("0028|0120"))  # -2000, stored units
    slope = float(info.GetMetaData("0028|1053"))
    intercept = float(info.GetMetaData("0028|1052"))
    expected_padding_hu = stored_padding * slope + intercept  # -3024 if rescale is applied
    assert expected_padding_hu == -3024.0
    reference = sitk.GetArrayFromImage(sitk.ReadImage(files))
    n_padding = int((reference <= -1500).sum())
    assert reference.min() == expected_padding_hu and n_padding > 0

    vol = hccatom.read_ct(folder)
    assert vol.shape == (3, 512, 512)
    assert vol.spacing == pytest.approx((1.0, 0.810547, 0.810547), abs=1e-5)
    assert float(vol.array.min()) == AIR_HU
    assert float(vol.array.max()) == 1381.0
    assert len(vol.notes) == 1
    note = vol.notes[0]
    assert "padding" in note and f"{n_padding} voxels" in note and "-3024" in note
    # everything that was not padding is untouched
    keep = reference > -1500
    np.testing.assert_array_equal(vol.array[keep], reference[keep].astype(np.float32))


def test_real_nrrd_labels_align_with_dcmqi_ct(real_data: Path) -> None:
    ct = read_ct(real_data / "dcmqi_ct3slice" / "dicom")
    liver = read_labels(real_data / "dcmqi_ct3slice" / "liver_seg.nrrd")
    both = read_labels(real_data / "dcmqi_ct3slice" / "liver_spine_seg.nrrd")
    assert liver.array.dtype == np.uint8
    assert set(np.unique(liver.array)) == {0, 1}
    assert set(np.unique(both.array)) == {0, 1, 2}
    assert liver.same_grid(ct, atol_mm=1e-3) and both.same_grid(ct, atol_mm=1e-3)
    # a manual liver label on the same grid covers soft tissue, the spine covers bone
    liver_hu = float(np.median(ct.array[liver.array == 1]))
    spine_hu = float(np.median(ct.array[both.array == 2]))
    assert 20.0 < liver_hu < 200.0
    assert spine_hu > liver_hu + 50.0


def test_real_totalseg_labels_liver_is_soft_tissue(real_data: Path) -> None:
    ct = read_ct(real_data / "totalseg_example" / "example_ct_sm.nii.gz")
    seg = read_labels(real_data / "totalseg_example" / "example_seg.nii.gz")
    assert seg.same_grid(ct)
    liver = seg.array == 5
    assert int(liver.sum()) == 38634
    assert 0.0 < float(np.median(ct.array[liver])) < 250.0


# --- orientation ----------------------------------------------------------------------------
def _reoriented_copy(image: sitk.Image, order: tuple[int, int, int], flips: tuple[bool, ...]):
    """The same physical image stored with another axis order / direction."""
    return sitk.Flip(sitk.PermuteAxes(image, list(order)), list(flips))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_orientation_real_file_flipped_and_permuted(
    real_data: Path, tmp_path: Path, suffix: str
) -> None:
    path = real_data / "totalseg_example" / "example_ct_sm.nii.gz"
    reference = read_ct(path)
    copy = _reoriented_copy(sitk.ReadImage(str(path)), (2, 0, 1), (True, False, True))
    assert not np.allclose(copy.GetDirection(), sitk.ReadImage(str(path)).GetDirection())
    out = tmp_path / f"copy{suffix}"
    sitk.WriteImage(copy, str(out))
    vol = read_ct(out)
    np.testing.assert_array_equal(vol.array, reference.array)
    assert vol.spacing == pytest.approx(reference.spacing)
    assert vol.origin == pytest.approx(reference.origin, abs=1e-3)
    np.testing.assert_allclose(vol.direction, reference.direction, atol=1e-6)


_PHANTOM_IMAGE = to_sitk(
    Volume.from_array(_phantom((5, 7, 9)), (2.5, 0.7, 0.9), origin=(10.0, -20.0, 30.0))
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.sampled_from(list(itertools.permutations(range(3)))),
    flips=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    suffix=st.sampled_from([".nrrd", ".mha", ".nii"]),
)
def test_orientation_property_any_permutation_and_flip(
    tmp_path_factory: pytest.TempPathFactory,
    order: tuple[int, int, int],
    flips: tuple[bool, bool, bool],
    suffix: str,
) -> None:
    reference = read_ct(_PHANTOM_IMAGE)
    copy = _reoriented_copy(_PHANTOM_IMAGE, order, flips)
    out = tmp_path_factory.mktemp("orient") / f"copy{suffix}"
    sitk.WriteImage(copy, str(out))
    for source in (copy, out):
        vol = read_ct(source)
        np.testing.assert_array_equal(vol.array, reference.array)
        assert vol.spacing == pytest.approx((2.5, 0.7, 0.9))
        assert vol.origin == pytest.approx((10.0, -20.0, 30.0), abs=1e-4)
        np.testing.assert_allclose(vol.direction, IDENTITY, atol=1e-6)


# --- sources, writing, padding ----------------------------------------------------------
def test_volume_roundtrip_and_write_volume(tmp_path: Path) -> None:
    vol = Volume.from_array(_phantom().astype(np.float32), (2.0, 0.8, 0.6), origin=(-5.0, 3.0, 7.0))
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        back = read_ct(write_volume(vol, tmp_path / f"ct{suffix}"))
        np.testing.assert_array_equal(back.array, vol.array)
        assert back.same_grid(vol, atol_mm=1e-4)
    labels = Volume.from_array(
        (_phantom() > 0).astype(np.uint8) * 2, (2.0, 0.8, 0.6), origin=(-5.0, 3.0, 7.0)
    )
    back_labels = read_labels(write_volume(labels, tmp_path / "labels.nrrd"))
    assert back_labels.array.dtype == np.uint8
    np.testing.assert_array_equal(back_labels.array, labels.array)
    with pytest.raises(CTInputError, match=r"\.png"):
        write_volume(vol, tmp_path / "ct.png")


def test_padding_minus_2048_becomes_air_with_note() -> None:
    arr = _phantom().astype(np.float32)
    arr[:, :, :2] = -2048.0
    vol = read_ct(Volume.from_array(arr, (1.0, 1.0, 1.0), notes=("given",)))
    assert float(vol.array.min()) == AIR_HU
    assert vol.notes[0] == "given"
    n = arr.shape[0] * arr.shape[1] * 2
    assert f"{n} voxels" in vol.notes[1] and "-2048" in vol.notes[1]


def test_dicom_series_synthetic_roundtrip_rescale(tmp_path: Path) -> None:
    hu = _phantom((4, 12, 14))
    write_dicom_series(tmp_path / "ct", hu)
    vol = read_ct(tmp_path / "ct")
    np.testing.assert_array_equal(vol.array, hu.astype(np.float32))
    assert vol.spacing == pytest.approx((2.0, 0.8, 0.8))
    # stored pixel values are HU + 1024 (intercept -1024): the reader undid the rescale
    info = sitk.ImageFileReader()
    info.SetFileName(str(tmp_path / "ct" / "s000.dcm"))
    info.ReadImageInformation()
    assert float(info.GetMetaData("0028|1052")) == -1024.0


def test_several_series_listed_and_selectable(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    write_dicom_series(folder, _phantom((4, 12, 14)), uid="1.2.3.100", description="arterial")
    write_dicom_series(
        folder, _phantom((3, 12, 14), seed=1), uid="1.2.3.200", description="portal", prefix="p"
    )
    with pytest.raises(CTInputError) as err:
        read_ct(folder)
    msg = str(err.value)
    assert "2 DICOM series" in msg and "series_uid=" in msg
    assert "UID 1.2.3.100 (4 slices)" in msg
    assert "UID 1.2.3.200 (3 slices)" in msg
    # Series Descriptions are free text (may identify the patient): never printed (#18)
    assert "arterial" not in msg and "portal" not in msg
    assert read_ct(folder, series_uid="1.2.3.200").shape == (3, 12, 14)
    assert read_ct(folder, series_uid="1.2.3.100").shape == (4, 12, 14)
    with pytest.raises(CTInputError, match=r"'9\.9' is not in folder"):
        read_ct(folder, series_uid="9.9")


# --- every error --------------------------------------------------------------------------
def test_error_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CTInputError, match="not found"):
        read_ct(tmp_path / "nope.nii.gz")


def test_error_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(CTInputError, match="empty"):
        read_ct(tmp_path / "empty.nii.gz")


def test_error_corrupt_file(real_data: Path, tmp_path: Path) -> None:
    data = (real_data / "totalseg_example" / "example_ct_sm.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 3])
    with pytest.raises(CTInputError, match="corrupt or truncated"):
        read_ct(tmp_path / "cut.nii.gz")
    (tmp_path / "junk.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\ngarbage\n")
    with pytest.raises(CTInputError, match="corrupt or truncated"):
        read_ct(tmp_path / "junk.nrrd")


def test_error_non_image_file(real_data: Path) -> None:
    with pytest.raises(CTInputError, match="not an image file"):
        read_ct(real_data / "README.md")


def test_error_not_a_source() -> None:
    with pytest.raises(CTInputError, match="cannot read a int"):
        read_ct(42)  # type: ignore[arg-type]


def test_error_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CTInputError, match="No DICOM series"):
        read_ct(tmp_path)


def test_error_2d_image(real_data: Path, tmp_path: Path) -> None:
    png = _write_image(tmp_path / "slice.png", np.zeros((16, 16), np.uint8), (1.0, 1.0))
    with pytest.raises(CTInputError, match="2-D image"):
        read_ct(png)
    with pytest.raises(CTInputError, match=r"2-D image.*series folder"):
        read_ct(real_data / "dcmqi_ct3slice" / "dicom" / "01.dcm")
    flat = sitk.GetImageFromArray(_phantom((1, 10, 10)))
    with pytest.raises(CTInputError, match="2-D image"):
        read_ct(flat)


def test_error_4d_image() -> None:
    img = sitk.Image([4, 4, 4, 3], sitk.sitkInt16)
    with pytest.raises(CTInputError, match="4-D image"):
        read_ct(img)


def test_error_colour_image() -> None:
    rgb = sitk.GetImageFromArray(np.zeros((3, 8, 8, 3), np.int16), isVector=True)
    with pytest.raises(CTInputError, match="3 values per voxel"):
        read_ct(rgb)


def test_error_non_ct_modality(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "mr", _phantom((3, 8, 8)), modality="MR")
    with pytest.raises(CTInputError, match="Modality 'MR'; expected 'CT'"):
        read_ct(tmp_path / "mr")


def test_error_inconsistent_slice_spacing(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "gap", _phantom((4, 8, 8)), z_positions=[0.0, 2.0, 4.0, 8.0])
    with pytest.raises(CTInputError, match=r"Inconsistent slice spacing.*2\.000\.\.4\.000 mm"):
        read_ct(tmp_path / "gap")


def test_error_duplicated_slice_positions(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "dup", _phantom((3, 8, 8)), z_positions=[0.0, 2.0, 2.0])
    with pytest.raises(CTInputError, match="same position"):
        read_ct(tmp_path / "dup")


def test_error_non_finite_values(tmp_path: Path) -> None:
    arr = _phantom().astype(np.float32)
    arr[2, 3, 4] = np.nan
    arr[0, 0, 0] = np.inf
    path = _write_image(tmp_path / "nan.mha", arr, (1.0, 1.0, 1.0))
    with pytest.raises(CTInputError, match="2 non-finite values"):
        read_ct(path)


@pytest.mark.parametrize("spacing", [(25.0, 1.0, 1.0), (1.0, 0.01, 1.0), (1.0, 1.0, 1e6)])
def test_error_absurd_spacing(tmp_path: Path, spacing: tuple[float, float, float]) -> None:
    path = _write_image(tmp_path / "sp.nrrd", _phantom(), spacing)
    with pytest.raises(CTInputError, match=r"voxel spacing.*expected each between"):
        read_ct(path)


def test_error_non_positive_spacing() -> None:
    bad = Volume(array=_phantom().astype(np.float32), spacing=(0.0, 1.0, 1.0))
    with pytest.raises(CTInputError, match=r"spacing \(0.0, 1.0, 1.0\).*expected each between"):
        read_ct(bad)
    negative = Volume(array=_phantom().astype(np.float32), spacing=(1.0, -0.5, 1.0))
    with pytest.raises(CTInputError, match=r"spacing \(1.0, -0.5, 1.0\)"):
        read_ct(negative)
    rotated = Volume(array=_phantom().astype(np.float32), spacing=(1.0, -0.5, 1.0),
                     direction=((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)))
    with pytest.raises(CTInputError, match="spacing must be positive"):  # via SimpleITK
        read_ct(rotated)


def test_volume_input_is_not_altered_and_keeps_geometry() -> None:
    array = _phantom().astype(np.float32)
    array[0, 0, :4] = -3024.0  # scanner padding
    before = array.copy()
    vol = Volume(array=array, spacing=(2.0, 0.7, 0.7), origin=(5.0, -3.0, 1.0))
    out = read_ct(vol)
    np.testing.assert_array_equal(array, before)  # the caller's array is untouched
    assert out.array[0, 0, :4].tolist() == [AIR_HU] * 4
    assert out.spacing == vol.spacing and out.origin == vol.origin
    assert any("scanner padding: 4 voxels" in n for n in out.notes)
    nan = array.copy()
    nan[1, 1, 1] = np.nan
    with pytest.raises(CTInputError, match="1 non-finite"):
        read_ct(Volume(array=nan, spacing=(2.0, 0.7, 0.7)))


@pytest.mark.parametrize(
    ("array", "hint"),
    [
        (np.linspace(0, 255, 6 * 8 * 8).reshape(6, 8, 8).astype(np.uint8), "8-bit"),
        (np.linspace(0, 255, 6 * 8 * 8).reshape(6, 8, 8).astype(np.int16), "8-bit"),
        (np.linspace(0, 1, 6 * 8 * 8).reshape(6, 8, 8).astype(np.float32), r"\[0, 1\]"),
        (np.linspace(0, 3000, 6 * 8 * 8).reshape(6, 8, 8).astype(np.uint16), "rescale"),
        (np.linspace(0, 9000, 6 * 8 * 8).reshape(6, 8, 8).astype(np.float32), "MR"),
        (np.linspace(-3, 8, 6 * 8 * 8).reshape(6, 8, 8).astype(np.float32), "normalised"),
    ],
)
def test_error_not_hounsfield(tmp_path: Path, array: np.ndarray, hint: str) -> None:
    path = _write_image(tmp_path / "img.nrrd", array, (1.0, 1.0, 1.0))
    with pytest.raises(CTInputError, match=r"(does not look like CT|8-bit)") as err:
        read_ct(path)
    msg = str(err.value)
    assert "Hounsfield" in msg
    assert f"{array.min():g}" in msg  # says what was seen
    assert re.search(hint, msg)


def test_error_labels_not_integer(tmp_path: Path) -> None:
    path = _write_image(tmp_path / "lab.nrrd", np.full((3, 4, 4), 0.5, np.float32), (1, 1, 1))
    with pytest.raises(CTInputError, match="non-integer"):
        read_labels(path)
    with pytest.raises(CTInputError, match="not found"):
        read_labels(tmp_path / "none.nrrd")


def test_copied_real_series_still_reads(real_data: Path, tmp_path: Path) -> None:
    """A copy of a real series next to nothing else reads the same (no hidden state)."""
    src = real_data / "dcmqi_ct3slice" / "dicom"
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    np.testing.assert_array_equal(read_ct(dst).array, read_ct(src).array)
