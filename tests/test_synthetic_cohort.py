"""Synthetic cohorts: Table 1 marginals, correlations, clinical validity, known oracle AUC."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hccatom import ClinicalVariables
from hccatom.synthetic import (
    COHORTS,
    TABLE1,
    auc,
    draw_cohort,
    oracle_auc,
    outcome_probability,
    sample_table,
)

N = 20000
SKEWED = {"alt_u_per_l", "ast_u_per_l", "total_bilirubin_umol_per_l"}


@pytest.fixture(scope="module")
def tables() -> dict[str, dict[str, np.ndarray]]:
    return {c: sample_table(c, N, np.random.default_rng(5)) for c in COHORTS}


@pytest.mark.parametrize("cohort", COHORTS)
def test_binary_marginals_match_table1(cohort: str, tables: dict) -> None:
    t, m = tables[cohort], TABLE1[cohort]
    checks = {
        "age>65": ((t["age_years"] > 65).mean(), m.age_over_65),
        "female": ((t["sex"] == "female").mean(), m.female),
        "ecog1": ((t["ecog"] >= 1).mean(), m.ecog_1),
        "comorbidity": (t["comorbidity"].mean(), m.comorbidity),
        "hbv": (t["hbv"].mean(), m.hbv),
        "ascites": (t["ascites"].mean(), m.ascites),
        "number>3": ((t["tumour_number"] > 3).mean(), m.number_over_3),
        "pvtt": (t["pvtt"].mean(), m.vascular_invasion),
        "metastasis": (t["metastasis"].mean(), m.metastasis),
        "afp>400": ((t["afp_ng_per_ml"] > 400).mean(), m.afp_over_400),
        "diam<50": ((t["max_tumour_diameter_mm"] < 50).mean(), m.diameter[0]),
        "diam>100": ((t["max_tumour_diameter_mm"] > 100).mean(), m.diameter[2]),
    }
    for name, (got, want) in checks.items():
        assert abs(got - want) < 0.02, (cohort, name, got, want)
    for stage, want in zip("ABC", m.bclc, strict=True):
        got = (t["bclc_stage"] == stage).mean()
        assert abs(got - want) < 0.06, (cohort, stage, got, want)


@pytest.mark.parametrize("cohort", COHORTS)
def test_lab_means_and_sds_match_table1(cohort: str, tables: dict) -> None:
    t, m = tables[cohort], TABLE1[cohort]
    for col, (mean, _sd) in {
        "albumin_g_per_l": m.albumin, "prothrombin_time_s": m.pt, "inr": m.inr,
        "platelets_10e9_per_l": m.platelets, "total_bilirubin_umol_per_l": m.bilirubin,
        "alt_u_per_l": m.alt, "ast_u_per_l": m.ast,
    }.items():
        tol = 0.12 if col in SKEWED else 0.05  # heavy right tails: sample means wander
        assert abs(t[col].mean() - mean) < tol * mean, (cohort, col, t[col].mean(), mean)
    assert abs(t["albumin_g_per_l"].std() - m.albumin[1]) < 0.15 * m.albumin[1]
    assert set(np.unique(t["child_pugh_score"])) >= {5, 6, 7}


def test_correlations_are_clinically_sensible(tables: dict) -> None:
    t = tables["TACE"]
    c = t["bclc_stage"] == "C"
    assert np.array_equal(c, t["pvtt"] | t["metastasis"] | (t["ecog"] >= 1))
    assert t["pvtt"][t["metastasis"]].mean() > t["pvtt"][~t["metastasis"]].mean() + 0.15
    big = t["max_tumour_diameter_mm"] > 100
    assert t["pvtt"][big].mean() > t["pvtt"][~big].mean()
    assert (t["afp_ng_per_ml"][big] > 400).mean() > (t["afp_ng_per_ml"][~big] > 400).mean()
    # liver dysfunction: low albumin goes with high bilirubin and ascites
    r = np.corrcoef(t["albumin_g_per_l"], np.log(t["total_bilirubin_umol_per_l"]))[0, 1]
    assert r < -0.15
    assert t["ascites"][t["albumin_g_per_l"] < 35].mean() > t["ascites"].mean()


@pytest.mark.parametrize("cohort", COHORTS)
def test_outcome_rate_is_the_papers_and_oracle_auc_is_known(cohort: str, tables: dict) -> None:
    p = outcome_probability(cohort, tables[cohort])
    assert abs(p.mean() - TABLE1[cohort].event_rate) < 0.01
    full, clin = oracle_auc(cohort), oracle_auc(cohort, clinical_only=True)
    assert 0.75 < full < 0.95
    assert clin < full  # the image carries information the clinical data lack


def test_draw_cohort_is_deterministic_and_consistent() -> None:
    a, b = draw_cohort("HAIC", 60, seed=3), draw_cohort("HAIC", 60, seed=3)
    c = draw_cohort("HAIC", 60, seed=4)
    assert a == b
    assert a.patients != c.patients
    assert a.endpoint == "objective_response"
    for p in a.patients:
        assert isinstance(p.clinical, ClinicalVariables)
        assert p.features.n_tumours == p.clinical.tumour_number
        assert p.features.max_diameter_mm == pytest.approx(p.clinical.max_tumour_diameter_mm,
                                                           abs=0.01)
        assert p.features.vascular_invasion == p.clinical.pvtt
        assert p.features.metastasis == p.clinical.metastasis
        assert p.features.ascites == p.clinical.ascites
        assert 0 < p.probability < 1


def test_sample_oracle_auc_is_near_the_population_value() -> None:
    co = draw_cohort("TC", 4000, seed=1)
    assert abs(co.sample_oracle_auc() - oracle_auc("TC")) < 0.03
    assert abs(co.outcomes.mean() - TABLE1["TC"].event_rate) < 0.03


def test_auc_matches_brute_force_with_ties() -> None:
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 40).astype(float)
    y = rng.random(40) < 0.4
    pairs = [(i, j) for i, j in itertools.product(range(40), range(40)) if y[i] and not y[j]]
    brute = np.mean([1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0 for i, j in pairs])
    assert auc(s, y) == pytest.approx(brute)
    assert auc(-s, y) == pytest.approx(1 - brute)
    with pytest.raises(ValueError):
        auc(s, np.zeros(40, bool))


def test_unknown_cohort_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown cohort"):
        draw_cohort("RFA", 5, seed=0)
