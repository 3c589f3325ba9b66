"""Two-group tests of the paper: Mann-Whitney (Fig. 3c) and Fisher's exact test (Table 3).

Thin, typed wrappers over :mod:`scipy.stats` (two-sided, as the paper reports them) that
refuse empty groups with a clear error instead of returning NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from hccatom.validation.errors import StatisticsInputError


@dataclass(frozen=True)
class MannWhitney:
    """Two-sided Mann-Whitney U test of two independent samples."""

    u: float
    p_value: float
    n_a: int
    n_b: int
    median_a: float
    median_b: float


@dataclass(frozen=True)
class FisherExact:
    """Two-sided Fisher exact test of two proportions ``events_a/n_a`` vs ``events_b/n_b``."""

    events_a: int
    n_a: int
    events_b: int
    n_b: int
    odds_ratio: float
    p_value: float


def mann_whitney(a: ArrayLike, b: ArrayLike) -> MannWhitney:
    """Mann-Whitney U of ``a`` against ``b`` (U counts pairs with a > b, ties one half)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.size == 0 or y.size == 0:
        raise StatisticsInputError(
            f"mann_whitney: both groups need at least one value (got {x.size} and {y.size})."
        )
    res = stats.mannwhitneyu(x, y, alternative="two-sided")
    return MannWhitney(float(res.statistic), float(res.pvalue), x.size, y.size,
                       float(np.median(x)), float(np.median(y)))


def fisher_exact(events_a: int, n_a: int, events_b: int, n_b: int) -> FisherExact:
    """Fisher's exact test of the 2x2 table [[events_a, n_a - events_a], [events_b, ...]]."""
    for name, e, n in (("a", events_a, n_a), ("b", events_b, n_b)):
        if n <= 0 or not 0 <= e <= n:
            raise StatisticsInputError(
                f"fisher_exact: group {name} has {e} events of {n}; needs 0 <= events <= n, n > 0."
            )
    table = [[events_a, n_a - events_a], [events_b, n_b - events_b]]
    res = stats.fisher_exact(table, alternative="two-sided")
    return FisherExact(events_a, n_a, events_b, n_b, float(res.statistic), float(res.pvalue))


__all__ = ["FisherExact", "MannWhitney", "fisher_exact", "mann_whitney"]
