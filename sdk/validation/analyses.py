"""The paper's evaluation on a scored cohort: Table 2, Fig. 3c, Fig. 4 and Table 3.

Each cohort model is evaluated on the cases whose actual treatment belongs to it (TACE
response on TACE cases, HAIC response on HAIC cases, 1-year OS of TACE + systemic on TC
cases, of HAIC + systemic on HC cases), per set label (train / internal / external) as in
the paper. An analysis whose data are missing or too few is skipped with a note saying why;
nothing is dropped silently.

Table 3 concordance (stated here because the paper does not print the exact rule):
stage 1 (TACE and HAIC cases, outcome objective response) compares the clinician's therapy
with ATOM's stage-1 therapy (consistent / inconsistent / ATOM against intra-arterial therapy
at stage 1); stage 2 (TC and HC cases, outcome 1-year survival) compares the actual
treatment with ATOM's final plan (consistent / inconsistent / "no intra-arterial therapy").
Fisher's exact test compares the consistent group's rate with each other group's.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hccatom.atom import MODELS, AtomPolicy, decide
from hccatom.validation.binary_metrics import threshold_metrics
from hccatom.validation.errors import StatisticsInputError
from hccatom.validation.group_tests import fisher_exact, mann_whitney
from hccatom.validation.roc import auc_delong, delong_test, roc_curve
from hccatom.validation.scoring import ScoredCase

ENDPOINT_OF: dict[str, str] = {
    "TACE": "objective response", "HAIC": "objective response",
    "TC": "1-year overall survival", "HC": "1-year overall survival",
}
SET_ORDER = ("train", "internal", "external", "unlabelled")
ALL_SETS = "all sets"  # the pooled row, added when the table has more than one set


@dataclass
class ValidationResults:
    """Every table of the report (JSON-ready) and the arrays the plots need."""

    thresholds: dict[str, float]
    table2: list[dict[str, Any]] = field(default_factory=list)
    mann_whitney: list[dict[str, Any]] = field(default_factory=list)
    survival: list[dict[str, Any]] = field(default_factory=list)
    table3: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    roc: dict[str, dict[str, Any]] = field(default_factory=dict)
    km: dict[str, Any] = field(default_factory=dict)
    distributions: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """The tables written as CSV and JSON."""
        return {"table2_auc": self.table2, "fig3c_mann_whitney": self.mann_whitney,
                "fig4_survival": self.survival, "table3_concordance": self.table3}


def outcome_of(model: str, s: ScoredCase) -> int | None:
    """The model's outcome label of a case (None: unknown)."""
    if model in ("TACE", "HAIC"):
        return s.case.response
    return s.case.one_year_survival()


def _set(s: ScoredCase) -> str:
    return s.case.set or "unlabelled"


def _table2(res: ValidationResults, model: str, cases: list[ScoredCase]) -> None:
    thr = res.thresholds[model]
    n_sets = len({_set(s) for s in cases})
    for set_name in (*SET_ORDER, ALL_SETS) if n_sets > 1 else SET_ORDER:
        group = cases if set_name == ALL_SETS else [s for s in cases if _set(s) == set_name]
        if not group:
            continue
        labelled = [(s, v) for s in group if (v := outcome_of(model, s)) is not None]
        if len(labelled) < len(group):
            res.notes.append(f"{model} {set_name}: {len(group) - len(labelled)} case(s) without "
                             f"{ENDPOINT_OF[model]} left out of the AUC.")
        scores = np.array([s.scores[model] for s, _ in labelled])
        y = np.array([v for _, v in labelled], int)
        try:
            a = auc_delong(scores, y)
        except StatisticsInputError as exc:
            res.notes.append(f"{model} {set_name}: AUC skipped ({exc}).")
            continue
        m = threshold_metrics(scores, y, thr)
        row: dict[str, Any] = {
            "model": model, "set": set_name, "endpoint": ENDPOINT_OF[model], "n": int(y.size),
            "n_events": int(y.sum()), "auc": a.auc, "auc_ci_low": a.ci_low,
            "auc_ci_high": a.ci_high, "auc_se": a.se, "threshold": thr,
            "accuracy": m.accuracy, "sensitivity": m.sensitivity,
            "specificity": m.specificity, "ppv": m.ppv, "npv": m.npv,
            "compare_auc": None, "delong_p": None,
        }
        other = [s.case.compare.get(model) for s, _ in labelled]
        if all(v is not None for v in other):
            t = delong_test(scores, np.array(other, float), y)
            row["compare_auc"], row["delong_p"] = t.auc_b, t.p_value
        elif any(v is not None for v in other):
            res.notes.append(f"{model} {set_name}: compare_{model} is filled for only some "
                             "cases; DeLong comparison skipped.")
        res.table2.append(row)
        fpr, tpr, _ = roc_curve(scores, y)
        res.roc.setdefault(model, {})[set_name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(),
                                                   "auc": asdict(a)}


def _mann_whitney(res: ValidationResults, model: str, cases: list[ScoredCase]) -> None:
    by_set = {k: [s.scores[model] for s in cases if _set(s) == k] for k in SET_ORDER}
    by_set = {k: v for k, v in by_set.items() if v}
    res.distributions[model] = by_set
    if "train" not in by_set:
        if len(by_set) > 1 or "unlabelled" not in by_set:
            res.notes.append(f"{model}: no train cases; score distributions not compared.")
        return
    for other in ("internal", "external"):
        if other in by_set:
            mw = mann_whitney(by_set["train"], by_set[other])
            res.mann_whitney.append({"model": model, "set_a": "train", "set_b": other,
                                     **asdict(mw)})


def _survival(res: ValidationResults, model: str, cases: list[ScoredCase]) -> None:
    with_os = [s for s in cases if s.case.os_months is not None and s.case.os_event is not None]
    if len(with_os) < len(cases):
        res.notes.append(f"{model}: {len(cases) - len(with_os)} case(s) without survival data "
                         "left out of the Kaplan-Meier analysis.")
    if not with_os:
        return
    if importlib.util.find_spec("lifelines") is None:
        res.notes.append(f"{model}: survival analysis skipped: it needs the validate extra "
                         "(pip install \"hccatom[validate]\").")
        return
    from hccatom.validation.survival import compare_groups

    t = np.array([s.case.os_months for s in with_os], float)
    e = np.array([s.case.os_event for s in with_os], int)
    high = np.array([s.scores[model] < res.thresholds[model] for s in with_os], int)
    try:
        c = compare_groups(t, e, high)
    except StatisticsInputError as exc:
        res.notes.append(f"{model}: survival analysis skipped ({exc}).")
        return
    res.survival.append({
        "model": model, "n": int(t.size), "n_low_risk": c.low.n, "n_high_risk": c.high.n,
        "deaths_low": c.low.events, "deaths_high": c.high.events,
        "median_os_low": c.low.median, "median_os_high": c.high.median,
        "logrank_chi2": c.logrank_chi2, "logrank_p": c.logrank_p,
        "hazard_ratio": c.hazard_ratio, "hr_ci_low": c.hr_ci_low, "hr_ci_high": c.hr_ci_high,
    })
    res.km[model] = {"comparison": c, "time": t, "high": high}
    if c.warnings:
        res.survival[-1]["hr_reliable"] = False
        res.notes.append(f"{model}: the Cox fit did not converge cleanly (e.g. complete "
                         "separation: no deaths in one group); its hazard ratio is unreliable. "
                         f"lifelines said: {'; '.join(c.warnings)}")
    else:
        res.survival[-1]["hr_reliable"] = True


def _concordance(res: ValidationResults, policy: AtomPolicy, model: str,
                 cases: list[ScoredCase]) -> None:
    external = [s for s in cases if s.case.set == "external"]
    used, set_used = (external, "external") if external else (cases, "all")
    groups: dict[str, list[int]] = {"consistent": [], "inconsistent": [], "against": []}
    for s in used:
        y = outcome_of(model, s)
        if y is None:
            continue
        d = decide(s.scores, res.thresholds, policy)
        if model in ("TACE", "HAIC"):
            key = ("against" if d.stage1.therapy is None else
                   "consistent" if d.stage1.therapy == s.case.treatment else "inconsistent")
        else:
            key = ("against" if d.final_plan == "no intra-arterial therapy" else
                   "consistent" if d.final_plan == s.case.treatment else "inconsistent")
        groups[key].append(int(y))
    total = sum(len(g) for g in groups.values())
    if total == 0:
        res.notes.append(f"Table 3 {model} ({policy.policy_id}): no cases with "
                         f"{ENDPOINT_OF[model]}; skipped.")
        return
    row: dict[str, Any] = {"policy": policy.policy_id, "model": model,
                           "stage": 1 if model in ("TACE", "HAIC") else 2, "set": set_used}
    for k, g in groups.items():
        row[f"{k}_events"], row[f"{k}_n"] = int(sum(g)), len(g)
    row["total_events"], row["total_n"] = int(sum(sum(g) for g in groups.values())), total
    for other in ("inconsistent", "against"):
        a, b = groups["consistent"], groups[other]
        row[f"p_consistent_vs_{other}"] = (
            fisher_exact(int(sum(a)), len(a), int(sum(b)), len(b)).p_value if a and b else None)
    res.table3.append(row)


def analyse(scored: list[ScoredCase], thresholds: Mapping[str, float],
            policies: list[AtomPolicy] | None = None) -> ValidationResults:
    """Every analysis of the report, per cohort model, under each policy for Table 3."""
    res = ValidationResults(thresholds=dict(thresholds))
    pols = policies or [AtomPolicy.atom_v1(), AtomPolicy.atom_v1_responder()]
    for model in MODELS:
        cases = [s for s in scored if s.case.model == model]
        if not cases:
            res.notes.append(f"{model}: no cases of this cohort in the table; its analyses "
                             "are skipped.")
            continue
        _table2(res, model, cases)
        _mann_whitney(res, model, cases)
        _survival(res, model, cases)
        for pol in pols:
            _concordance(res, pol, model, cases)
    return res


__all__ = ["ALL_SETS", "ENDPOINT_OF", "ValidationResults", "analyse", "outcome_of"]
