"""A source series' own grid, reading it, and mapping our labels back onto it.

The chain works on an internal grid: the series read by SimpleITK, reoriented to LPS
(an exact axis permutation/flip) and resampled along z to the bundle's slice thickness.
:func:`labels_to_source` maps a label volume on that grid back to the source series:
for every source pixel centre (Image Position + row/column direction x pixel spacing) it
takes the label of the nearest internal voxel centre. In-plane the internal voxels sit
exactly on the source pixels (same spacing, permuted axes), so only z is a nearest-slice
choice; where the internal z spacing equals the source's, the mapping is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from hccatom.ct_io import read_ct
from hccatom.dicom.errors import DicomStudyError
from hccatom.dicom.index import SeriesInfo, files_of
from hccatom.volume import Volume

__all__ = ["SourceGrid", "SourceSlice", "labels_to_source", "read_series"]

_GAP_RTOL = 0.01


def read_series(series: SeriesInfo) -> Volume:
    """The series' pixels as a canonical HU :class:`Volume` (via SimpleITK, LPS).

    Checks evenly spaced slices first (missing slices would silently stretch the volume).
    """
    z = series.slice_positions_mm()
    if z is None or series.n_slices < 2:
        raise DicomStudyError(f"{series.brief()} has no usable slice positions.")
    gaps = np.diff(z)
    med = float(np.median(gaps))
    if float(gaps.max() - gaps.min()) > max(_GAP_RTOL * med, 0.01):
        raise DicomStudyError(
            f"{series.brief()}: slice gaps range {gaps.min():.3f}..{gaps.max():.3f} mm; "
            "slices are missing or thicknesses are mixed. Export the complete series."
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files_of(series)))
    try:
        image = reader.Execute()
    except RuntimeError:
        raise DicomStudyError(
            f"{series.brief()} cannot be read: a file is corrupt or truncated."
        ) from None
    return read_ct(image)


@dataclass(frozen=True)
class SourceSlice:
    """The source image nearest to a z position of the internal grid."""

    sop_instance_uid: str
    instance_number: int | None
    index: int
    """Position of the image in the series sorted along the normal (0 = most inferior)."""
    distance_mm: float


@dataclass(frozen=True)
class SourceGrid:
    """Geometry of a source series (single-frame images sorted along the normal)."""

    series: SeriesInfo
    positions: np.ndarray
    """(n, 3) Image Position (Patient) per image, LPS mm, x y z."""
    row_dir: np.ndarray
    """Direction of increasing column index (IOP[:3])."""
    col_dir: np.ndarray
    """Direction of increasing row index (IOP[3:])."""
    spacing_rc: tuple[float, float]
    """(row spacing, column spacing) = Pixel Spacing, mm."""
    shape: tuple[int, int, int]
    """(n images, rows, columns)."""

    @classmethod
    def of(cls, series: SeriesInfo) -> SourceGrid:
        """The grid of an indexed series."""
        if (series.orientation is None or series.pixel_spacing_mm is None or series.rows is None
                or series.columns is None or any(i.position is None for i in series.instances)):
            raise DicomStudyError(f"{series.brief()} lacks position/orientation/spacing tags.")
        iop = np.asarray(series.orientation, dtype=float)
        return cls(
            series=series,
            positions=np.asarray([i.position for i in series.instances], dtype=float),
            row_dir=iop[:3], col_dir=iop[3:6], spacing_rc=series.pixel_spacing_mm,
            shape=(series.n_slices, series.rows, series.columns),
        )

    def nearest_slice(self, point_lps: np.ndarray) -> SourceSlice:
        """The image whose plane is nearest to ``point_lps`` (x, y, z mm)."""
        normal = np.cross(self.row_dir, self.col_dir)
        d = (self.positions - point_lps) @ normal
        k = int(np.argmin(np.abs(d)))
        inst = self.series.instances[k]
        return SourceSlice(inst.sop_instance_uid, inst.instance_number, k, float(abs(d[k])))


def _index_map(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """(A, o) with internal index (z, y, x) = A @ (p_lps_xyz - o)."""
    d = np.asarray(volume.direction, dtype=float) * np.asarray(volume.spacing)[None, :]
    # columns of d: physical step (z, y, x components) per index step; reorder to x, y, z
    m = d[::-1, :]  # rows x, y, z; columns index axes z, y, x
    return np.linalg.inv(m), np.asarray(volume.origin, dtype=float)[::-1]


def internal_point(volume: Volume, index_zyx: tuple[float, float, float]) -> np.ndarray:
    """LPS (x, y, z) mm of an internal voxel index (z, y, x)."""
    d = np.asarray(volume.direction, dtype=float) * np.asarray(volume.spacing)[None, :]
    p_zyx = np.asarray(volume.origin, dtype=float) + d @ np.asarray(index_zyx, dtype=float)
    return p_zyx[::-1]


def labels_to_source(labels: Volume, grid: SourceGrid) -> np.ndarray:
    """``labels`` (internal grid) on the source grid: uint8 (images, rows, columns).

    Nearest internal voxel per source pixel centre; pixels outside the internal volume get 0.
    """
    a_inv, o = _index_map(labels)
    n, rows, cols = grid.shape
    src = np.asarray(labels.array)
    out = np.zeros((n, rows, cols), dtype=src.dtype)
    dr = a_inv @ (grid.col_dir * grid.spacing_rc[0])  # index step per source row
    dc = a_inv @ (grid.row_dir * grid.spacing_rc[1])  # index step per source column
    ar, ac = np.rint(dr), np.rint(dc)
    aligned = (np.allclose(dr, ar, atol=1e-4) and np.allclose(dc, ac, atol=1e-4)
               and np.count_nonzero(ar) == 1 and np.count_nonzero(ac) == 1
               and abs(ar).sum() == 1 and abs(ac).sum() == 1 and ar[0] == 0 and ac[0] == 0)
    shape = np.asarray(src.shape)
    for k in range(n):
        i0 = a_inv @ (grid.positions[k] - o)
        if aligned:
            out[k] = _aligned_slice(src, shape, i0, ar, ac, rows, cols)
        else:
            rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
            idx = np.rint(i0[:, None, None] + dr[:, None, None] * rr + dc[:, None, None] * cc)
            idx = idx.astype(np.intp)
            inside = np.all((idx >= 0) & (idx < shape[:, None, None]), axis=0)
            out[k][inside] = src[idx[0][inside], idx[1][inside], idx[2][inside]]
    return out


def _axis_run(start: int, step: int, n: int, size: int) -> tuple[slice, slice] | None:
    """(output slice, source slice) of indices ``start + step * arange(n)`` (step +-1)
    clipped to 0..size-1, as basic slices (views, no fancy indexing)."""
    if step > 0:
        lo, hi = max(0, -start), min(n, size - start)
    else:
        lo, hi = max(0, start - size + 1), min(n, start + 1)
    if hi <= lo:
        return None
    if step > 0:
        return slice(lo, hi), slice(start + lo, start + hi)
    stop = start - hi
    return slice(lo, hi), slice(start - lo, stop if stop >= 0 else None, -1)


def _aligned_slice(src: np.ndarray, shape: np.ndarray, i0: np.ndarray, ar: np.ndarray,
                   ac: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """One source image when its rows/columns run along internal y/x axes (unit steps)."""
    out = np.zeros((rows, cols), dtype=src.dtype)
    iz = int(np.rint(i0[0]))
    if not 0 <= iz < shape[0]:
        return out
    r_axis = 1 if ar[1] != 0 else 2
    c_axis = 1 if ac[1] != 0 else 2
    start = np.rint(i0).astype(int)
    r_run = _axis_run(int(start[r_axis]), int(ar[r_axis]), rows, int(shape[r_axis]))
    c_run = _axis_run(int(start[c_axis]), int(ac[c_axis]), cols, int(shape[c_axis]))
    if r_run is None or c_run is None:
        return out
    plane = src[iz] if r_axis == 1 else src[iz].T  # index as [row axis, column axis]
    out[r_run[0], c_run[0]] = plane[r_run[1], c_run[1]]
    return out
