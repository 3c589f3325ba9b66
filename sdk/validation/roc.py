"""ROC statistics: AUC with DeLong's 95 % CI and DeLong's test for two correlated ROC curves.

DeLong, DeLong & Clarke-Pearson (1988): the AUC is the Mann-Whitney estimate of
P(score of a positive > score of a negative) (ties count one half). Its variance comes from
the structural components V10 (one per positive case) and V01 (one per negative case),
computed here with mid-ranks (Sun & Xu 2014) in O(n log n), so 10,000 cases take
milliseconds. The CI is the normal interval AUC +- z * SE clipped to [0, 1], as R's pROC
reports it (``ci.auc(method="delong")``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm, rankdata

from hccatom.validation.errors import StatisticsInputError


@dataclass(frozen=True)
class AucResult:
    """AUC with its DeLong standard error and 95 % CI."""

    auc: float
    se: float
    ci_low: float
    ci_high: float
    n_positive: int
    n_negative: int


@dataclass(frozen=True)
class DelongTest:
    """DeLong's test of two AUCs measured on the same cases."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    n: int


def _split(scores: np.ndarray, labels: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(positives, negatives) of ``scores`` (last axis = cases); labels must be 0/1."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != scores.shape[-1]:
        raise StatisticsInputError(
            f"{what}: {y.shape[0] if y.ndim == 1 else y.shape} labels for "
            f"{scores.shape[-1]} scores; give one 0/1 label per score."
        )
    if not np.all(np.isin(y, (0, 1))):
        raise StatisticsInputError(f"{what}: labels must be 0 or 1 (1 = the outcome occurred).")
    if not np.all(np.isfinite(scores)):
        raise StatisticsInputError(f"{what}: scores must be finite numbers.")
    pos, neg = scores[..., y == 1], scores[..., y == 0]
    if pos.shape[-1] < 2 or neg.shape[-1] < 2:
        raise StatisticsInputError(
            f"{what}: needs at least 2 positive and 2 negative cases, got "
            f"{pos.shape[-1]} positive and {neg.shape[-1]} negative."
        )
    return pos, neg


def structural_components(
    positives: np.ndarray, negatives: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUC per row, V10 (rows x positives) and V01 (rows x negatives) via mid-ranks."""
    pos = np.atleast_2d(positives).astype(np.float64)
    neg = np.atleast_2d(negatives).astype(np.float64)
    m, n = pos.shape[1], neg.shape[1]
    both = np.concatenate([pos, neg], axis=1)
    r_all = rankdata(both, axis=1)
    r_pos = rankdata(pos, axis=1)
    r_neg = rankdata(neg, axis=1)
    v10 = (r_all[:, :m] - r_pos) / n  # share of negatives below each positive (ties 1/2)
    v01 = 1.0 - (r_all[:, m:] - r_neg) / m  # share of positives above each negative
    auc = v10.mean(axis=1)
    return auc, v10, v01


def _z(level: float) -> float:
    return float(norm.ppf(0.5 + level / 2.0))


def auc_delong(scores: ArrayLike, labels: ArrayLike, level: float = 0.95) -> AucResult:
    """AUC of ``scores`` for binary ``labels`` (1 = outcome) with DeLong's CI."""
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = _split(s, labels, "auc_delong")
    auc, v10, v01 = structural_components(pos, neg)
    var = v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size
    se = float(np.sqrt(max(var, 0.0)))
    a = float(auc[0])
    half = _z(level) * se
    return AucResult(a, se, max(0.0, a - half), min(1.0, a + half), pos.size, neg.size)


def delong_test(scores_a: ArrayLike, scores_b: ArrayLike, labels: ArrayLike) -> DelongTest:
    """Two-sided DeLong test that two scores of the same cases have equal AUC."""
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise StatisticsInputError(
            f"delong_test: the two score columns must have the same length (got {a.shape} and "
            f"{b.shape}): both models must score the same cases."
        )
    pos, neg = _split(np.vstack([a, b]), labels, "delong_test")
    auc, v10, v01 = structural_components(pos, neg)
    cov = np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    diff = float(auc[0] - auc[1])
    if var <= 0.0:  # identical rankings: no evidence of a difference
        return DelongTest(float(auc[0]), float(auc[1]), diff, 0.0, 0.0, 1.0, a.size)
    se = float(np.sqrt(var))
    z = diff / se
    return DelongTest(float(auc[0]), float(auc[1]), diff, se, z, float(2.0 * norm.sf(abs(z))),
                      a.size)


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds descending."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    _split(s, y.astype(int), "roc_curve")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (~y).sum()]
    return fpr, tpr, np.r_[np.inf, s[last]]


__all__ = ["AucResult", "DelongTest", "auc_delong", "delong_test", "roc_curve",
           "structural_components"]
