"""The label map of order-1 resampled logits, computed only where it is in doubt.

nnU-Net resamples every logit channel to the input grid (order 1) and takes the argmax. On a
512 x 512 x 200 CT that is three full-size float arrays, although almost every voxel's label
is already certain on the network's coarse grid: an order-1 resampled voxel is a convex
combination of the corners of its coarse cell (2 x 2 x 2 network voxels), so when one channel
beats every other by a margin at all corners, it wins at every voxel of the cell.

:func:`linear_resize_argmax` therefore
1. marks each coarse voxel with its channel where it wins by more than a margin (far above
   the rounding of float32 interpolation and of the storage dtype), else as undecided;
2. restricts the output to the block where anything but channel 0 can win (the organ);
3. fills voxels of cells whose corners agree with that channel, and
4. interpolates only the voxels of the other cells, with the same float32 operations in the
   same axis order as :func:`~hccatom.segmentation.resampling.linear_resize`, stored in the
   logits' dtype as nnU-Net stores them, so that their argmax is the same number.
The result equals ``argmax(linear_resize(logits))`` voxel for voxel (tests compare the two).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hccatom.segmentation.resampling import lerp, linear_support, linear_taps, pass_order

UNDECIDED = -1
POINTS_PER_CHUNK = 1 << 15


def channel_argmax(values: np.ndarray) -> np.ndarray:
    """``np.argmax(values, axis=0)`` as uint8 for few channels: one contiguous pass per
    channel instead of a strided reduction (several times faster on full-size grids).
    Ties go to the lower channel, as with ``np.argmax``."""
    best = values[0].copy()
    index = np.zeros(best.shape, dtype=np.uint8)
    for c in range(1, values.shape[0]):
        higher = values[c] > best
        index[higher] = c
        np.maximum(best, values[c], out=best)
    return index


def _margin(values: np.ndarray, stored: np.dtype) -> float:
    """A winning lead that survives float32 interpolation and rounding to ``stored``."""
    rel = max(1e-4, 4.0 * float(np.finfo(stored).eps))
    return rel * float(np.abs(values).max())


def _decided(values: np.ndarray, margin: float) -> np.ndarray:
    """int8 per coarse voxel: the channel that leads every other by more than ``margin``,
    else :data:`UNDECIDED`."""
    best = channel_argmax(values)
    top = np.max(values, axis=0)
    runner_up = np.full(top.shape, -np.inf, dtype=np.float32)
    for c in range(values.shape[0]):
        np.maximum(runner_up, np.where(best == c, -np.inf, values[c]), out=runner_up)
    return np.where(top - runner_up > margin, best.astype(np.int8), np.int8(UNDECIDED))


def _cells(decided: np.ndarray, interpolated: Sequence[bool]) -> np.ndarray:
    """Per cell (lower corner index along interpolated axes): the channel all its corners
    agree on, else :data:`UNDECIDED`."""
    cells = decided
    for axis, interp in enumerate(interpolated):
        if interp:
            n = cells.shape[axis]
            lo = np.take(cells, np.arange(n - 1), axis=axis)
            hi = np.take(cells, np.arange(1, n), axis=axis)
            cells = np.where(lo == hi, lo, np.int8(UNDECIDED))
    return cells


def _interpolate_points(
    values: np.ndarray,
    points: Sequence[np.ndarray],
    taps: Sequence[tuple[np.ndarray, np.ndarray, bool]],
    order: Sequence[int],
) -> np.ndarray:
    """float32 ``(C, N)`` values of every channel at N output points, pass by pass in
    ``order`` with the same arithmetic as :func:`linear_resize` (:func:`lerp`)."""
    ndim = values.ndim - 1
    coarse = values.shape[1:]
    strides = [int(np.prod(coarse[a + 1:], dtype=np.int64)) for a in range(ndim)]
    base = np.zeros(points[0].size, dtype=np.intp)  # flat index of each cell's lower corner
    offsets = np.zeros([1] * ndim, dtype=np.intp)  # flat offsets of the cell's corners
    for axis, (i0, _, interp) in enumerate(taps):
        base += i0[points[axis]] * strides[axis]
        if interp:  # both corners along this axis
            pair = np.array([0, strides[axis]], dtype=np.intp)
            offsets = offsets + pair.reshape([2 if a == axis else 1 for a in range(ndim)])
    flat = base.reshape([-1] + [1] * ndim) + offsets[None]
    # (C, N, 2 or 1 per axis): the corners of each point's cell
    corners = np.take(values.reshape(values.shape[0], -1), flat, axis=1)
    for axis in order:
        i0, w, interp = taps[axis]
        if not interp:
            continue
        weight = w[points[axis]].astype(np.float32).reshape([1, -1] + [1] * ndim)
        corners = lerp(np.take(corners, [0], axis=2 + axis),
                       np.take(corners, [1], axis=2 + axis), weight)
    return corners.reshape(values.shape[0], -1)


def linear_resize_argmax(logits: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """``channel_argmax`` of every channel resized by order-1 ``linear_resize`` (in float32,
    stored in ``logits.dtype``) to ``out_shape``, as uint8, without resizing most voxels."""
    target = tuple(int(n) for n in out_shape)
    if logits.ndim != len(target) + 1:
        raise ValueError(f"logits {logits.shape} do not match the output shape {target}")
    values = np.asarray(logits, dtype=np.float32)
    coarse = values.shape[1:]
    decided = _decided(values, _margin(values, logits.dtype))
    out = np.zeros(target, dtype=np.uint8)
    # block where anything but channel 0 may win
    contested = decided != 0
    window = []
    for axis, n_out in enumerate(target):
        other = tuple(a for a in range(contested.ndim) if a != axis)
        hit = np.flatnonzero(np.any(contested, axis=other))
        if hit.size == 0:
            return out
        window.append(linear_support(coarse[axis], n_out, int(hit[0]), int(hit[-1]) + 1))
    if any(b <= a for a, b in window):
        return out
    taps = []
    for axis, (start, stop) in enumerate(window):
        i0, w, interpolates = linear_taps(coarse[axis], target[axis])
        taps.append((i0[start:stop], w[start:stop], interpolates))
    cells = _cells(decided, [t[2] for t in taps])
    block = cells[np.ix_(*(t[0] for t in taps))]
    points = np.nonzero(block == UNDECIDED)
    if points[0].size:
        order = pass_order(coarse, target)
        winners = np.empty(points[0].size, dtype=np.int8)
        for start in range(0, winners.size, POINTS_PER_CHUNK):  # corners stay in cache
            part = [p[start : start + POINTS_PER_CHUNK] for p in points]
            doubtful = _interpolate_points(values, part, taps, order).astype(logits.dtype)
            winners[start : start + POINTS_PER_CHUNK] = channel_argmax(doubtful)
        block[points] = winners
    out[tuple(slice(a, b) for a, b in window)] = block.view(np.uint8)
    return out
