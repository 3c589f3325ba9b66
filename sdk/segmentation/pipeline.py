"""The nnU-Net v2 inference pipeline as plain functions of arrays (no engines, no files).

``preprocess`` -> ``sliding_window_logits`` (calls a tile predictor) -> ``logits_to_labels``
(or ``logits_to_probabilities``). Each mirrors one part of nnU-Net's predictor; the module
docstrings of :mod:`.preprocessing`, :mod:`.resampling` and :mod:`.sliding_window` say which.
:mod:`.device_window` runs the same steps on the engine's device.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hccatom.errors import SegmentationError
from hccatom.segmentation.cascade import mark_outside, one_hot_foreground, resample_labels
from hccatom.segmentation.label_resampling import channel_argmax, linear_resize_argmax
from hccatom.segmentation.preprocessing import BBox, bbox_slices, ct_normalize, nonzero_bbox
from hccatom.segmentation.resampling import compute_new_shape, resample, separate_z_axis
from hccatom.segmentation.sliding_window import (
    gaussian_importance,
    mirror_combinations,
    pad_to_patch,
    tile_starts,
)
from hccatom.segmentation.spec import SegmentationSpec


def _slabs(n: int, size: int = 16) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class NonFiniteLogitsError(SegmentationError):
    """The accumulated logits contain inf or NaN (nnU-Net's predictor raises there too)."""


def check_finite(logits: np.ndarray) -> None:
    """Raise :class:`NonFiniteLogitsError` when ``logits`` hold inf or NaN."""
    for zs in _slabs(logits.shape[1] if logits.ndim > 1 else 1):
        part = logits[:, zs] if logits.ndim > 1 else logits
        if not np.isfinite(part).all():
            raise NonFiniteLogitsError(
                "the segmentation logits contain inf or NaN after accumulation (as nnU-Net "
                "checks); the model or its Gaussian value scale overflows; try "
                "accumulate='float32' or re-export the model"
            )


TilePredictor = Callable[[np.ndarray], np.ndarray]
"""Maps a float32 batch ``(B, channels, *patch)`` to logits ``(B, C, *patch)`` (one network)."""
Progress = Callable[[int, int], None]
"""Called with (tiles done, tiles total) after every batch."""


@dataclass(frozen=True)
class Preprocessed:
    """The network-space image and what is needed to map predictions back."""

    data: np.ndarray
    """(channels, *shape) float32, normalised, at the plan spacing, transposed axis order:
    the CT, then (cascades) the previous stage's one-hot foreground labels."""
    bbox: BBox
    """Crop box in the transposed input grid."""
    shape_before_cropping: tuple[int, ...]
    shape_after_cropping: tuple[int, ...]
    spacing_transposed: tuple[float, ...]
    target_spacing: tuple[float, ...]
    """Spacing of ``data`` (3 entries, also for 2-D configurations)."""


def _add_time(timings: dict[str, float] | None, key: str, t0: float) -> float:
    now = time.perf_counter()
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + (now - t0)
    return now


def preprocess(
    image_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    spec: SegmentationSpec,
    timings: dict[str, float] | None = None,
    previous_labels_zyx: np.ndarray | None = None,
) -> Preprocessed:
    """Transpose, crop to non-zero, CT-normalise and resample one CT (``run_case_npy``).

    ``previous_labels_zyx`` (cascades): the previous stage's channel indices on the same
    grid; resampled and one-hot encoded into extra channels after the CT
    (:mod:`.cascade`).
    """
    t0 = time.perf_counter()
    tf = spec.transpose_forward
    data = np.transpose(np.asarray(image_zyx, dtype=np.float32), tf)
    spacing_t = tuple(float(spacing_zyx[i]) for i in tf)
    shape_before = tuple(int(s) for s in data.shape)
    box = nonzero_bbox(data)
    data = data[bbox_slices(box)]
    shape_after = tuple(int(s) for s in data.shape)
    t0 = _add_time(timings, "crop", t0)
    if spec.dims == 2:
        target = (spacing_t[0], *spec.target_spacing_mm)
    else:
        target = tuple(spec.target_spacing_mm)
    new_shape = compute_new_shape(shape_after, spacing_t, target)
    data = ct_normalize(data, spec.ct_intensity)[None]
    t0 = _add_time(timings, "normalize", t0)
    data = resample(data, new_shape, spacing_t, target, spec.resampling_data, np.float32)
    if previous_labels_zyx is not None:
        data = np.concatenate(
            [data, _previous_stage_channels(previous_labels_zyx, box, image_zyx, new_shape,
                                            spacing_t, target, spec)]
        )
    _add_time(timings, "resample_in", t0)
    return Preprocessed(
        data=np.ascontiguousarray(data, dtype=np.float32),
        bbox=box,
        shape_before_cropping=shape_before,
        shape_after_cropping=shape_after,
        spacing_transposed=spacing_t,
        target_spacing=tuple(float(t) for t in target),
    )


def _previous_stage_channels(
    labels_zyx: np.ndarray, box: BBox, image_zyx: np.ndarray, new_shape: Sequence[int],
    spacing_t: Sequence[float], target: Sequence[float], spec: SegmentationSpec,
) -> np.ndarray:
    """The previous stage's labels as one-hot channels on the network grid (:mod:`.cascade`)."""
    if spec.previous_stage is None or spec.resampling_segmentation is None:
        raise ValueError("previous-stage labels given for a spec without a previous stage")
    if labels_zyx.shape != image_zyx.shape:
        raise ValueError(
            f"previous-stage labels {labels_zyx.shape} and image {image_zyx.shape} differ in shape"
        )
    tf = spec.transpose_forward
    crop = bbox_slices(box)
    labels = np.transpose(labels_zyx, tf)[crop]
    image = np.transpose(image_zyx, tf)[crop]
    labels = mark_outside(labels, image)
    labels = resample_labels(labels, new_shape, spacing_t, target, spec.resampling_segmentation)
    return one_hot_foreground(labels, spec.previous_stage.num_output_channels)


def _predict_mirrored(
    predictor: TilePredictor, x: np.ndarray, combos: Sequence[tuple[int, ...]]
) -> np.ndarray:
    """``_internal_maybe_mirror_and_predict``: mean of the plain and every mirrored pass."""
    pred = np.asarray(predictor(x), dtype=np.float32).copy()
    for axes in combos:
        flip_axes = tuple(a + 2 for a in axes)
        flipped = np.ascontiguousarray(np.flip(x, flip_axes))
        pred += np.flip(np.asarray(predictor(flipped), dtype=np.float32), flip_axes)
    if combos:
        pred /= len(combos) + 1
    return pred


Accumulation = Literal["float16", "float32"]


def sliding_window_logits(
    data: np.ndarray,
    spec: SegmentationSpec,
    predictors: Sequence[TilePredictor],
    step_size: float = 0.5,
    mirror_axes: Sequence[int] = (),
    batch_size: int = 2,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
    accumulate: Accumulation = "float16",
) -> np.ndarray:
    """Gaussian-weighted sliding-window logits ``(C, *data.shape[1:])``, folds averaged.

    ``accumulate="float16"`` reproduces the arithmetic of nnU-Net's predictor: it keeps
    the weighted-logit sum, the weight sum, the per-fold result and the fold mean in
    float16 (``torch.half``, also on the CPU), each update computed in float32 and rounded.
    Where tile weights are tiny (volume corners covered by one tile) that quantises
    logits coarsely; ``"float32"`` avoids it and differs from nnU-Net there.
    The result is float16 or float32 accordingly. Raises :class:`NonFiniteLogitsError`
    when the result holds inf or NaN.

    Folds run one after another over all tiles (as nnU-Net does). Memory: the padded image,
    one accumulator per output channel, one weight map, one fold sum and one batch of tiles.
    """
    if not predictors:
        raise ValueError("at least one fold predictor is needed")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if accumulate not in ("float16", "float32"):
        raise ValueError(f"accumulate must be 'float16' or 'float32', got {accumulate!r}")
    acc_dtype = np.float16 if accumulate == "float16" else np.float32
    patch = tuple(spec.patch_size)
    padded, unpad = pad_to_patch(data, patch)
    spatial = padded.shape[1:]
    starts = tile_starts(spatial, patch, step_size)
    two_d = spec.dims == 2
    gauss = gaussian_importance(patch, spec.gaussian_sigma_scale, spec.gaussian_value_scale)
    combos = mirror_combinations(list(mirror_axes))
    n_tiles = len(starts)
    total = n_tiles * len(predictors)

    def region(start: tuple[int, ...]) -> tuple[slice | int, ...]:
        if two_d:
            return (start[0], *(slice(s, s + p) for s, p in zip(start[1:], patch, strict=True)))
        return tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))

    net_time = 0.0
    t_start = time.perf_counter()
    fold_sum: np.ndarray | None = None
    done = 0
    for predictor in predictors:
        logits = np.zeros((spec.num_output_channels, *spatial), dtype=acc_dtype)
        weights = np.zeros(spatial, dtype=acc_dtype)
        for b0 in range(0, n_tiles, batch_size):
            regions = [region(s) for s in starts[b0 : b0 + batch_size]]
            x = np.ascontiguousarray(
                np.stack([padded[(slice(None), *r)] for r in regions]), dtype=np.float32
            )
            t_net = time.perf_counter()
            pred = _predict_mirrored(predictor, x, combos)
            net_time += time.perf_counter() - t_net
            for i, r in enumerate(regions):
                sl = (slice(None), *r)
                if acc_dtype is np.float16:
                    logits[sl] = (logits[sl].astype(np.float32) + pred[i] * gauss).astype(
                        np.float16
                    )
                    weights[r] = (weights[r].astype(np.float32) + gauss).astype(np.float16)
                else:
                    logits[sl] += pred[i] * gauss
                    weights[r] += gauss
            done += len(regions)
            if progress is not None:
                progress(done, total)
        # in place, a slab at a time (no full-size float32 temporaries)
        for zs in _slabs(spatial[0]):
            logits[:, zs] = logits[:, zs].astype(np.float32) / weights[zs].astype(np.float32)
        del weights
        if fold_sum is None:
            fold_sum = logits
        else:
            for zs in _slabs(spatial[0]):
                fold_sum[:, zs] = fold_sum[:, zs].astype(np.float32) + logits[:, zs]
            del logits
    assert fold_sum is not None
    if len(predictors) > 1:
        for zs in _slabs(spatial[0]):
            fold_sum[:, zs] = fold_sum[:, zs].astype(np.float32) / len(predictors)
    if timings is not None:
        timings["network"] = timings.get("network", 0.0) + net_time
        timings["tiling"] = timings.get("tiling", 0.0) + (
            time.perf_counter() - t_start - net_time
        )
    out = fold_sum[(slice(None), *unpad[1:])]
    check_finite(out)
    return out


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    """Numerically stable float32 softmax along ``axis``."""
    e = np.array(logits, dtype=np.float32)  # one copy, then everything in place
    e -= e.max(axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def _logits_to_cropped_grid(
    logits: np.ndarray, pre: Preprocessed, spec: SegmentationSpec
) -> np.ndarray:
    """Logits resampled from the network's grid back to the cropped input grid."""
    return resample(
        logits,
        pre.shape_after_cropping,
        pre.target_spacing,
        pre.spacing_transposed,
        spec.resampling_probabilities,
        logits.dtype,
    )


def logits_to_cropped_probabilities(
    logits: np.ndarray,
    pre: Preprocessed,
    spec: SegmentationSpec,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Softmax of the logits resampled to the cropped input grid, ``(C, *cropped)`` float32."""
    t0 = time.perf_counter()
    back = _logits_to_cropped_grid(logits, pre, spec)
    t0 = _add_time(timings, "resample_out", t0)
    probs = softmax(back)
    _add_time(timings, "softmax", t0)
    return probs


def uncrop_probabilities(
    probs: np.ndarray, pre: Preprocessed, spec: SegmentationSpec,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Cropped-grid probabilities onto the input grid (background 1 outside the crop box),
    axes transposed back: ``(C, z, y, x)`` float32."""
    t0 = time.perf_counter()
    full = np.zeros((probs.shape[0], *pre.shape_before_cropping), dtype=np.float32)
    full[0] = 1.0
    full[(slice(None), *bbox_slices(pre.bbox))] = probs
    out = np.ascontiguousarray(np.transpose(full, [0, *(i + 1 for i in spec.transpose_backward)]))
    _add_time(timings, "uncrop", t0)
    return out


def logits_to_probabilities(
    logits: np.ndarray,
    pre: Preprocessed,
    spec: SegmentationSpec,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Resample logits to the cropped input grid, softmax, un-crop, transpose back.

    ``convert_predicted_logits_to_segmentation_with_correct_shape``: outside the crop box
    the background channel is 1. Returns ``(C, z, y, x)`` float32 on the input grid.
    """
    probs = logits_to_cropped_probabilities(logits, pre, spec, timings)
    return uncrop_probabilities(probs, pre, spec, timings)


def labels_on_cropped_grid(
    logits: np.ndarray,
    pre: Preprocessed,
    spec: SegmentationSpec,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Channel indices (uint8) on the cropped input grid: the argmax of the resampled logits.

    Order-1 resampling on one grid (nnU-Net's default) goes through
    :func:`linear_resize_argmax`, which resamples only the voxels whose label is in doubt;
    anything else resamples every channel in full.
    """
    t0 = time.perf_counter()
    res = spec.resampling_probabilities
    axis = separate_z_axis(
        pre.target_spacing, pre.spacing_transposed, res.force_separate_z, res.anisotropy_threshold
    )
    if res.order == 1 and axis is None:
        index = linear_resize_argmax(logits, pre.shape_after_cropping)
        _add_time(timings, "resample_out", t0)  # resampling and argmax in one
        return index
    back = _logits_to_cropped_grid(logits, pre, spec)
    t0 = _add_time(timings, "resample_out", t0)
    index = channel_argmax(back)
    _add_time(timings, "argmax", t0)
    return index


def logits_to_labels(
    logits: np.ndarray,
    pre: Preprocessed,
    spec: SegmentationSpec,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """uint8 hccatom labels on the input grid straight from the logits.

    nnU-Net resamples the logits, applies softmax and takes the argmax; softmax is
    monotonic per voxel, so the argmax of the resampled logits is the same label without
    building the full-size probability array; with order-1 resampling only the voxels whose
    label is in doubt are resampled (:mod:`.label_resampling`). Outside the crop box:
    background.
    """
    index = labels_on_cropped_grid(logits, pre, spec, timings)
    return uncrop_labels(index, pre, spec, timings)


def uncrop_channels(
    index: np.ndarray, pre: Preprocessed, spec: SegmentationSpec,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Channel indices on the cropped grid -> channel indices (uint8) on the input grid
    (channel 0 outside the crop box, axes transposed back): nnU-Net's own label map."""
    t0 = time.perf_counter()
    full = np.zeros(pre.shape_before_cropping, dtype=np.uint8)
    full[bbox_slices(pre.bbox)] = index
    out = np.ascontiguousarray(np.transpose(full, list(spec.transpose_backward)))
    _add_time(timings, "uncrop", t0)
    return out


def uncrop_labels(
    index: np.ndarray, pre: Preprocessed, spec: SegmentationSpec,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Channel indices on the cropped grid -> uint8 hccatom labels on the input grid
    (the spec's channel -> label table; background outside the crop box)."""
    t0 = time.perf_counter()
    lut = np.asarray(spec.labels.channel_to_label, dtype=np.uint8)
    identity = np.array_equal(lut, np.arange(lut.size))
    cropped = index if identity else lut[index]
    full = np.full(pre.shape_before_cropping, lut[0], dtype=np.uint8)
    full[bbox_slices(pre.bbox)] = cropped
    out = np.ascontiguousarray(np.transpose(full, list(spec.transpose_backward)))
    _add_time(timings, "uncrop", t0)
    return out
