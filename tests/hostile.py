"""Builders of crafted (hostile) inputs for the hardening tests and the fuzz seed corpus.

Everything is written byte by byte (``struct``/``numpy``), so each test carries its
reproducer and nothing depends on a writer that would refuse the broken values.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np

_NIFTI_DTYPES = {
    np.dtype(np.uint8): (2, 8), np.dtype(np.int16): (4, 16), np.dtype(np.int32): (8, 32),
    np.dtype(np.float32): (16, 32), np.dtype(np.float64): (64, 64),
    np.dtype(np.complex64): (32, 64),
}


def nifti1_bytes(
    array_xyz: np.ndarray | None = None,
    *,
    pixdim: tuple[float, float, float] = (1.0, 1.0, 2.0),
    srow: tuple[tuple[float, ...], ...] | None = None,
    qform_code: int = 0,
    quatern: tuple[float, float, float] = (0.0, 0.0, 0.0),
    vox_offset: float = 352.0,
    dims: tuple[int, ...] | None = None,
    datatype: int | None = None,
    bitpix: int | None = None,
    scl_slope: float = 0.0,
    endian: str = "<",
) -> bytes:
    """A single-file NIfTI-1 (``n+1``) image: header, 4 extension bytes, voxels (x fastest).

    ``array_xyz`` is indexed ``(x, y, z)`` as NIfTI stores it (default: 8 x 8 x 4 int16 CT
    with air and soft tissue). ``srow`` given -> sform_code 1 with those rows, else the
    sform is off. ``dims`` overrides the declared sizes (e.g. a bomb: large dims, few bytes).
    """
    if array_xyz is None:
        array_xyz = np.full((8, 8, 4), -1000, dtype=np.int16)
        array_xyz[2:6, 2:6, :] = 40
    arr = np.asarray(array_xyz)
    code, bits = _NIFTI_DTYPES[arr.dtype]
    datatype = code if datatype is None else datatype
    bitpix = bits if bitpix is None else bitpix
    shape = arr.shape if dims is None else dims
    hdr = bytearray(348)
    e = endian
    struct.pack_into(e + "i", hdr, 0, 348)
    dim = [len(shape), *shape] + [1] * (7 - len(shape))
    struct.pack_into(e + "8h", hdr, 40, *dim)
    struct.pack_into(e + "hh", hdr, 70, datatype, bitpix)
    struct.pack_into(e + "8f", hdr, 76, 1.0, *pixdim, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into(e + "f", hdr, 108, vox_offset)
    struct.pack_into(e + "ff", hdr, 112, scl_slope, 0.0)
    hdr[123] = 2  # xyzt_units: mm
    struct.pack_into(e + "hh", hdr, 252, qform_code, 1 if srow is not None else 0)
    struct.pack_into(e + "3f", hdr, 256, *quatern)
    if srow is not None:
        for i, row in enumerate(srow):
            struct.pack_into(e + "4f", hdr, 280 + 16 * i, *row)
    hdr[344:348] = b"n+1\x00"
    data = arr.astype(arr.dtype.newbyteorder(e)).tobytes(order="F")
    return bytes(hdr) + b"\x00" * 4 + data


def write(path: Path, data: bytes) -> Path:
    """Write bytes (gzip-compressed when the name ends in .gz); returns the path."""
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.name.endswith(".gz") else data)
    return path


def nifti_bomb(path: Path, side: int = 1024) -> Path:
    """A ``.nii.gz`` declaring ``side``^3 int16 voxels; compresses to a few MB at most.

    Only the first slab is written (so the file is small and cheap to make); the reader
    must refuse it from the declared size before decompressing anything further.
    """
    arr = np.zeros((8, 8, 4), dtype=np.int16)
    head = nifti1_bytes(arr, dims=(side, side, side))
    return write(path, head + b"\x00" * (1 << 20))


def mha_text(data_file: str, dims: tuple[int, int, int] = (4, 4, 4)) -> str:
    """A MetaImage header (``.mhd``) naming ``data_file`` as its ElementDataFile."""
    return (
        "ObjectType = Image\nNDims = 3\n"
        f"DimSize = {dims[0]} {dims[1]} {dims[2]}\n"
        "ElementSpacing = 1 1 1\nElementType = MET_SHORT\n"
        f"ElementDataFile = {data_file}\n"
    )


def nhdr_text(data_file: str, sizes: tuple[int, int, int] = (4, 4, 4)) -> str:
    """A detached NRRD header (``.nhdr``) naming ``data_file``."""
    return (
        "NRRD0004\ntype: short\ndimension: 3\n"
        f"sizes: {sizes[0]} {sizes[1]} {sizes[2]}\n"
        "spacings: 1 1 1\nencoding: raw\nendian: little\n"
        f"data file: {data_file}\n"
    )


def nested_json(depth: int) -> str:
    """``{"a": [[[...]]]}`` nested ``depth`` brackets deep."""
    return '{"albumin_g_per_l": ' + "[" * depth + "]" * depth + "}"


def clinical_values(**overrides: Any) -> dict[str, Any]:
    """A valid clinical record (plain JSON types) with ``overrides`` applied."""
    values: dict[str, Any] = {
        "albumin_g_per_l": 38.5, "alt_u_per_l": 40.0, "ast_u_per_l": 45.0,
        "total_bilirubin_umol_per_l": 15.0, "prothrombin_time_s": 12.0, "inr": 1.1,
        "platelets_10e9_per_l": 150.0, "child_pugh_score": 5, "age_years": 60.0,
        "sex": "male", "ecog": 0, "comorbidity": False, "hbv": True, "ascites": False,
        "afp_ng_per_ml": 20.0, "tumour_number": 1, "max_tumour_diameter_mm": 50.0,
        "bclc_stage": "B", "metastasis": False, "pvtt": False,
    }
    values.update(overrides)
    return values


def nifti2_bytes(
    array_xyz: np.ndarray | None = None,
    *,
    pixdim: tuple[float, float, float] = (1.0, 1.0, 2.0),
    srow: tuple[tuple[float, ...], ...] | None = None,
    endian: str = "<",
) -> bytes:
    """A single-file NIfTI-2 (``n+2``) image: 540-byte header, 4 extension bytes, voxels."""
    if array_xyz is None:
        array_xyz = np.full((8, 8, 4), -1000, dtype=np.int16)
        array_xyz[2:6, 2:6, :] = 40
    arr = np.asarray(array_xyz)
    code, bits = _NIFTI_DTYPES[arr.dtype]
    e = endian
    hdr = bytearray(540)
    struct.pack_into(e + "i", hdr, 0, 540)
    hdr[4:12] = b"n+2\x00\r\n\x1a\n"
    struct.pack_into(e + "hh", hdr, 12, code, bits)
    dim = [arr.ndim, *arr.shape] + [1] * (7 - arr.ndim)
    struct.pack_into(e + "8q", hdr, 16, *dim)
    struct.pack_into(e + "8d", hdr, 104, 1.0, *pixdim, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into(e + "q", hdr, 168, 544)
    struct.pack_into(e + "ii", hdr, 344, 0, 1 if srow is not None else 0)
    if srow is not None:
        for i, row in enumerate(srow):
            struct.pack_into(e + "4d", hdr, 400 + 32 * i, *row)
    struct.pack_into(e + "i", hdr, 500, 2)  # xyzt_units: mm
    data = arr.astype(arr.dtype.newbyteorder(e)).tobytes(order="F")
    return bytes(hdr) + b"\x00" * 4 + data
