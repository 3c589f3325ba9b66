"""Overall survival by risk group (the paper's Fig. 4): Kaplan-Meier, log-rank, Cox HR.

Uses lifelines (the ``validate`` extra). ``group`` is 1 for the high-risk group (score below
the MSS) and 0 for low risk, so the hazard ratio is high vs low risk as the paper reports it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from hccatom.validation.errors import StatisticsInputError


@dataclass(frozen=True)
class KaplanMeierCurve:
    """A step function: survival probability after each time, and the numbers at risk."""

    times: list[float]
    survival: list[float]
    ci_low: list[float]
    ci_high: list[float]
    n: int
    events: int
    median: float | None

    def at(self, t: float) -> float:
        """Survival probability at time ``t`` (right-continuous step function)."""
        idx = int(np.searchsorted(np.asarray(self.times), t, side="right")) - 1
        return 1.0 if idx < 0 else self.survival[idx]


@dataclass(frozen=True)
class SurvivalComparison:
    """KM per group, log-rank test and Cox hazard ratio (group 1 vs group 0)."""

    low: KaplanMeierCurve
    high: KaplanMeierCurve
    logrank_chi2: float
    logrank_p: float
    hazard_ratio: float
    hr_ci_low: float
    hr_ci_high: float
    cox_p: float
    warnings: tuple[str, ...] = ()


def _check(time: np.ndarray, event: np.ndarray, what: str) -> None:
    if time.shape != event.shape or time.ndim != 1:
        raise StatisticsInputError(f"{what}: times and events must have the same length.")
    if time.size == 0:
        raise StatisticsInputError(f"{what}: no cases with a survival time.")
    if not np.all(np.isfinite(time)) or np.any(time < 0):
        raise StatisticsInputError(f"{what}: survival times must be finite and >= 0.")
    if not np.all(np.isin(event, (0, 1))):
        raise StatisticsInputError(f"{what}: events must be 0 (censored) or 1 (death).")


def kaplan_meier(time: ArrayLike, event: ArrayLike) -> KaplanMeierCurve:
    """The Kaplan-Meier estimate with its 95 % (log-log) confidence band."""
    from lifelines import KaplanMeierFitter

    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event).astype(int)
    _check(t, e, "kaplan_meier")
    kmf = KaplanMeierFitter().fit(t, e)
    sf = kmf.survival_function_.iloc[:, 0]
    ci = kmf.confidence_interval_survival_function_
    med = float(kmf.median_survival_time_)
    return KaplanMeierCurve(
        times=[float(x) for x in sf.index], survival=[float(x) for x in sf.to_numpy()],
        ci_low=[float(x) for x in ci.iloc[:, 0].to_numpy()],
        ci_high=[float(x) for x in ci.iloc[:, 1].to_numpy()],
        n=int(t.size), events=int(e.sum()), median=med if np.isfinite(med) else None,
    )


def numbers_at_risk(time: ArrayLike, at: ArrayLike) -> list[int]:
    """Cases still followed (time >= t) at each time in ``at``."""
    t = np.asarray(time, dtype=np.float64)
    return [int(np.sum(t >= x)) for x in np.asarray(at, dtype=np.float64)]


def compare_groups(time: ArrayLike, event: ArrayLike, group: ArrayLike) -> SurvivalComparison:
    """KM of each group, log-rank test and Cox proportional-hazards HR of group 1 vs 0."""
    import pandas as pd
    from lifelines import CoxPHFitter
    from lifelines.statistics import logrank_test

    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event).astype(int)
    g = np.asarray(group).astype(int)
    _check(t, e, "compare_groups")
    if g.shape != t.shape or not np.all(np.isin(g, (0, 1))):
        raise StatisticsInputError("compare_groups: one group label (0 or 1) per case.")
    hi, lo = g == 1, g == 0
    if hi.sum() < 2 or lo.sum() < 2 or e.sum() == 0:
        raise StatisticsInputError(
            f"compare_groups: needs >= 2 cases per group and at least one death (got "
            f"{int(lo.sum())} low-risk, {int(hi.sum())} high-risk, {int(e.sum())} deaths)."
        )
    lr = logrank_test(t[hi], t[lo], event_observed_A=e[hi], event_observed_B=e[lo])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cph = CoxPHFitter().fit(pd.DataFrame({"t": t, "e": e, "high": g}), "t", "e")
    notes = tuple(dict.fromkeys(str(w.message).strip().split("\n")[0] for w in caught))
    s = cph.summary.loc["high"]
    return SurvivalComparison(
        low=kaplan_meier(t[lo], e[lo]), high=kaplan_meier(t[hi], e[hi]),
        logrank_chi2=float(lr.test_statistic), logrank_p=float(lr.p_value),
        hazard_ratio=float(s["exp(coef)"]), hr_ci_low=float(s["exp(coef) lower 95%"]),
        hr_ci_high=float(s["exp(coef) upper 95%"]), cox_p=float(s["p"]), warnings=notes,
    )


__all__ = ["KaplanMeierCurve", "SurvivalComparison", "compare_groups", "kaplan_meier",
           "numbers_at_risk"]
