"""The cascade's hand-over: the previous stage's segmentation as extra input channels.

nnU-Net v2's ``3d_cascade_fullres`` stage gets the ``3d_lowres`` stage's label map (on the
input grid, dataset label values) next to the CT. Its preprocessor
(``DefaultPreprocessor.run_case_npy``) treats that map as the case's segmentation:

1. transpose and crop it with the image's non-zero box (``crop_to_nonzero``); inside the box,
   background voxels outside the hole-filled non-zero mask become ``-1``;
2. resample it to the network grid with ``resampling_fn_seg`` (``is_seg=True``: each label's
   indicator resampled with ``order``, the per-voxel argmax over labels, exact ties settled by
   the nearest-neighbour label; with a separate low-resolution axis the in-plane step is done
   slice by slice and the axis itself by nearest neighbour, ``order_z = 0``);
3. one-hot encode the foreground labels (``convert_labelmap_to_one_hot(seg,
   label_manager.foreground_labels)``; ``-1`` and ``0`` encode as all zeros) and stack the
   channels after the CT channel (``data_iterators.py``).

The resize of each indicator follows the installed batchgenerators' ``resize_segmentation``
(scikit-image ``resize``, ``mode='edge'``, ``clip=True``, no anti-aliasing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from hccatom.segmentation.resampling import _nearest_along, separate_z_axis, skimage_resize
from hccatom.segmentation.spec import ResamplingSpec

OUTSIDE = -1
"""Label nnU-Net writes for background voxels outside the non-zero mask (``crop_to_nonzero``)."""


def mark_outside(cropped_labels: np.ndarray, cropped_image: np.ndarray) -> np.ndarray:
    """``crop_to_nonzero``'s marking: background outside the hole-filled non-zero mask -> -1."""
    mask = ndimage.binary_fill_holes(cropped_image != 0)
    out = cropped_labels.astype(np.int16, copy=True)
    out[(out == 0) & ~mask] = OUTSIDE
    return out


def _resize_labels(labels: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    """``resize_segmentation``: per-label indicator resize, argmax, ties to the nearest label."""
    values = np.unique(labels)
    if values.size == 1:
        return np.full(tuple(new_shape), values[0], dtype=labels.dtype)
    nearest = skimage_resize(labels.astype(np.float64), new_shape, 0)
    nearest_index = np.searchsorted(values, np.rint(nearest).astype(labels.dtype))
    best: np.ndarray | None = None
    winner = np.zeros(tuple(new_shape), dtype=np.intp)
    nearest_score = np.zeros(tuple(new_shape), dtype=np.float64)
    for i, value in enumerate(values):
        score = skimage_resize((labels == value).astype(np.float64), new_shape, order)
        if order > 1:
            np.clip(score, 0.0, 1.0, out=score)
        is_nearest = nearest_index == i
        nearest_score[is_nearest] = score[is_nearest]
        if best is None:
            best = score
            continue
        better = score > best
        winner[better] = i
        np.maximum(best, score, out=best)
    assert best is not None
    # an exact tie goes to the nearest neighbour's label when it is among the tied ones
    winner = np.where((nearest_score == best) & (nearest_score > 0), nearest_index, winner)
    return values[winner]


def resample_labels(
    labels: np.ndarray,
    new_shape: Sequence[int],
    current_spacing: Sequence[float],
    new_spacing: Sequence[float],
    spec: ResamplingSpec,
) -> np.ndarray:
    """``resample_data_or_seg_to_shape(is_seg=True)`` for one ``(z, y, x)`` label map."""
    target = tuple(int(s) for s in new_shape)
    if tuple(labels.shape) == target:
        return labels
    if spec.order_z != 0:
        raise ValueError("label resampling supports order_z=0 only (nnU-Net's default)")
    axis = separate_z_axis(
        current_spacing, new_spacing, spec.force_separate_z, spec.anisotropy_threshold
    )
    if axis is None:
        return _resize_labels(labels, target, spec.order)
    in_plane = tuple(s for i, s in enumerate(target) if i != axis)
    tmp_shape = list(target)
    tmp_shape[axis] = labels.shape[axis]
    tmp = np.empty(tmp_shape, dtype=labels.dtype)
    for k in range(labels.shape[axis]):
        idx: list[slice | int] = [slice(None)] * 3
        idx[axis] = k
        tmp[tuple(idx)] = _resize_labels(labels[tuple(idx)], in_plane, spec.order)
    if labels.shape[axis] == target[axis]:
        return tmp
    # map_coordinates(order=0, mode='nearest') along the axis, as for the data
    return np.take(tmp, _nearest_along(labels.shape[axis], target[axis]), axis=axis)


def one_hot_foreground(labels: np.ndarray, num_channels: int) -> np.ndarray:
    """``convert_labelmap_to_one_hot(labels, foreground_labels)``: ``(num_channels - 1, ...)``
    float32, channel ``k`` is 1 where the label is ``k + 1``."""
    out = np.zeros((num_channels - 1, *labels.shape), dtype=np.float32)
    for k in range(1, num_channels):
        out[k - 1][labels == k] = 1.0
    return out
