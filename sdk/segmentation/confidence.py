"""Segmentation confidence from the logits the sliding window already produced.

The mean, over the voxels where the tumour channel wins the argmax, of the winning softmax
probability ("mean max-probability inside the tumour"). Computed on the network's grid
(before the logits are resampled to the input grid) in slabs: the winner mask from
comparisons (float16 logits compared through an order-preserving int16 key, which numpy
does far faster than float16 arithmetic), the softmax only at the winning voxels.
"""

from __future__ import annotations

import numpy as np


def _order_key(a: np.ndarray) -> np.ndarray:
    """float16 -> int16 with the same order (negative floats have their magnitude bits
    flipped, so larger floats give larger integers); other dtypes pass through."""
    if a.dtype != np.float16:
        return a
    v = a.view(np.int16)
    key: np.ndarray = v ^ ((v >> 15) & np.int16(0x7FFF))
    return key


def _winner_mask(keys: np.ndarray, channel: int) -> np.ndarray:
    """Where ``channel`` wins the argmax (ties go to the lower channel, as argmax does)."""
    t = keys[channel]
    mask = np.ones(t.shape, dtype=bool)
    for c in range(keys.shape[0]):
        if c != channel:
            mask &= (t > keys[c]) if c < channel else (t >= keys[c])
    return mask


def mean_max_probability(logits: np.ndarray, channel: int, slab: int = 16) -> float | None:
    """Mean winning probability where ``channel`` wins; None when it wins nowhere.

    ``logits``: ``(C, *spatial)`` float16 or float32 (the sliding window's output).
    """
    total = 0.0
    count = 0
    for start in range(0, logits.shape[1], slab):
        part = logits[:, start:start + slab]
        mask = _winner_mask(_order_key(part), channel)
        n = int(np.count_nonzero(mask))
        if not n:
            continue
        sel = np.asarray(part[:, mask], dtype=np.float32)  # (C, n)
        sel -= sel.max(axis=0, keepdims=True)
        # the winner's probability is exp(0) / sum(exp(l - max))
        total += float(np.sum(1.0 / np.exp(sel).sum(axis=0)))
        count += n
    return total / count if count else None


__all__ = ["mean_max_probability"]
