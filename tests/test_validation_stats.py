"""Statistics of site validation against answers computed independently of the code.

Known answers: a hand-computed DeLong example (see the comments), brute-force pairwise AUC
and structural components, bootstrap standard errors on synthetic data, the paper's own
Table 3 Fisher P values, exact Mann-Whitney P values by enumeration, and the Freireich 6-MP
leukaemia data (Gehan 1965) with its textbook Kaplan-Meier, log-rank and Cox values.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hccatom.errors import HccatomError
from hccatom.validation import (
    StatisticsInputError,
    auc_delong,
    delong_test,
    fisher_exact,
    mann_whitney,
    roc_curve,
    threshold_metrics,
)


def _pairwise_components(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V10 and V01 by the definition (every positive-negative pair), O(m n)."""
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


# --- AUC and DeLong -------------------------------------------------------------------
def test_auc_delong_hand_computed_example() -> None:
    # positives 0.9, 0.8, 0.4; negatives 0.7, 0.4, 0.2 (one tie at 0.4).
    # V10 = [1, 1, 1/2] -> AUC 5/6; V01 = [2/3, 5/6, 1].
    # var(V10) = 1/12, var(V01) = 1/36 (ddof 1) -> Var(AUC) = 1/36 + 1/108 = 1/27.
    scores = [0.9, 0.8, 0.4, 0.7, 0.4, 0.2]
    labels = [1, 1, 1, 0, 0, 0]
    r = auc_delong(scores, labels)
    assert r.auc == pytest.approx(5 / 6)
    assert r.se == pytest.approx(math.sqrt(1 / 27))
    assert r.ci_low == pytest.approx(5 / 6 - 1.959964 * math.sqrt(1 / 27), abs=1e-6)
    assert r.ci_high == 1.0  # clipped
    assert (r.n_positive, r.n_negative) == (3, 3)


def test_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + 0.8 * y, 1)  # rounding makes many ties
    v10, v01 = _pairwise_components(s[y == 1], s[y == 0])
    r = auc_delong(s, y)
    assert r.auc == pytest.approx(v10.mean())
    var = v10.var(ddof=1) / v10.size + v01.var(ddof=1) / v01.size
    assert r.se == pytest.approx(math.sqrt(var))


def test_auc_delong_se_agrees_with_bootstrap() -> None:
    rng = np.random.default_rng(7)
    y = np.r_[np.ones(120, int), np.zeros(180, int)]
    s = rng.normal(size=300) + 1.0 * y
    pos, neg = s[y == 1], s[y == 0]
    boots = []
    for _ in range(1500):  # stratified bootstrap, AUC by brute force
        p = pos[rng.integers(0, pos.size, pos.size)]
        n = neg[rng.integers(0, neg.size, neg.size)]
        boots.append(((p[:, None] > n[None, :]) + 0.5 * (p[:, None] == n[None, :])).mean())
    r = auc_delong(s, y)
    assert r.se == pytest.approx(float(np.std(boots, ddof=1)), rel=0.10)


def test_delong_test_matches_pairwise_formula_and_bootstrap() -> None:
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(100, int), np.zeros(150, int)]
    latent = rng.normal(size=250) + 0.9 * y
    a = latent + rng.normal(scale=0.5, size=250)
    b = latent + rng.normal(scale=1.2, size=250)  # correlated with a, weaker
    t = delong_test(a, b, y)
    va10, va01 = _pairwise_components(a[y == 1], a[y == 0])
    vb10, vb01 = _pairwise_components(b[y == 1], b[y == 0])
    var = (np.var(va10 - vb10, ddof=1) / va10.size + np.var(va01 - vb01, ddof=1) / va01.size)
    diff = va10.mean() - vb10.mean()
    assert t.difference == pytest.approx(diff)
    assert t.se == pytest.approx(math.sqrt(var))
    z = diff / math.sqrt(var)
    assert t.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    # bootstrap SE of the paired difference
    ip, ineg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    diffs = []
    for _ in range(800):
        p = ip[rng.integers(0, ip.size, ip.size)]
        n = ineg[rng.integers(0, ineg.size, ineg.size)]
        da = (a[p][:, None] > a[n][None, :]).mean()
        db = (b[p][:, None] > b[n][None, :]).mean()
        diffs.append(da - db)
    assert t.se == pytest.approx(float(np.std(diffs, ddof=1)), rel=0.15)


def test_delong_test_same_scores_is_p1() -> None:
    s = [0.1, 0.4, 0.35, 0.8, 0.7, 0.2]
    y = [0, 0, 1, 1, 1, 0]
    t = delong_test(s, s, y)
    assert t.difference == 0.0 and t.p_value == 1.0


def test_roc_curve_steps() -> None:
    fpr, tpr, thr = roc_curve([0.9, 0.8, 0.4, 0.7, 0.4, 0.2], [1, 1, 1, 0, 0, 0])
    # cut at 0.9: 1 TP; 0.8: 2 TP; 0.7: 2 TP 1 FP; 0.4: 3 TP 2 FP (the tie); 0.2: all
    assert fpr.tolist() == pytest.approx([0, 0, 0, 1 / 3, 2 / 3, 1])
    assert tpr.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert thr[1:].tolist() == [0.9, 0.8, 0.7, 0.4, 0.2]
    assert np.trapezoid(tpr, fpr) == pytest.approx(5 / 6)


@pytest.mark.parametrize("labels", [[1, 1, 1, 1, 1, 0], [1, 2, 0, 0, 1, 0], [1, 0, 1]])
def test_auc_refuses_bad_labels(labels: list[int]) -> None:
    with pytest.raises(StatisticsInputError) as exc:
        auc_delong([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], labels)
    assert isinstance(exc.value, HccatomError)
    assert "auc_delong" in str(exc.value)


# --- threshold metrics ------------------------------------------------------------------
def test_threshold_metrics_counts() -> None:
    # predicted positive: score >= 0.5 -> cases 0, 1, 3 ; positives: 0, 2, 3
    m = threshold_metrics([0.9, 0.5, 0.2, 0.6, 0.1], [1, 0, 1, 1, 0], 0.5)
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 1, 1, 1)
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.sensitivity == pytest.approx(2 / 3)
    assert m.specificity == pytest.approx(1 / 2)
    assert m.ppv == pytest.approx(2 / 3)
    assert m.npv == pytest.approx(1 / 2)


def test_threshold_metrics_empty_denominator_is_none() -> None:
    m = threshold_metrics([0.9, 0.8], [1, 1], 0.5)
    assert m.specificity is None and m.npv is None and m.sensitivity == 1.0


# --- Fisher and Mann-Whitney --------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "paper_p"),
    [  # the paper's Table 3 (two-sided Fisher, printed to 3 decimals)
        ((15, 18), (20, 38), 0.039),
        ((15, 18), (0, 5), 0.002),
        ((5, 11), (9, 31), 0.459),
        ((5, 11), (1, 4), 0.604),
        ((34, 49), (9, 24), 0.012),
    ],
)
def test_fisher_reproduces_paper_table3(a: tuple[int, int], b: tuple[int, int],
                                        paper_p: float) -> None:
    r = fisher_exact(a[0], a[1], b[0], b[1])
    assert round(r.p_value, 3) == pytest.approx(paper_p, abs=0.0011)


def test_fisher_tea_tasting() -> None:
    # Fisher's lady tasting tea: [[3, 1], [1, 3]], two-sided P = 34/70
    assert fisher_exact(3, 4, 1, 4).p_value == pytest.approx(34 / 70)


def test_mann_whitney_exact_by_enumeration() -> None:
    a, b = [1.1, 2.5, 3.9, 6.0], [3.0, 4.2, 5.1, 7.7, 8.0]
    r = mann_whitney(a, b)
    u_obs = sum(x > y for x in a for y in b)
    assert r.u == u_obs == 4  # 3.9 > 3.0; 6.0 > 3.0, 4.2, 5.1
    # exact two-sided P: share of all splits with U as extreme as observed (no ties)
    allv = a + b
    us = []
    for idx in itertools.combinations(range(9), 4):
        g = [allv[i] for i in idx]
        h = [allv[i] for i in range(9) if i not in idx]
        us.append(sum(x > y for x in g for y in h))
    mean = 4 * 5 / 2
    p = sum(abs(u - mean) >= abs(u_obs - mean) for u in us) / len(us)
    assert r.p_value == pytest.approx(p)


def test_group_tests_refuse_empty() -> None:
    with pytest.raises(StatisticsInputError):
        mann_whitney([], [1.0])
    with pytest.raises(StatisticsInputError):
        fisher_exact(3, 2, 1, 4)


# --- survival (lifelines) -------------------------------------------------------------------
# Freireich et al. 6-MP vs placebo remission times in weeks (Gehan 1965); 0 = censored.
MP6 = [(6, 1), (6, 1), (6, 1), (6, 0), (7, 1), (9, 0), (10, 1), (10, 0), (11, 0), (13, 1),
       (16, 1), (17, 0), (19, 0), (20, 0), (22, 1), (23, 1), (25, 0), (32, 0), (32, 0),
       (34, 0), (35, 0)]
PLACEBO = [(t, 1) for t in (1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17,
                            22, 23)]


def test_kaplan_meier_textbook_values() -> None:
    pytest.importorskip("lifelines", reason="survival statistics need the validate extra")
    from hccatom.validation.survival import kaplan_meier, numbers_at_risk

    t, e = zip(*MP6, strict=True)
    km = kaplan_meier(t, e)
    # product-limit by hand: 1 - 3/21 = 0.857; x(1 - 1/17) = 0.807; x(1 - 1/15) = 0.753;
    # x(1 - 1/12) = 0.690; x(1 - 1/11) = 0.627; x(1 - 1/7) = 0.538; x(1 - 1/6) = 0.448
    for when, expected in [(6, 0.857), (7, 0.807), (10, 0.753), (13, 0.690), (16, 0.627),
                           (22, 0.538), (23, 0.448), (40, 0.448)]:
        assert km.at(when) == pytest.approx(expected, abs=5e-4)
    assert km.median == 23.0
    assert numbers_at_risk(t, [0, 10, 20]) == [21, 15, 8]


def test_logrank_and_cox_textbook_values() -> None:
    pytest.importorskip("lifelines", reason="survival statistics need the validate extra")
    from hccatom.validation.survival import compare_groups

    t = [x for x, _ in MP6 + PLACEBO]
    e = [d for _, d in MP6 + PLACEBO]
    g = [0] * len(MP6) + [1] * len(PLACEBO)  # placebo = "high risk"
    c = compare_groups(t, e, g)
    # Textbook (e.g. Kleinbaum & Klein; R survdiff): log-rank chi2 16.79, P 4.17e-5;
    # R coxph (Efron ties): HR 4.817, 95 % CI 2.147 - 10.81.
    assert c.logrank_chi2 == pytest.approx(16.79, abs=0.01)
    assert c.logrank_p == pytest.approx(4.17e-5, rel=0.01)
    assert c.hazard_ratio == pytest.approx(4.817, abs=0.01)
    assert c.hr_ci_low == pytest.approx(2.147, abs=0.01)
    assert c.hr_ci_high == pytest.approx(10.81, abs=0.02)
    assert c.low.n == 21 and c.high.events == 21
