"""The report's figures (matplotlib, Agg backend; the ``validate`` extra).

ROC per model and set with a 95 % pointwise band (stratified bootstrap of the true positive
rate on a grid of false positive rates, seeded), Kaplan-Meier per model with the numbers at
risk under the axis, and score distributions per set with the MSS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hccatom.validation.analyses import ValidationResults
from hccatom.validation.survival import numbers_at_risk

_COLOURS = {"train": "#1f77b4", "internal": "#ff7f0e", "external": "#2ca02c",
            "unlabelled": "#7f7f7f", "all sets": "#000000"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_band(scores: np.ndarray, labels: np.ndarray, n_boot: int = 200,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr grid, TPR 2.5th percentile, 97.5th percentile) by stratified bootstrap."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, 101)
    pos, neg = scores[labels == 1], scores[labels == 0]
    tprs = np.empty((n_boot, grid.size))
    for b in range(n_boot):
        p = np.sort(pos[rng.integers(0, pos.size, pos.size)])
        n = np.sort(neg[rng.integers(0, neg.size, neg.size)])
        # threshold per FPR: the (1 - fpr) quantile of negatives; TPR: share of positives >= it
        cut = np.quantile(n, 1.0 - grid, method="higher")
        tprs[b] = 1.0 - np.searchsorted(p, cut, side="left") / p.size
    return grid, np.percentile(tprs, 2.5, axis=0), np.percentile(tprs, 97.5, axis=0)


def plot_roc(res: ValidationResults, model: str, arrays: dict[str, tuple[np.ndarray, np.ndarray]],
             path: Path) -> Path:
    """ROC curves of one model, one per set, each with its bootstrap band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=110)
    for set_name, curve in res.roc.get(model, {}).items():
        s, y = arrays[set_name]
        grid, lo, hi = roc_band(s, y)
        c = _COLOURS.get(set_name, "k")
        ax.fill_between(grid, lo, hi, color=c, alpha=0.15, step=None)
        a = curve["auc"]
        ax.plot(curve["fpr"], curve["tpr"], color=c, drawstyle="steps-post",
                label=f"{set_name}: AUC {a['auc']:.3f} ({a['ci_low']:.3f}-{a['ci_high']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
           title=f"SELECTION-{model} ROC (95 % band)")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_km(res: ValidationResults, model: str, path: Path) -> Path:
    """Kaplan-Meier OS of the low- and high-risk groups with numbers at risk."""
    plt = _pyplot()
    km = res.km[model]
    c, t, high = km["comparison"], km["time"], km["high"]
    fig, (ax, ax_tab) = plt.subplots(2, 1, figsize=(5.2, 4.8), dpi=110,
                                     gridspec_kw={"height_ratios": [4, 1]})
    for name, curve, colour in (("low risk", c.low, "#1f77b4"), ("high risk", c.high, "#d62728")):
        x = [0.0, *curve.times]
        y = [1.0, *curve.survival]
        ax.step(x, y, where="post", color=colour, label=f"{name} (n {curve.n})")
        ax.fill_between([0.0, *curve.times], [1.0, *curve.ci_low], [1.0, *curve.ci_high],
                        step="post", color=colour, alpha=0.12)
    tmax = float(np.max(t)) if t.size else 1.0
    ticks = np.linspace(0.0, tmax, 6).round(1)
    ax.set(xlim=(0, tmax), ylim=(0, 1.02), ylabel="overall survival",
           title=f"SELECTION-{model}: log-rank P {_p(res, model)}, HR {_hr(res, model)}")
    ax.set_xticks(ticks)
    ax.legend(fontsize=7, loc="lower left")
    ax_tab.axis("off")
    ax_tab.set_xlim(0, tmax)
    for row, (name, mask) in enumerate((("low", high == 0), ("high", high == 1))):
        ax_tab.text(-0.02 * tmax, 0.7 - 0.5 * row, name, ha="right", va="center", fontsize=7)
        for x, n in zip(ticks, numbers_at_risk(t[mask], ticks), strict=True):
            ax_tab.text(x, 0.7 - 0.5 * row, str(n), ha="center", va="center", fontsize=7)
    ax_tab.set_title("numbers at risk (months)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _p(res: ValidationResults, model: str) -> str:
    row = next(r for r in res.survival if r["model"] == model)
    return f"{row['logrank_p']:.3g}"


def _hr(res: ValidationResults, model: str) -> str:
    row = next(r for r in res.survival if r["model"] == model)
    if not row.get("hr_reliable", True):
        return "unreliable"
    return f"{row['hazard_ratio']:.2f} ({row['hr_ci_low']:.2f}-{row['hr_ci_high']:.2f})"


def plot_distributions(res: ValidationResults, model: str, path: Path) -> Path:
    """Box plots of the model's scores per set, with the bundle's MSS."""
    plt = _pyplot()
    by_set = res.distributions[model]
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=110)
    names = list(by_set)
    ax.boxplot([by_set[n] for n in names], whis=(0, 100))
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n(n {len(by_set[n])})" for n in names])
    ax.axhline(res.thresholds[model], color="#d62728", ls="--", lw=1,
               label=f"MSS {res.thresholds[model]:.4f}")
    ax.set(ylabel="survival score", ylim=(0, 1), title=f"SELECTION-{model} scores")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["plot_distributions", "plot_km", "plot_roc", "roc_band"]
