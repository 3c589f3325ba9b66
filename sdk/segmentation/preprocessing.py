"""nnU-Net v2 preprocessing steps for one CT channel, numpy/scipy only.

Order as in ``DefaultPreprocessor.run_case_npy``: transpose -> crop to the non-zero region
-> CT normalisation -> resample to the plan spacing. The inverse, for predictions:
resample back -> un-crop -> transpose back (see :mod:`hccatom.segmentation.runtime`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_fill_holes

from hccatom.segmentation.spec import CTIntensityStats

BBox = list[list[int]]
"""Half-open ``[[start, stop], ...]`` per axis, like nnU-Net's bounding boxes."""


def nonzero_bbox(image: np.ndarray) -> BBox:
    """Bounding box of the hole-filled non-zero mask (``crop_to_nonzero``).

    An all-zero image gives the full extent (what nnU-Net's ``get_bbox_from_mask`` returns).
    """
    mask = binary_fill_holes(image != 0)
    box: BBox = []
    for axis in range(image.ndim):
        other = tuple(a for a in range(image.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other))
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
