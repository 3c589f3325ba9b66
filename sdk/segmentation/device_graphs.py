"""The small ONNX graphs that keep nnU-Net's sliding window on the engine's device.

Each function returns model bytes (written by :mod:`hccatom.engines.graph_writer`, no
``onnx`` import). Volume dimensions are symbolic; the patch, the channel count, the mirror
combinations and the accumulation dtype are built in, so one set of graphs serves every
volume of a :class:`~hccatom.segmentation.Segmenter`.

Accumulators are channels-last, ``(z, y, x, C)``, so that one tile is written back with a
``ScatterND`` whose index tensor has one row per voxel (3 numbers) rather than per value.
The accumulate graphs are run with the accumulator bound as both input and output: ONNX
Runtime's ScatterND (CPU and CUDA) skips its copy of the data when input and output are the
same buffer, so one tile costs O(tile), not O(volume). The arithmetic copies the host path
exactly: the mirrored passes summed in float32 in nnU-Net's order and divided by their
count, times the Gaussian, added to the accumulator in float32 and rounded to the
accumulation dtype; per fold divided by the weight sum and rounded; folds summed and
rounded; the mean; back-resampling (linear, half-pixel centres, edges clamped = nnU-Net's
order-1 ``skimage.transform.resize``) in float32, rounded to the accumulation dtype as the
host path stores it, and the argmax.

Operators used (default domain, opset 17), each with a CUDA kernel for the types used here
in ONNX Runtime's docs/OperatorKernels.md (CUDAExecutionProvider table): Add, Mul (float32,
int64), ArgMax, IsInf, IsNaN, ReduceMax, Resize, Softmax, Pad, Div, Greater (float32), Cast,
Concat, Gather, Reshape, Slice, Squeeze, Transpose, Unsqueeze, Expand, ScatterND,
ConstantOfShape (float32/float16/int64), Range (int64), Or (bool), Where (uint8), Exp, Sub,
ReduceSum, Equal (float32). The tests
check that no other operator appears (:data:`CUDA_OPS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hccatom.engines.graph_writer import Graph

INT64_MIN = -(2**63)

CUDA_OPS = frozenset({
    "Add", "ArgMax", "Cast", "Concat", "ConstantOfShape", "Div", "Equal", "Exp", "Expand",
    "Gather", "Greater", "IsInf", "IsNaN", "Mul", "Or", "Pad", "Range", "ReduceMax",
    "ReduceSum", "Reshape", "Resize", "Sub",
    "ScatterND", "Slice", "Softmax", "Squeeze", "Transpose", "Unsqueeze", "Where",
})
"""Every operator these graphs may use; each has a CUDA kernel in ONNX Runtime."""

_F32 = 1
_F16 = 10
_U8 = 2


def _cast_to(dtype: str) -> int:
    return {"float32": _F32, "float16": _F16}[dtype]


def _flip(g: Graph, x: str, axes: Sequence[int]) -> str:
    """Reverse ``x`` along ``axes`` (Slice with step -1)."""
    if not axes:
        return x
    k = len(axes)
    (y,) = g.node("Slice", [x, g.const([-1] * k), g.const([INT64_MIN] * k),
                            g.const(list(axes)), g.const([-1] * k)])
    return y


def pad_graph() -> bytes:
    """``volume (1, z, y, x)`` float32, ``pads`` int64[8] -> ``padded`` (zeros around)."""
    g = Graph("hccatom_pad")
    v = g.input("volume", "float32", [1, "z", "y", "x"])
    p = g.input("pads", "int64", [8])
    g.node("Pad", [v, p], outputs=["padded"], mode="constant")
    g.output("padded", "float32", [1, "pz", "py", "px"])
    return g.to_bytes()


def zeros_graph(dtype: str, rank: int) -> bytes:
    """``shape`` int64[rank] -> a zero tensor of that shape (allocated on the device)."""
    g = Graph("hccatom_zeros")
    s = g.input("shape", "int64", [rank])
    g.node("ConstantOfShape", [s], outputs=["zeros"], value=np.zeros(1, dtype=dtype))
    g.output("zeros", dtype, [f"d{i}" for i in range(rank)])
    return g.to_bytes()


def tiles_graph(patch: Sequence[int], combos: Sequence[Sequence[int]], n_tiles: int) -> bytes:
    """``padded (1, Z, Y, X)``, ``starts`` int64[n, 3] -> ``batch (n * M, 1, *patch)``.

    Per tile: the plain tile, then each mirror combination (nnU-Net's order); M = 1 +
    number of combinations.
    """
    g = Graph("hccatom_tiles")
    padded = g.input("padded", "float32", [1, "Z", "Y", "X"])
    starts = g.input("starts", "int64", [n_tiles, 3])
    size = g.const(list(patch))
    parts: list[str] = []
    for b in range(n_tiles):
        (row,) = g.node("Gather", [starts, g.const(b)], axis=0)
        (end,) = g.node("Add", [row, size])
        (tile,) = g.node("Slice", [padded, row, end, g.const([1, 2, 3])])
        (tile5,) = g.node("Unsqueeze", [tile, g.const([0])])
        parts.append(tile5)
        for axes in combos:
            parts.append(_flip(g, tile5, [a + 2 for a in axes]))
    if len(parts) == 1:
        g.node("Reshape", [parts[0], g.const([1, 1, *patch])], outputs=["batch"])
    else:
        g.node("Concat", parts, outputs=["batch"], axis=0)
    g.output("batch", "float32", [n_tiles * (len(combos) + 1), 1, *patch])
    return g.to_bytes()


def _region_update(
    g: Graph, acc: str, start: str, update: str, patch: Sequence[int], dtype: str
) -> None:
    """``acc[start:start+patch] = round(float32(acc[...]) + update)``, in place (ScatterND)."""
    (end,) = g.node("Add", [start, g.const(list(patch))])
    (region,) = g.node("Slice", [acc, start, end, g.const([0, 1, 2])])
    if dtype != "float32":
        (region,) = g.node("Cast", [region], to=_F32)
    (summed,) = g.node("Add", [region, update])
    if dtype != "float32":
        (summed,) = g.node("Cast", [summed], to=_cast_to(dtype))
    # index rows (z, y, x) of every voxel of the tile, built on the device
    axis_index = []
    for a, p in enumerate(patch):
        (s,) = g.node("Gather", [start, g.const(a)], axis=0)
        (e,) = g.node("Add", [s, g.const(p)])
        (r,) = g.node("Range", [s, e, g.const(1)])
        shape = [1, 1, 1, 1]
        shape[a] = p
        (r4,) = g.node("Reshape", [r, g.const(shape)])
        (full,) = g.node("Expand", [r4, g.const([*patch, 1])])
        axis_index.append(full)
    (index,) = g.node("Concat", axis_index, axis=3)
    g.node("ScatterND", [acc, index, summed], outputs=["acc_out"])


def accumulate_graph(
    patch: Sequence[int], channels: int, combos: Sequence[Sequence[int]], dtype: str
) -> bytes:
    """Add one tile's Gaussian-weighted, mirror-averaged logits to the accumulator.

    Inputs: ``acc (Z, Y, X, C)`` in ``dtype``, ``pred (N, C, *patch)`` float32 (the network
    output of a batch), ``tile`` int64[1] (which tile of the batch), ``start`` int64[3],
    ``gauss (*patch)`` float32. Output ``acc_out``: bind it to the same OrtValue as ``acc``.
    """
    g = Graph("hccatom_accumulate")
    acc = g.input("acc", dtype, ["Z", "Y", "X", channels])
    pred = g.input("pred", "float32", ["N", channels, *patch])
    tile = g.input("tile", "int64", [1])
    start = g.input("start", "int64", [3])
    gauss = g.input("gauss", "float32", list(patch))
    m = len(combos) + 1
    (base,) = g.node("Mul", [tile, g.const([m])])
    total = ""
    for i, axes in enumerate([(), *combos]):
        (lo,) = g.node("Add", [base, g.const([i])])
        (hi,) = g.node("Add", [lo, g.const([1])])
        (one,) = g.node("Slice", [pred, lo, hi, g.const([0])])
        one = _flip(g, one, [a + 2 for a in axes])
        if total:
            (total,) = g.node("Add", [total, one])
        else:
            total = one
    if m > 1:
        (total,) = g.node("Div", [total, g.const(np.float32(m))])
    (chw,) = g.node("Squeeze", [total, g.const([0])])
    (weighted,) = g.node("Mul", [chw, gauss])
    (last,) = g.node("Transpose", [weighted], perm=[1, 2, 3, 0])
    _region_update(g, acc, start, last, patch, dtype)
    g.output("acc_out", dtype, ["Z", "Y", "X", channels])
    return g.to_bytes()


def weights_graph(patch: Sequence[int], dtype: str) -> bytes:
    """Add the Gaussian of one tile to the weight sum ``acc (Z, Y, X, 1)`` (in place)."""
    g = Graph("hccatom_weights")
    acc = g.input("acc", dtype, ["Z", "Y", "X", 1])
    start = g.input("start", "int64", [3])
    gauss = g.input("gauss", "float32", list(patch))
    (last,) = g.node("Unsqueeze", [gauss, g.const([3])])
    _region_update(g, acc, start, last, patch, dtype)
    g.output("acc_out", dtype, ["Z", "Y", "X", 1])
    return g.to_bytes()


def fold_graph(channels: int, dtype: str, first: bool) -> bytes:
    """One fold's logits ``acc / weights`` (rounded), added to ``fold_sum`` unless ``first``."""
    g = Graph("hccatom_fold")
    acc = g.input("acc", dtype, ["Z", "Y", "X", channels])
    w = g.input("weights", dtype, ["Z", "Y", "X", 1])
    if dtype != "float32":
        (acc,) = g.node("Cast", [acc], to=_F32)
        (w,) = g.node("Cast", [w], to=_F32)
    (q,) = g.node("Div", [acc, w])
    if not first:
        if dtype != "float32":
            (q,) = g.node("Cast", [q], to=_cast_to(dtype))
            (q,) = g.node("Cast", [q], to=_F32)
        s = g.input("fold_sum", dtype, ["Z", "Y", "X", channels])
        if dtype != "float32":
            (s,) = g.node("Cast", [s], to=_F32)
        (q,) = g.node("Add", [s, q])
    if dtype != "float32":
        g.node("Cast", [q], outputs=["fold_sum_out"], to=_cast_to(dtype))
    else:
        g.node("Reshape", [q, g.const([0, 0, 0, channels])], outputs=["fold_sum_out"])
    g.output("fold_sum_out", dtype, ["Z", "Y", "X", channels])
    return g.to_bytes()


def finish_graph(channels: int, dtype: str, n_folds: int) -> bytes:
    """Fold mean, crop off the padding, channels first; and whether anything is not finite.

    Inputs: ``fold_sum (Z, Y, X, C)``, ``lo`` and ``hi`` int64[3] (the unpadded box).
    Outputs: ``logits (C, z, y, x)`` in ``dtype``; ``bad`` float32 scalar, > 0 when any
    value is inf or NaN (nnU-Net raises there).
    """
    g = Graph("hccatom_finish")
    s = g.input("fold_sum", dtype, ["Z", "Y", "X", channels])
    lo = g.input("lo", "int64", [3])
    hi = g.input("hi", "int64", [3])
    (x,) = g.node("Slice", [s, lo, hi, g.const([0, 1, 2])])
    if n_folds > 1:
        if dtype != "float32":
            (x,) = g.node("Cast", [x], to=_F32)
        (x,) = g.node("Div", [x, g.const(np.float32(n_folds))])
        if dtype != "float32":
            (x,) = g.node("Cast", [x], to=_cast_to(dtype))
    g.node("Transpose", [x], outputs=["logits"], perm=[3, 0, 1, 2])
    (x32,) = g.node("Cast", ["logits"], to=_F32)
    (nan,) = g.node("IsNaN", [x32])
    (inf,) = g.node("IsInf", [x32])
    (either,) = g.node("Or", [nan, inf])
    (flag,) = g.node("Cast", [either], to=_F32)
    g.node("ReduceMax", [flag], outputs=["bad"], keepdims=0)
    g.output("logits", dtype, [channels, "z", "y", "x"])
    g.output("bad", "float32", [])
    return g.to_bytes()


def confidence_graph(channels: int, dtype: str, channel: int) -> bytes:
    """Where ``channel`` wins the argmax: the sum and the count of the winning softmax
    probability (see :mod:`hccatom.segmentation.confidence`, the host version).

    Input ``logits (C, z, y, x)`` in ``dtype`` (network grid); outputs ``winner_sum`` and
    ``winner_count``, float32 scalars. Ties go to the lower channel, as ``ArgMax`` does.
    """
    g = Graph("hccatom_confidence")
    logits = g.input("logits", dtype, [channels, "z", "y", "x"])
    (x,) = g.node("Cast", [logits], to=_F32)
    (top,) = g.node("ReduceMax", [x], axes=[0], keepdims=1)
    (shifted,) = g.node("Sub", [x, top])
    (e,) = g.node("Exp", [shifted])
    (denom,) = g.node("ReduceSum", [e, g.const([0])], keepdims=0)
    (prob,) = g.node("Div", [g.const(np.float32(1)), denom])
    (arg,) = g.node("ArgMax", [x], axis=0, keepdims=0)
    (arg32,) = g.node("Cast", [arg], to=_F32)
    (wins,) = g.node("Equal", [arg32, g.const(np.float32(channel))])
    (mask,) = g.node("Cast", [wins], to=_F32)
    (picked,) = g.node("Mul", [prob, mask])
    g.node("ReduceSum", [picked], outputs=["winner_sum"], keepdims=0)
    g.node("ReduceSum", [mask], outputs=["winner_count"], keepdims=0)
    g.output("winner_sum", "float32", [])
    g.output("winner_count", "float32", [])
    return g.to_bytes()


def labels_graph(channels: int, dtype: str, resize: bool, probabilities: bool) -> bytes:
    """Logits on the network grid -> channel index (uint8) on the cropped input grid.

    Inputs: ``logits (C, z, y, x)`` in ``dtype``, ``bad`` float32 scalar (from
    :func:`finish_graph`), and with ``resize`` ``sizes`` int64[5] = (1, C, *cropped shape).
    ``labels`` is 255 everywhere when ``bad`` > 0, so that the host sees it without an
    extra transfer. With ``probabilities``, also the softmax ``probabilities (C, ...)``.
    """
    g = Graph("hccatom_labels")
    logits = g.input("logits", dtype, [channels, "z", "y", "x"])
    bad = g.input("bad", "float32", [])
    (x,) = g.node("Cast", [logits], to=_F32)
    if resize:
        sizes = g.input("sizes", "int64", [5])
        (x5,) = g.node("Unsqueeze", [x, g.const([0])])
        (r5,) = g.node("Resize", [x5, "", "", sizes], mode="linear",
                       coordinate_transformation_mode="half_pixel")
        (x,) = g.node("Squeeze", [r5, g.const([0])])
        if dtype != "float32":  # stored in the accumulation dtype, as the host path does
            (x,) = g.node("Cast", [x], to=_cast_to(dtype))
            (x,) = g.node("Cast", [x], to=_F32)
    (arg,) = g.node("ArgMax", [x], axis=0, keepdims=0)
    (idx,) = g.node("Cast", [arg], to=_U8)
    (is_bad,) = g.node("Greater", [bad, g.const(np.float32(0))])
    g.node("Where", [is_bad, g.const(np.uint8(255)), idx], outputs=["labels"])
    g.output("labels", "uint8", ["oz", "oy", "ox"])
    if probabilities:
        g.node("Softmax", [x], outputs=["probabilities"], axis=0)
        g.output("probabilities", "float32", [channels, "oz", "oy", "ox"])
    return g.to_bytes()
