"""Threshold metrics of a score at a cut-off (the bundle's MSS), as in the paper's Table 2.

A case is *predicted positive* when its score reaches the threshold (``score >= MSS``: the
low-risk / favourable group, predicted to respond or survive), and *positive* when the
outcome occurred (response, alive at one year). A ratio whose denominator is zero is None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from hccatom.validation.errors import StatisticsInputError


@dataclass(frozen=True)
class ThresholdMetrics:
    """Confusion counts and the five ratios at one threshold."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float | None
    sensitivity: float | None
    specificity: float | None
    ppv: float | None
    npv: float | None


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def threshold_metrics(scores: ArrayLike, labels: ArrayLike, threshold: float) -> ThresholdMetrics:
    """Accuracy, sensitivity, specificity, PPV and NPV of ``scores >= threshold``."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.shape != y.shape or s.ndim != 1:
        raise StatisticsInputError(
            f"threshold_metrics: {s.shape} scores but {y.shape} labels; give one label per score."
        )
    if not np.all(np.isin(y, (0, 1))):
        raise StatisticsInputError("threshold_metrics: labels must be 0 or 1.")
    pred = s >= threshold
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    tn = int(np.sum(~pred & ~pos))
    fn = int(np.sum(~pred & pos))
    return ThresholdMetrics(
        threshold=float(threshold), tp=tp, fp=fp, tn=tn, fn=fn,
        accuracy=_ratio(tp + tn, tp + fp + tn + fn),
        sensitivity=_ratio(tp, tp + fn), specificity=_ratio(tn, tn + fp),
        ppv=_ratio(tp, tp + fp), npv=_ratio(tn, tn + fn),
    )


__all__ = ["ThresholdMetrics", "threshold_metrics"]
