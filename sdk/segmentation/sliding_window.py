"""Sliding-window pieces of nnU-Net v2 (``inference/sliding_window_prediction.py``), numpy only.

* :func:`compute_steps`: tile start positions per axis, spread evenly so that neighbouring
  tiles overlap by at least ``1 - step_size`` of the patch;
* :func:`gaussian_importance`: the per-voxel tile weight (a centred delta smoothed with
  sigma = patch/8, maximum scaled to 10, zeros replaced by the smallest non-zero value),
  quantised to float16 like the map nnU-Net's predictor builds, then held as float32;
* :func:`pad_to_patch`: nnU-Net's ``pad_nd_image`` with zeros, content centred;
* :func:`tile_starts`: every tile's start, in nnU-Net's loop order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter


def compute_steps(
    image_size: Sequence[int], tile_size: Sequence[int], step_size: float
) -> list[list[int]]:
    """Start positions per axis (``compute_steps_for_sliding_window``)."""
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    if any(i < t for i, t in zip(image_size, tile_size, strict=True)):
        raise ValueError(f"image {tuple(image_size)} is smaller than the tile {tuple(tile_size)}")
    steps: list[list[int]] = []
    for size, tile in zip(image_size, tile_size, strict=True):
        target = tile * step_size
        n = int(np.ceil((size - tile) / target)) + 1
        max_step = size - tile
        actual = max_step / (n - 1) if n > 1 else 99999999999
        steps.append([int(np.round(actual * i)) for i in range(n)])
    return steps


@lru_cache(maxsize=4)
def _gaussian_cached(
    tile_size: tuple[int, ...], sigma_scale: float, value_scale: float
) -> np.ndarray:
    tmp = np.zeros(tile_size)
    tmp[tuple(i // 2 for i in tile_size)] = 1
    g = gaussian_filter(tmp, [i * sigma_scale for i in tile_size], 0, mode="constant", cval=0)
    g /= np.max(g) / value_scale
    g16 = g.astype(np.float16)
    zero = g16 == 0
    if zero.any():
        g16[zero] = np.min(g16[~zero])
    out = g16.astype(np.float32)
    out.setflags(write=False)
    return out


def gaussian_importance(
    tile_size: Sequence[int], sigma_scale: float = 1.0 / 8, value_scale: float = 10.0
) -> np.ndarray:
    """nnU-Net's ``compute_gaussian`` (float16 values, as its predictor uses), as float32.

    Read-only and cached: do not modify the returned array.
    """
    key = tuple(int(t) for t in tile_size)
    return _gaussian_cached(key, float(sigma_scale), float(value_scale))


def pad_to_patch(
    image: np.ndarray, patch_size: Sequence[int]
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad the last ``len(patch_size)`` axes to at least ``patch_size`` (content centred).

    Returns the padded array and the slicer over all axes that undoes the padding
    (``pad_nd_image(..., 'constant', {'value': 0}, return_slicer=True)``).
    """
    lead = image.ndim - len(patch_size)
    old = np.array(image.shape)
    new = np.array([*image.shape[:lead], *patch_size])
    new = np.maximum(new, old)
    diff = new - old
    below = diff // 2
    above = diff // 2 + diff % 2
    if not diff.any():
        return image, tuple(slice(0, int(s)) for s in image.shape)
    widths = [(int(b), int(a)) for b, a in zip(below, above, strict=True)]
    padded = np.pad(image, widths, mode="constant")
    slicer = tuple(slice(int(b), int(n - a)) for b, a, n in zip(below, above, new, strict=True))
    return padded, slicer


def tile_starts(
    image_size: Sequence[int], tile_size: Sequence[int], step_size: float
) -> list[tuple[int, ...]]:
    """All tile start positions, in nnU-Net's nested loop order (first axis outermost).

    For a 2-D network on a 3-D image (``len(tile_size) == len(image_size) - 1``), every
    slice of the first axis gets the 2-D grid; starts then have 3 entries (slice first).
    """
    if len(tile_size) == len(image_size):
        steps = compute_steps(image_size, tile_size, step_size)
        return [tuple(t) for t in itertools.product(*steps)]
    if len(tile_size) == len(image_size) - 1:
        steps = compute_steps(image_size[1:], tile_size, step_size)
        return [(d, *t) for d in range(image_size[0]) for t in itertools.product(*steps)]
    raise ValueError(f"tile {tuple(tile_size)} does not fit image {tuple(image_size)}")


def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every non-empty combination of ``axes`` (nnU-Net's test-time mirroring order)."""
    return [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
