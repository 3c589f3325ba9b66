"""Check image-file headers ourselves before SimpleITK parses them.

SimpleITK (ITK) trusts headers: a NIfTI sform row holding infinity makes
``ReadImageInformation`` spin at 100 % CPU for minutes, an infinite ``vox_offset`` raises a
raw ``OverflowError``, pixdim 0 or NaN silently becomes 1 mm, a MetaImage
``ElementDataFile = /etc/passwd`` reads a file outside the image's folder, and a 2 MB
``.nii.gz`` declaring 1024^3 voxels is decompressed in full before anything complains.
This module reads the few header bytes/lines itself and refuses such files with a
:class:`~hccatom.errors.CTInputError` that names the field and what to do:

* NIfTI-1/-2 (:func:`check_nifti`): dimensions, datatype (complex and RGB refused),
  ``bitpix``, pixdim (finite, positive: **zero, NaN and negative spacing are refused** - a
  negative voxel size has no defined meaning in NIfTI, flips belong in the qform/sform),
  ``vox_offset`` (finite, integral, inside the file), scaling (finite), qform quaternion and
  offsets (finite, unit-bounded), sform rows (finite, non-singular), and the declared image
  size against the memory budget (:mod:`hccatom.memory_budget`) before decompressing.
* MetaImage ``.mha``/``.mhd`` and NRRD ``.nrrd``/``.nhdr`` (:func:`check_detached_data`): a
  data file named by the header must lie in the header's folder (or below it); the
  declared size is checked against the budget. File content is never echoed.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import math
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from hccatom.errors import CTInputError, InputTooLargeError
from hccatom.memory_budget import array_bytes, check_memory
from hccatom.path_checks import open_regular_file, special_kind

__all__ = [
    "NiftiHeader",
    "check_detached_data",
    "check_nifti",
    "read_nifti_header",
    "scan_nifti_voxels",
]

#: NIfTI datatype code -> (name, bits per voxel) for the scalar types hccatom reads.
NIFTI_SCALAR_TYPES: dict[int, tuple[str, int]] = {
    2: ("uint8", 8), 4: ("int16", 16), 8: ("int32", 32), 16: ("float32", 32),
    64: ("float64", 64), 256: ("int8", 8), 512: ("uint16", 16), 768: ("uint32", 32),
    1024: ("int64", 64), 1280: ("uint64", 64),
}
_NON_SCALAR = {32: "complex64", 1792: "complex128", 2048: "complex256", 128: "RGB24",
               2304: "RGBA32", 1536: "float128"}

#: Bytes the reader holds per voxel at its peak: ITK's buffer in the stored type, the numpy
#: copy, the float32 HU array and one float32 working copy (padding replacement).
READ_OVERHEAD_FLOAT32_COPIES = 2

_MAX_HEADER_LINES = 4096
_MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True)
class NiftiHeader:
    """The NIfTI header fields hccatom checks (NIfTI-1 or -2)."""

    version: int
    endian: str
    dims: tuple[int, ...]
    datatype: int
    bitpix: int
    pixdim: tuple[float, ...]
    vox_offset: float
    scl_slope: float
    scl_inter: float
    qform_code: int
    sform_code: int
    quatern: tuple[float, float, float]
    qoffset: tuple[float, float, float]
    srow: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]

    @property
    def n_voxels(self) -> int:
        """Voxels declared (product of ``dim[1..dim[0]]``; Python int, no overflow)."""
        return math.prod(self.dims)


def _bad(path: Path, field: str, value: object, why: str) -> CTInputError:
    return CTInputError(
        f"{path}: NIfTI header field {field} = {value} {why}. The header is broken or "
        "crafted; re-export the image from the scanner or PACS."
    )


@contextlib.contextmanager
def image_stream(path: Path, gz: bool) -> Iterator[BinaryIO]:
    """The bytes of an image file (decompressed when ``gz``), read through the checked
    descriptor (:func:`hccatom.path_checks.open_regular_file`): a FIFO or device swapped in
    after the path's ``stat`` check is a :class:`CTInputError`, not a blocked read."""
    with open_regular_file(path, "image file", error=CTInputError) as raw:
        if gz:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unpacked:
                yield cast(BinaryIO, unpacked)
        else:
            yield raw


def read_nifti_header(path: Path) -> NiftiHeader | None:
    """Parse the header of a ``.nii``/``.nii.gz`` (None when it is not NIfTI-1/-2 at all)."""
    gz = path.name.lower().endswith(".gz")
    try:
        with image_stream(path, gz) as f:
            head = f.read(540)
    except (OSError, EOFError, zlib.error):
        raise CTInputError(
            f"{path} looks like a NIfTI file but its start cannot be read (broken gzip "
            "stream or I/O error). Re-export or re-copy it."
        ) from None
    for endian in "<>":
        for version, size in _NIFTI_SIZEOF_HDR.items():
            if len(head) >= size and struct.unpack(endian + "i", head[:4])[0] == size:
                return _nifti_header(version, endian, functools.partial(_unpack, head, endian))
    return None


#: The first field of a NIfTI header, its size, tells the version (and the byte order).
_NIFTI_SIZEOF_HDR: dict[int, int] = {1: 348, 2: 540}

#: Where each checked field lies in a NIfTI-1 and a NIfTI-2 header: (struct format, offset).
_NIFTI_LAYOUTS: dict[int, dict[str, tuple[str, int]]] = {
    1: {"dim": ("8h", 40), "datatype": ("h", 70),
        "bitpix": ("h", 72), "pixdim": ("8f", 76), "vox_offset": ("f", 108),
        "scl_slope": ("f", 112), "scl_inter": ("f", 116), "qform_code": ("h", 252),
        "sform_code": ("h", 254), "quatern": ("3f", 256), "qoffset": ("3f", 268),
        "srow_x": ("4f", 280), "srow_y": ("4f", 296), "srow_z": ("4f", 312)},
    2: {"dim": ("8q", 16), "datatype": ("h", 12),
        "bitpix": ("h", 14), "pixdim": ("8d", 104), "vox_offset": ("q", 168),
        "scl_slope": ("d", 176), "scl_inter": ("d", 184), "qform_code": ("i", 344),
        "sform_code": ("i", 348), "quatern": ("3d", 352), "qoffset": ("3d", 376),
        "srow_x": ("4d", 400), "srow_y": ("4d", 432), "srow_z": ("4d", 464)},
}


def _nifti_header(version: int, endian: str,
                  unpack: Callable[[str, int], tuple[Any, ...]]) -> NiftiHeader:
    """The fields of one NIfTI version's header; ``unpack(fmt, offset)`` reads the bytes."""
    layout = _NIFTI_LAYOUTS[version]

    def field(name: str) -> tuple[Any, ...]:
        return tuple(unpack(*layout[name]))

    return NiftiHeader(
        version=version, endian=endian,
        dims=_dims(field("dim")),
        datatype=field("datatype")[0], bitpix=field("bitpix")[0],
        pixdim=tuple(float(v) for v in field("pixdim")),
        vox_offset=float(field("vox_offset")[0]),
        scl_slope=float(field("scl_slope")[0]), scl_inter=float(field("scl_inter")[0]),
        qform_code=field("qform_code")[0], sform_code=field("sform_code")[0],
        quatern=_f3(field("quatern")), qoffset=_f3(field("qoffset")),
        srow=(field("srow_x"), field("srow_y"), field("srow_z")),
    )


def _unpack(head: bytes, endian: str, fmt: str, offset: int) -> tuple[Any, ...]:
    return struct.unpack_from(endian + fmt, head, offset)


def _dims(raw: tuple[int, ...]) -> tuple[int, ...]:
    ndim = int(raw[0])
    if not 1 <= ndim <= 7:
        return ()  # flagged by check_nifti
    return tuple(int(d) for d in raw[1 : 1 + ndim])


def _f3(v: tuple[float, ...]) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def check_nifti(path: Path, *, budget_bytes: int | None = None) -> NiftiHeader | None:
    """Validate a NIfTI file's header and declared size; see the module doc.

    Returns the header (None for a file too short or not NIfTI-1/-2, left to ITK's own
    error). Raises :class:`CTInputError` (or :class:`InputTooLargeError`) otherwise.
    """
    hdr = read_nifti_header(path)
    if hdr is None:
        return None
    if not hdr.dims:
        raise _bad(path, "dim[0]", "(the number of dimensions)", "is outside 1..7")
    if any(d < 1 for d in hdr.dims):
        raise _bad(path, "dim", hdr.dims, "holds a size below 1")
    if hdr.datatype in _NON_SCALAR:
        raise CTInputError(
            f"{path} stores {_NON_SCALAR[hdr.datatype]} voxels (NIfTI datatype "
            f"{hdr.datatype}); a CT holds one real value (HU) per voxel. Export the "
            "magnitude/grey image as a real-valued NIfTI."
        )
    if hdr.datatype not in NIFTI_SCALAR_TYPES:
        raise _bad(path, "datatype", hdr.datatype, "is not a NIfTI scalar type")
    name, bits = NIFTI_SCALAR_TYPES[hdr.datatype]
    if hdr.bitpix != bits:
        raise _bad(path, "bitpix", hdr.bitpix, f"does not match datatype {name} ({bits})")
    for axis in range(1, min(len(hdr.dims), 3) + 1):
        p = hdr.pixdim[axis]
        if not math.isfinite(p) or p == 0:
            raise _bad(path, f"pixdim[{axis}]", p, "is not a usable voxel size (zero or "
                       "not finite); readers silently turn it into 1 mm")
        if p < 0:
            raise _bad(path, f"pixdim[{axis}]", p, "is negative; NIfTI voxel sizes are "
                       "positive and flips belong in the qform/sform, so the orientation is "
                       "ambiguous (hccatom refuses it rather than guess)")
    minimum = 352 if hdr.version == 1 else 544
    if not math.isfinite(hdr.vox_offset) or hdr.vox_offset != int(hdr.vox_offset):
        raise _bad(path, "vox_offset", hdr.vox_offset, "is not a whole byte offset")
    if hdr.vox_offset < 0 or hdr.vox_offset > (1 << 40):
        raise _bad(path, "vox_offset", hdr.vox_offset, "is outside the file")
    if hdr.vox_offset and hdr.vox_offset < minimum:
        raise _bad(path, "vox_offset", hdr.vox_offset, f"points into the header (< {minimum})")
    for field, value in (("scl_slope", hdr.scl_slope), ("scl_inter", hdr.scl_inter)):
        if math.isinf(value):
            raise _bad(path, field, value, "is infinite")
    if hdr.qform_code > 0:
        _check_finite(path, "quatern_b/c/d", hdr.quatern)
        _check_finite(path, "qoffset_x/y/z", hdr.qoffset)
        if sum(q * q for q in hdr.quatern) > 1.0 + 1e-4:
            raise _bad(path, "quatern_b/c/d", hdr.quatern, "is not part of a unit quaternion")
    if hdr.sform_code > 0:
        for i, row in enumerate(hdr.srow):
            _check_finite(path, f"srow_{'xyz'[i]}", row)
        m = np.array([r[:3] for r in hdr.srow], dtype=float)
        norms = np.linalg.norm(m, axis=0)
        if not np.all(norms > 1e-6) or abs(np.linalg.det(m)) < 1e-9 * float(np.prod(norms)):
            raise _bad(path, "srow_x/y/z", tuple(tuple(r) for r in hdr.srow),
                       "is singular (its voxel axes do not span 3-D space)")
    needed = array_bytes(hdr.dims, max(1, hdr.bitpix // 8))
    needed += array_bytes(hdr.dims, 4) * READ_OVERHEAD_FLOAT32_COPIES
    check_memory(
        needed,
        f"Reading {path.name} ({' x '.join(str(d) for d in hdr.dims)} voxels declared)",
        "If the image really is this large, crop or downsample it before passing it; a "
        "small file declaring a huge image is a decompression bomb.",
        error=InputTooLargeError,
        budget_bytes=budget_bytes,
    )
    return hdr


def scan_nifti_voxels(path: Path, hdr: NiftiHeader) -> None:
    """Stream the voxel bytes once: refuse a truncated file and non-finite float voxels.

    ITK reads a truncated NIfTI without complaint (garbage voxels) and turns NaN/infinite
    float voxels into 0 without a note; both are refused here. Memory: one 4 MiB chunk.
    """
    gz = path.name.lower().endswith(".gz")
    itemsize = max(1, hdr.bitpix // 8)
    expected = hdr.n_voxels * itemsize
    floats = hdr.datatype in (16, 64)
    dtype = np.dtype(hdr.endian + ("f4" if hdr.datatype == 16 else "f8"))
    start = max(int(hdr.vox_offset), 352 if hdr.version == 1 else 544)
    got = 0
    bad = 0
    carry = b""
    try:
        with image_stream(path, gz) as f:
            skipped = 0  # to the voxels in 4 MiB steps: vox_offset may claim anything
            while skipped < start and (step := f.read(min(1 << 22, start - skipped))):
                skipped += len(step)
            if skipped < start:
                expected += start - skipped  # counts as missing
            while got < expected and (chunk := f.read(min(1 << 22, expected - got))):
                got += len(chunk)
                if floats:
                    chunk = carry + chunk
                    usable = len(chunk) - len(chunk) % itemsize
                    values = np.frombuffer(chunk[:usable], dtype=dtype)
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                    carry = chunk[usable:]
    except (OSError, EOFError, zlib.error):
        got = -1
    if got < expected:
        raise CTInputError(
            f"{path} looks like an image file but cannot be read: it is corrupt or truncated "
            "(fewer voxel bytes than its NIfTI header promises). Re-export or re-copy it."
        )
    if bad:
        raise CTInputError(
            f"{path} contains {bad} non-finite voxel values (NaN or infinity); a CT holds "
            "finite Hounsfield units (and readers would silently turn them into 0 HU). Fix "
            "or re-export the image."
        )


def _check_finite(path: Path, field: str, values: tuple[float, ...]) -> None:
    if not all(math.isfinite(v) for v in values):
        raise _bad(path, field, tuple(values), "holds infinity or NaN")


# --- MetaImage and NRRD headers ----------------------------------------------------------
_META_KEY = re.compile(r"^\s*([A-Za-z0-9_]+)\s*=\s*(.*?)\s*$")
_NRRD_FIELD = re.compile(r"^([^:#]+?)\s*:=?\s*(.*?)\s*$")


def _header_lines(path: Path, stop: str) -> list[str]:
    """Text lines at the start of ``path`` up to the line matching ``stop`` (bounded)."""
    lines: list[str] = []
    with image_stream(path, gz=False) as fh:
        read = 0
        for raw in fh:
            read += len(raw)
            if read > _MAX_HEADER_BYTES or len(lines) > _MAX_HEADER_LINES:
                break
            line = raw.decode("latin-1").rstrip("\r\n")
            if stop == "blank" and not line.strip():
                break
            lines.append(line)
            if stop == "ElementDataFile" and line.strip().startswith("ElementDataFile"):
                break
    return lines


def _inside(folder: Path, candidate: str, path: Path, key: str) -> None:
    """Refuse a data file outside the header's folder (content never echoed)."""
    try:
        if any(ord(c) < 32 for c in candidate):
            raise ValueError("control character")
        p = Path(candidate)
        target = (p if p.is_absolute() else folder / p).resolve()
        inside = target.is_relative_to(folder.resolve())
    except (OSError, ValueError, RuntimeError):
        raise CTInputError(
            f"{path}: its header field {key} is not a usable file name (control characters "
            "or an impossible path). Re-export the image."
        ) from None
    if not inside:
        raise CTInputError(
            f"{path}: its header field {key} points outside the image's folder "
            f"({candidate[:120]!r}); hccatom reads only data files beside their header. Copy "
            "the data file next to the header and name it relatively."
        )
    try:
        kind = special_kind(os.stat(target).st_mode)
    except OSError:
        return  # missing: the image library reports the unreadable file
    if kind is not None:
        raise CTInputError(
            f"{path}: its header field {key} names {kind}, not a file; reading it would "
            "block or never end. Copy the real data file next to the header."
        )


def check_detached_data(path: Path, *, budget_bytes: int | None = None) -> None:
    """Check a MetaImage (``.mha``/``.mhd``) or NRRD (``.nrrd``/``.nhdr``) header (module doc)."""
    name = path.name.lower()
    folder = path.parent
    if name.endswith((".mha", ".mhd")):
        fields: dict[str, str] = {}
        for line in _header_lines(path, "ElementDataFile"):
            m = _META_KEY.match(line)
            if m:
                fields[m.group(1)] = m.group(2)
        data = fields.get("ElementDataFile")
        if data is not None and data.upper() not in ("LOCAL", ""):
            if data.upper().startswith("LIST"):
                raise CTInputError(
                    f"{path}: ElementDataFile = LIST (one file per slice) is not supported; "
                    "save the volume as one .mha or .nii.gz."
                )
            _inside(folder, data.split()[0] if "%" in data else data, path, "ElementDataFile")
        _check_rank(path, "NDims", fields.get("NDims"))
        dims = fields.get("DimSize", "").split()
        _check_declared(path, dims, budget_bytes)
    elif name.endswith((".nrrd", ".nhdr")):
        fields = {}
        for line in _header_lines(path, "blank")[1:]:
            if line.startswith("#"):
                continue
            m = _NRRD_FIELD.match(line)
            if m:
                fields[m.group(1).strip().lower()] = m.group(2)
        data = fields.get("data file", fields.get("datafile"))
        if data is not None:
            if not data.split():
                raise CTInputError(
                    f"{path}: its header has an empty 'data file:' field; re-export the image."
                )
            if data.upper().startswith("LIST"):
                raise CTInputError(
                    f"{path}: 'data file: LIST' is not supported; save the volume as one "
                    ".nrrd or .nii.gz."
                )
            _inside(folder, data.split()[0], path, "data file")
        _check_rank(path, "dimension", fields.get("dimension"))
        _check_declared(path, fields.get("sizes", "").split(), budget_bytes)


MAX_RANK = 4
"""Image dimensions a header may declare (a CT is 3-D; ITK spins for minutes on NDims 4e19)."""


def _check_rank(path: Path, field: str, value: str | None) -> None:
    """Refuse a declared number of dimensions that is not a small positive integer."""
    if value is None:
        return
    text = value.strip()
    if not (re.fullmatch(r"[0-9]{1,2}", text) and 1 <= int(text) <= MAX_RANK):
        raise CTInputError(
            f"{path}: its header declares {field} = {text[:20]!r}; an image has 1 to "
            f"{MAX_RANK} dimensions (a CT volume 3). The file is corrupt: re-export it."
        )


def _check_declared(path: Path, dims: list[str], budget_bytes: int | None) -> None:
    try:
        sizes = [int(d) for d in dims]
    except ValueError:
        return  # malformed: ITK's reader reports it
    if not sizes or any(s < 0 for s in sizes):
        return
    check_memory(
        array_bytes(sizes, 8) + array_bytes(sizes, 4) * READ_OVERHEAD_FLOAT32_COPIES,
        f"Reading {path.name} ({' x '.join(str(d) for d in sizes)} voxels declared)",
        "If the image really is this large, crop or downsample it before passing it.",
        error=InputTooLargeError,
        budget_bytes=budget_bytes,
    )
