"""Segmentation confidence from the logits the sliding window already produced.

The mean, over the voxels where the tumour channel wins the argmax, of the winning softmax
probability ("mean max-probability inside the tumour"). Computed on the network's grid
(before the logits are resampled to the input grid): one pass over the logits in slabs,
softmax only at tumour voxels, no full-size float32 copy.
"""

from __future__ import annotations

import numpy as np


def mean_max_probability(logits: np.ndarray, channel: int, slab: int = 16) -> float | None:
    """Mean winning probability where ``channel`` wins; None when it wins nowhere.

    ``logits``: ``(C, *spatial)`` float16 or float32 (the sliding window's output).
    """
    total = 0.0
    count = 0
    for start in range(0, logits.shape[1], slab):
        part = np.asarray(logits[:, start:start + slab], dtype=np.float32)
        mask = part.argmax(axis=0) == channel
        n = int(np.count_nonzero(mask))
        if not n:
            continue
        sel = part[:, mask]  # (C, n)
        sel -= sel.max(axis=0, keepdims=True)
        # the winner's probability is exp(0) / sum(exp(l - max))
        total += float(np.sum(1.0 / np.exp(sel).sum(axis=0)))
        count += n
    return total / count if count else None


__all__ = ["mean_max_probability"]
