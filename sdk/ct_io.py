"""Read a CT phase into a canonical :class:`~hccatom.volume.Volume` (and write volumes back).

``read_ct`` accepts a DICOM series directory, a single (multi-frame) DICOM file, a NIfTI /
NRRD / MHA file, a ``SimpleITK.Image`` or a ``Volume``. Whatever the input, the result is:

* reoriented to the canonical LPS orientation with ``SimpleITK.DICOMOrient(img, "LPS")``
  (array ``x`` -> patient Left, ``y`` -> Posterior, ``z`` -> Superior). This is an exact axis
  permutation/flip (no interpolation); an oblique scan keeps its residual rotation in
  ``direction``;
* a float32 array in Hounsfield units indexed ``(z, y, x)``, spacing/origin/direction in
  ``(z, y, x)`` order as :mod:`hccatom.volume` documents;
* checked: finite values, plausible spacing (``MIN_SPACING_MM`` .. ``MAX_SPACING_MM``), at
  least two voxels along every axis, and values that look like HU (something at or below
  ``MAX_LOWEST_HU``, i.e. air or lung, and nothing above ``MAX_HU``);
* scanner padding (values <= ``PADDING_THRESHOLD_HU``, e.g. -3024 or -2048 outside the
  field of view) replaced by air (``AIR_HU``), with a note on the Volume giving the count.

DICOM specifics: SimpleITK's series reader applies Rescale Slope/Intercept (the dcmqi test
series stores padding -2000 with intercept -1024 and reads as -3024 HU); Modality (0008,0060)
must be ``CT`` (a missing tag is noted, not fatal: the HU checks still apply); a folder with
several series needs ``series_uid=``; slice positions along the slice normal must be evenly
spaced (missing or duplicated slices are reported).

Hostile files (issue #18): before SimpleITK parses a file, its header is checked by
:mod:`hccatom.image_headers` (NIfTI fields, NaN voxels, MetaImage/NRRD data files outside the
folder, declared size vs. the memory budget) or :mod:`hccatom.dicom_check` (DICOM element
lengths), then read once in a guarded child process (:mod:`hccatom.header_guard`) so that an
unknown header that hangs ITK cannot hang the caller. Geometry is checked (finite origin,
orthonormal direction) before ``DICOMOrient``. Multi-series errors list UIDs and slice
counts only (never Series Descriptions, which are free text).

SimpleITK's ``(x, y, z)`` order is confined to this module.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hccatom.ct_folder import dicom_folder_files
from hccatom.dicom_check import check_dicom_file
from hccatom.errors import CTInputError, InputTooLargeError
from hccatom.header_guard import probe_header
from hccatom.image_headers import check_detached_data, check_nifti, scan_nifti_voxels
from hccatom.memory_budget import array_bytes, check_memory, format_bytes
from hccatom.path_checks import check_input_file, check_input_folder, open_regular_file
from hccatom.volume import Matrix3, Volume, check_direction

__all__ = [
    "AIR_HU",
    "MAX_HU",
    "MAX_LOWEST_HU",
    "MAX_SPACING_MM",
    "MIN_SPACING_MM",
    "PADDING_THRESHOLD_HU",
    "read_ct",
    "read_labels",
    "to_sitk",
    "write_volume",
]

AIR_HU = -1024.0
"""Value that scanner padding is replaced with."""
PADDING_THRESHOLD_HU = -1500.0
"""Values at or below this are padding, not tissue or air (air is about -1000 HU)."""
MAX_LOWEST_HU = -300.0
"""A CT in HU contains air or lung somewhere; its lowest value must be at or below this."""
MAX_HU = 50000.0
"""Even extended-scale CT (metal) stays far below this."""
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
SLICE_SPACING_RTOL = 0.01
"""Relative tolerance for slice-to-slice spacing variation in a DICOM series."""

_WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")

CTSource = str | Path | sitk.Image | Volume


# --- public API -------------------------------------------------------------------------
def read_ct(source: CTSource, *, series_uid: str | None = None) -> Volume:
    """Read one CT phase as a canonical float32 HU :class:`Volume`; see the module doc.

    ``series_uid`` picks one series when a DICOM folder holds several.
    Raises :class:`~hccatom.errors.CTInputError` with what was wrong and what to do.
    """
    notes: list[str] = []
    if isinstance(source, Volume):
        notes.extend(source.notes)
        if _is_lps(source):  # already canonical: no SimpleITK round trip (3 full copies)
            _check_spacing(source.spacing, "the given Volume")
            return _ct_volume_from_array(
                np.asarray(source.array), source.spacing, source.origin, source.direction,
                "the given Volume", notes,
            )
        image = to_sitk(source, dtype=np.float32)
        where = "the given Volume"
    elif isinstance(source, sitk.Image):
        image = source
        where = "the given SimpleITK image"
    elif isinstance(source, str | Path):
        path = Path(source)
        image, where = _read_path(path, series_uid, notes)
    else:
        raise CTInputError(
            f"read_ct cannot read a {type(source).__name__}; pass a DICOM folder, a DICOM/"
            "NIfTI/NRRD/MHA file path, a SimpleITK.Image or a hccatom.Volume."
        )
    return _to_ct_volume(image, where, notes)


def read_labels(source: str | Path | sitk.Image | Volume) -> Volume:
    """Read a label map (e.g. NRRD/NIfTI segmentation) as a canonical uint8 Volume.

    Same orientation handling as :func:`read_ct`; no HU checks. Labels must be integers in
    0..255.
    """
    if isinstance(source, Volume):
        image = to_sitk(source)
        where = "the given Volume"
    elif isinstance(source, sitk.Image):
        image, where = source, "the given SimpleITK image"
    else:
        path = Path(source)
        if not path.exists():
            raise CTInputError(f"Label file not found: {path}. Check the path.")
        if path.is_dir():
            raise CTInputError(f"{path} is a folder; pass a label image file.")
        check_input_file(path, "Label file", error=CTInputError)
        _check_header_before_itk(path)
        image = _read_file(path)
        where = str(path)
    _check_scalar_3d(image, where)
    _check_geometry(_geometry_zyx(image)[2], _geometry_zyx(image)[1], where)
    image = _orient_lps(image, where)
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer) and (
        not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array))
    ):
        raise CTInputError(f"Label map {where} holds non-integer values; expected labels.")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise CTInputError(
            f"Label map {where} has values {array.min()}..{array.max()}; expected 0..255."
        )
    spacing, origin, direction = _geometry_zyx(image)
    _check_spacing(spacing, where)
    return Volume.from_array(array.astype(np.uint8), spacing, origin=origin, direction=direction)


def to_sitk(volume: Volume, dtype: type[np.generic] | None = None) -> sitk.Image:
    """Convert a Volume to a SimpleITK image (geometry reordered to SimpleITK's x, y, z)."""
    array = np.asarray(volume.array)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    spacing = tuple(float(s) for s in volume.spacing)
    if array.ndim != 3:
        raise CTInputError(f"A Volume must hold a 3-D array; got shape {array.shape}.")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise CTInputError(
            f"Volume spacing must be positive and finite (mm), got {spacing} in (z, y, x)."
        )
    check_direction(volume.direction)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(spacing[::-1])
    image.SetOrigin(tuple(float(v) for v in volume.origin[::-1]))
    d = np.asarray(volume.direction, dtype=float)
    image.SetDirection(tuple(d[::-1, ::-1].ravel()))
    return image


def write_volume(volume: Volume, path: str | Path) -> Path:
    """Write a Volume as NIfTI (.nii/.nii.gz), NRRD (.nrrd) or MetaImage (.mha/.mhd).

    The array dtype is kept (float32 CT, uint8 labels). Returns the path written.
    """
    out = Path(path)
    if not out.name.lower().endswith(_WRITE_SUFFIXES):
        raise CTInputError(f"Cannot write {out.name}: use one of {', '.join(_WRITE_SUFFIXES)}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(to_sitk(volume), str(out), useCompression=True)
    return out


# --- reading paths ----------------------------------------------------------------------
def _read_path(path: Path, series_uid: str | None, notes: list[str]) -> tuple[sitk.Image, str]:
    if not os.path.lexists(path):
        raise CTInputError(
            f"CT input not found: {path}. Pass an existing DICOM folder or image file."
        )
    if os.path.isdir(path):
        check_input_folder(path, "CT folder", error=CTInputError)
        return _read_dicom_dir(path, series_uid, notes), f"DICOM folder {path}"
    check_input_file(path, "CT file", error=CTInputError)
    size = path.stat().st_size
    if size == 0:
        raise CTInputError(f"CT file {path} is empty (0 bytes). Re-export or re-copy it.")
    check_memory(size, f"Reading CT file {path} ({format_bytes(size)} on disk)",
                 "Pass the right file (one CT phase).", error=InputTooLargeError)
    _check_header_before_itk(path)
    image_io = sitk.ImageFileReader.GetImageIOFromFileName(str(path))
    if image_io != "NiftiImageIO":  # NIfTI carries no DICOM Modality: one header read less
        reader = _file_info(path)
        if image_io == "GDCMImageIO" or _get(reader, "0008|0060") is not None:
            _check_modality(_get(reader, "0008|0060"), str(path), notes)
    return _read_file(path), str(path)


def _check_header_before_itk(path: Path) -> None:
    """Our own header checks (see :mod:`hccatom.image_headers`), then the subprocess probe
    (:mod:`hccatom.header_guard`) as the last guard, before ITK parses the file."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz", ".hdr", ".hdr.gz")):
        hdr = check_nifti(path)
        if hdr is not None and name.endswith((".nii", ".nii.gz")):
            scan_nifti_voxels(path, hdr)
    elif name.endswith((".mha", ".mhd", ".nrrd", ".nhdr")):
        check_detached_data(path)
    else:
        check_dicom_file(path)
    probe_header(path)


def _file_info(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _read_error(path, exc) from None
    return reader


def _read_file(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise _read_error(path, exc) from None


def _read_error(path: Path, exc: RuntimeError) -> CTInputError:
    text = str(exc)
    if "Unable to determine ImageIO" in text:
        return CTInputError(
            f"{path} is not an image file SimpleITK can read (expected DICOM, NIfTI "
            "(.nii/.nii.gz), NRRD (.nrrd) or MetaImage (.mha/.mhd))."
        )
    return CTInputError(
        f"{path} looks like an image file but cannot be read: it is corrupt or truncated. "
        "Re-export or re-copy it."
    )


def _get(reader: sitk.ImageFileReader, key: str) -> str | None:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else None


def _check_modality(modality: str | None, where: str, notes: list[str]) -> None:
    if modality is None or modality == "":
        notes.append("DICOM Modality (0008,0060) missing; assumed CT (HU checks applied).")
        return
    if modality.upper() != "CT":
        raise CTInputError(
            f"{where} has DICOM Modality {modality!r}; expected 'CT'. hccatom needs the "
            "arterial and portal-venous phase CT series."
        )


def _read_dicom_dir(folder: Path, series_uid: str | None, notes: list[str]) -> sitk.Image:
    for p in dicom_folder_files(folder):  # before GDCM lists the folder (see dicom_check)
        check_dicom_file(p)
    uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not uids:
        raise CTInputError(
            f"No DICOM series found in folder {folder}. Pass a folder holding one CT series "
            "or an image file (NIfTI, NRRD, MHA)."
        )
    if series_uid is None:
        if len(uids) > 1:
            listing = "; ".join(_describe_series(folder, uid) for uid in uids)
            raise CTInputError(
                f"Folder {folder} holds {len(uids)} DICOM series: {listing}. "
                "Choose one with read_ct(folder, series_uid='<UID>')."
            )
        uid = uids[0]
    else:
        if series_uid not in uids:
            listing = "; ".join(_describe_series(folder, u) for u in uids)
            raise CTInputError(
                f"Series UID {series_uid!r} is not in folder {folder}; it holds: {listing}."
            )
        uid = series_uid
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    _check_unlisted_files(folder, uids, uid, files)
    first = _file_info(Path(files[0]))
    _check_modality(_get(first, "0008|0060"), f"DICOM series in {folder}", notes)
    if len(files) > 1:
        _check_slice_positions(files, folder)
    rows, cols = (int(_get(first, k) or 0) for k in ("0028|0010", "0028|0011"))
    check_memory(
        array_bytes((len(files), rows, cols), 2 + 4 * 3),
        f"Reading the DICOM series in {folder} ({len(files)} slices of {rows} x {cols})",
        "Pass a smaller series (e.g. the abdominal phase only).",
        error=InputTooLargeError,
    )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError:
        bad = _find_unreadable_slice(files)
        which = f"file {bad} is corrupt or truncated" if bad else "a file is corrupt or truncated"
        raise CTInputError(
            f"The DICOM series in {folder} cannot be read: {which}. Copy the series again."
        ) from None


def _describe_series(folder: Path, uid: str) -> str:
    """UID and slice count only: descriptions are free text and may identify the patient."""
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    return f"UID {uid} ({len(files)} slices)"


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open_regular_file(path, "CT file", error=CTInputError) as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom")


def _check_unlisted_files(folder: Path, uids: Sequence[str], uid: str,
                          files: Sequence[str]) -> None:
    """Name DICOM files in the folder that belong to no series (unreadable: truncated or
    corrupt), instead of reporting the gap they leave as uneven slice spacing."""
    listed = {str(Path(f).resolve()) for f in files}
    for other in uids:
        if other != uid:
            listed.update(
                str(Path(f).resolve())
                for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), other)
            )
    unreadable = [
        p for p in sorted(folder.iterdir())
        if p.is_file() and str(p.resolve()) not in listed and _looks_like_dicom(p)
    ]
    if unreadable:
        shown = ", ".join(p.name for p in unreadable[:5])
        more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        raise CTInputError(
            f"DICOM folder {folder}: {len(unreadable)} DICOM file(s) cannot be read (truncated "
            f"or corrupt): {shown}{more}. Copy the series again from the source."
        )


def _find_unreadable_slice(files: Sequence[str]) -> str | None:
    for name in files:
        try:
            sitk.ReadImage(name)
        except RuntimeError:
            return Path(name).name
    return None


def _check_slice_positions(files: Sequence[str], folder: Path) -> None:
    """Report uneven slice spacing (missing or duplicated slices) along the slice normal."""
    positions = []
    normal: np.ndarray | None = None
    for name in files:
        reader = _file_info(Path(name))
        pos = _get(reader, "0020|0032")
        ori = _get(reader, "0020|0037")
        if pos is None:
            return  # no positions: SimpleITK falls back to the header spacing
        if normal is None:
            if ori is None:
                return
            cos = [float(v) for v in ori.split("\\")]
            normal = np.cross(cos[:3], cos[3:6])
        positions.append(float(np.dot([float(v) for v in pos.split("\\")], normal)))
    z = np.sort(np.asarray(positions))
    gaps = np.diff(z)
    median = float(np.median(gaps))
    if gaps.min() <= 1e-3:
        dup = int(np.argmin(gaps))
        raise CTInputError(
            f"The DICOM series in {folder} has two slices at the same position "
            f"({z[dup]:.2f} mm along the slice normal). It may mix several acquisitions; "
            "separate them into one folder each."
        )
    if float(gaps.max() - gaps.min()) > max(SLICE_SPACING_RTOL * median, 0.01):
        worst = int(np.argmax(np.abs(gaps - median)))
        raise CTInputError(
            f"Inconsistent slice spacing in the DICOM series in {folder}: gaps between "
            f"sorted slices range {gaps.min():.3f}..{gaps.max():.3f} mm (median {median:.3f} "
            f"mm; odd gap after sorted slice {worst}, at {z[worst]:.2f} mm). Slices are "
            "missing or the series mixes thicknesses; export the complete, evenly spaced "
            "series."
        )


# --- checks and conversion --------------------------------------------------------------
def _check_geometry(direction: Matrix3, origin: Sequence[float], where: str) -> None:
    """Finite origin and a finite orthonormal direction, before ITK's orientation code."""
    try:
        check_direction(direction)
    except CTInputError as exc:
        raise CTInputError(f"{where}: {exc}") from None
    if not all(math.isfinite(v) for v in origin):
        raise CTInputError(
            f"{where} has a non-finite origin {tuple(origin)}; fix the image's geometry."
        )


def _orient_lps(image: sitk.Image, where: str) -> sitk.Image:
    try:
        return sitk.DICOMOrient(image, "LPS")
    except RuntimeError:
        raise CTInputError(
            f"{where} cannot be reoriented to LPS (pixel type "
            f"{image.GetPixelIDTypeAsString()}); expected a real-valued CT. Re-export it."
        ) from None


_COMPLEX_PIXELS = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}


def _check_scalar_3d(image: sitk.Image, where: str) -> None:
    if image.GetPixelID() in _COMPLEX_PIXELS:
        raise CTInputError(
            f"{where} holds complex values ({image.GetPixelIDTypeAsString()}); a CT holds one "
            "real value (HU) per voxel. Export the magnitude image."
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CTInputError(
            f"{where} has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour or "
            "vector image); expected a single grey value (HU) per voxel."
        )
    size = image.GetSize()
    if image.GetDimension() > 3:
        raise CTInputError(
            f"{where} is a {image.GetDimension()}-D image (size {size}); expected one 3-D CT "
            "volume. Split time series or multi-phase stacks into one volume per phase."
        )
    if image.GetDimension() != 3 or min(size) < 2:
        raise CTInputError(
            f"{where} is a 2-D image (size {size} in x, y, z); expected a 3-D CT volume "
            "with at least 2 voxels along every axis. Pass the whole series folder, not "
            "one slice."
        )


def _check_spacing(spacing: Sequence[float], where: str) -> None:
    bad = [s for s in spacing if not math.isfinite(s) or s < MIN_SPACING_MM or s > MAX_SPACING_MM]
    if bad:
        raise CTInputError(
            f"{where} has voxel spacing {tuple(round(s, 4) for s in spacing)} mm (z, y, x); "
            f"expected each between {MIN_SPACING_MM} and {MAX_SPACING_MM} mm. Non-positive "
            "or absurd spacing means a broken header; fix the file's geometry."
        )


def _check_hu(array: np.ndarray, where: str) -> float:
    """Raise unless the array looks like finite Hounsfield units; returns its lowest value."""
    lo, hi = float(array.min()), float(array.max())  # NaN and infinities show up here
    if not (math.isfinite(lo) and math.isfinite(hi)):
        n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise CTInputError(
            f"{where} contains {n_bad} non-finite values (NaN or infinity); a CT holds finite "
            "Hounsfield units. Fix or re-export the image."
        )
    if lo > MAX_LOWEST_HU or hi > MAX_HU:
        if lo >= 0 and hi <= 1:
            guess = " This looks like an intensity normalised to [0, 1]."
        elif lo >= 0 and hi <= 255:
            guess = " This looks like an 8-bit display image (0..255), e.g. a PNG/JPEG export."
        elif lo >= 0 and hi <= 4095:
            guess = (
                " This looks like raw stored values without the rescale intercept (often "
                "-1024) or an MR image."
            )
        elif lo >= 0:
            guess = " This looks like MR or another non-CT intensity scale."
        else:
            guess = " It may be windowed, normalised or not a CT."
        raise CTInputError(
            f"{where} does not look like CT in Hounsfield units: values range "
            f"{lo:g}..{hi:g}. Expected air near -1000 HU (lowest value at most "
            f"{MAX_LOWEST_HU:g}) and nothing above {MAX_HU:g}.{guess} Pass the original CT "
            "in HU."
        )
    return lo


def _geometry_zyx(image: sitk.Image) -> tuple[tuple[float, ...], tuple[float, ...], Matrix3]:
    spacing = tuple(float(s) for s in image.GetSpacing()[::-1])
    origin = tuple(float(v) for v in image.GetOrigin()[::-1])
    d = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[::-1, ::-1]
    direction: Matrix3 = (
        (float(d[0, 0]), float(d[0, 1]), float(d[0, 2])),
        (float(d[1, 0]), float(d[1, 1]), float(d[1, 2])),
        (float(d[2, 0]), float(d[2, 1]), float(d[2, 2])),
    )
    return spacing, origin, direction


def _to_ct_volume(image: sitk.Image, where: str, notes: list[str]) -> Volume:
    _check_scalar_3d(image, where)
    spacing, origin, direction = _geometry_zyx(image)
    _check_spacing(spacing, where)
    _check_geometry(direction, origin, where)
    image = _orient_lps(image, where)
    spacing, origin, direction = _geometry_zyx(image)
    array = sitk.GetArrayFromImage(image)
    return _ct_volume_from_array(array, spacing, origin, direction, where, notes)


def _is_lps(volume: Volume) -> bool:
    """True when the volume's axes already run along L, P, S (what ``DICOMOrient`` gives)."""
    return bool(np.array_equal(np.asarray(volume.direction, dtype=float), np.eye(3)))


def _ct_volume_from_array(
    array: np.ndarray,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[Sequence[float]],
    where: str,
    notes: list[str],
) -> Volume:
    """HU checks and scanner-padding replacement on an LPS-ordered ``(z, y, x)`` array whose
    spacing has been checked."""
    if array.dtype == np.uint8:
        lo, hi = int(array.min()), int(array.max())
        raise CTInputError(
            f"{where} holds 8-bit unsigned values ({lo}..{hi}), e.g. a PNG/JPEG-style "
            "display image; expected CT in Hounsfield units (signed, air near -1000)."
        )
    array = array.astype(np.float32, copy=False)
    lowest = _check_hu(array, where)
    if lowest <= PADDING_THRESHOLD_HU:
        padding = array <= PADDING_THRESHOLD_HU
        n_pad = int(np.count_nonzero(padding))
        array = array.copy()  # never alter the caller's array
        array[padding] = AIR_HU
        notes.append(
            f"scanner padding: {n_pad} voxels at or below {PADDING_THRESHOLD_HU:g} HU "
            f"(lowest {lowest:g}) set to air ({AIR_HU:g} HU)"
        )
    return Volume.from_array(array, spacing, origin=origin, direction=direction, notes=notes)
