"""nnU-Net v2 preprocessing steps for one CT channel, numpy/scipy only.

Order as in ``DefaultPreprocessor.run_case_npy``: transpose -> crop to the non-zero region
-> CT normalisation -> resample to the plan spacing. The inverse, for predictions:
resample back -> un-crop -> transpose back (see :mod:`hccatom.segmentation.pipeline`).
"""

from __future__ import annotations

import numpy as np

from hccatom.segmentation.spec import CTIntensityStats

BBox = list[list[int]]
"""Half-open ``[[start, stop], ...]`` per axis, like nnU-Net's bounding boxes."""


def nonzero_bbox(image: np.ndarray) -> BBox:
    """Bounding box of the hole-filled non-zero mask (``crop_to_nonzero``).

    Filling holes never moves the box (a hole reaching outside it would touch the all-zero
    border slabs, so it would not be a hole), so the box of the plain mask is taken, one
    slab of slices at a time. An all-zero image gives the full extent (what nnU-Net's
    ``get_bbox_from_mask`` returns).
    """
    if image.ndim == 0:
        raise ValueError("nonzero_bbox needs an array with at least one axis")
    along_first = np.zeros(image.shape[0], dtype=bool)
    footprint = np.zeros(image.shape[1:], dtype=bool)  # non-zero anywhere along axis 0
    for start in range(0, image.shape[0], 16):  # slabs: no full-size mask in memory
        mask = image[start : start + 16] != 0
        along_first[start : start + 16] = mask.reshape(mask.shape[0], -1).any(axis=1)
        footprint |= mask.any(axis=0)
    hits = [np.flatnonzero(along_first)]
    for axis in range(1, image.ndim):
        other = tuple(a for a in range(footprint.ndim) if a != axis - 1)
        hits.append(np.flatnonzero(footprint.any(axis=other)))
    box: BBox = []
    for axis, hit in enumerate(hits):
        if hit.size == 0:
            box.append([0, int(image.shape[axis])])
        else:
            box.append([int(hit[0]), int(hit[-1]) + 1])
    return box


def bbox_slices(box: BBox) -> tuple[slice, ...]:
    """Slices for a half-open bounding box."""
    return tuple(slice(a, b) for a, b in box)


def ct_normalize(image: np.ndarray, stats: CTIntensityStats) -> np.ndarray:
    """``CTNormalization``: clip to the 0.5/99.5 percentiles, subtract mean, divide by std.

    Returns a new float32 array (float32 arithmetic, as nnU-Net does).
    """
    out = np.array(image, dtype=np.float32, copy=True)
    np.clip(out, stats.percentile_00_5, stats.percentile_99_5, out=out)
    out -= stats.mean
    out /= max(stats.std, 1e-8)
    return out
