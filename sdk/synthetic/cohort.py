"""Synthetic cohorts: clinical variables per treatment cohort, latent image features, outcomes.

Clinical variables are drawn from the marginals of the paper's Table 1 for each cohort
(TACE, HAIC, TACE + systemic "TC", HAIC + systemic "HC"). Correlations come from two latent
factors: tumour burden (diameter, number, vascular invasion, metastasis, AFP, ECOG, ascites)
and liver dysfunction (albumin, bilirubin, INR/PT, platelets, ascites, surface nodularity).
BCLC is derived, not drawn: C with vascular invasion, metastasis or ECOG >= 1, else A for
one or two lesions and B beyond; its marginals then land near Table 1.

The outcome of each cohort (objective response for TACE/HAIC, one-year survival for TC/HC)
is Bernoulli from a *known* logistic model of standardised clinical and image features,
its intercept calibrated to the paper's rate. Because the true probability of every
patient is known, so is the best achievable (oracle) AUC: :func:`oracle_auc`.

Everything is vectorised: a cohort of thousands is sampled in milliseconds. Images are
generated separately (:func:`hccatom.synthetic.generate_patient`) from each patient's
latent :class:`~hccatom.synthetic.phantom.TumourFeatures`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
from scipy.special import expit, ndtri

from hccatom.clinical import ClinicalVariables
from hccatom.synthetic.phantom import TumourFeatures

CohortName = Literal["TACE", "HAIC", "TC", "HC"]
COHORTS: tuple[CohortName, ...] = ("TACE", "HAIC", "TC", "HC")


@dataclass(frozen=True)
class CohortMarginals:
    """Table 1 marginals of one cohort (proportions; lab values as mean, SD)."""

    n_paper: int
    age_over_65: float
    female: float
    ecog_1: float
    comorbidity: float
    hbv: float
    ascites: float
    diameter: tuple[float, float, float]  # < 50 mm, 50-100 mm, > 100 mm
    number_over_3: float
    vascular_invasion: float
    metastasis: float
    bclc: tuple[float, float, float]  # A, B, C (target only: BCLC is derived)
    albumin: tuple[float, float]
    alt: tuple[float, float]
    ast: tuple[float, float]
    bilirubin: tuple[float, float]
    pt: tuple[float, float]
    inr: tuple[float, float]
    platelets: tuple[float, float]
    afp_over_400: float
    endpoint: str
    event_rate: float  # paper's ORR (TACE/HAIC) or 1-year OS (TC/HC)


#: Table 1 of the paper (percentages as proportions; labs as mean, SD) and the outcome rates.
TABLE1: dict[CohortName, CohortMarginals] = {
    "TACE": CohortMarginals(
        816, 0.2034, 0.1201, 0.0539, 0.0748, 0.9424, 0.1373, (0.0380, 0.5025, 0.4596),
        0.5662, 0.4400, 0.2549, (0.2059, 0.2561, 0.5380), (38.73, 5.31), (65.04, 76.51),
        (91.11, 126.85), (20.40, 27.46), (12.55, 1.74), (1.07, 0.13), (215.83, 102.02),
        0.5404, "objective_response", 0.248,
    ),
    "HAIC": CohortMarginals(
        909, 0.1144, 0.1078, 0.0891, 0.1408, 0.9340, 0.1496, (0.0044, 0.4081, 0.5875),
        0.6348, 0.7052, 0.4037, (0.1001, 0.1573, 0.7426), (39.72, 4.62), (62.86, 57.95),
        (94.65, 84.66), (18.15, 15.20), (12.50, 1.27), (1.09, 0.11), (251.28, 121.58),
        0.6117, "objective_response", 0.342,
    ),
    "TC": CohortMarginals(
        314, 0.1943, 0.1178, 0.0637, 0.1019, 0.9331, 0.1019, (0.0573, 0.5478, 0.3949),
        0.5605, 0.3567, 0.2261, (0.2516, 0.3185, 0.4299), (39.64, 5.22), (64.30, 78.70),
        (85.48, 163.95), (19.61, 25.75), (12.45, 1.88), (1.07, 0.16), (214.95, 104.38),
        0.5287, "one_year_survival", 0.805,
    ),
    "HC": CohortMarginals(
        443, 0.1129, 0.1084, 0.1084, 0.1377, 0.9345, 0.1129, (0.0068, 0.4244, 0.5688),
        0.6095, 0.6795, 0.3702, (0.1287, 0.1716, 0.6998), (40.23, 4.71), (63.78, 65.96),
        (91.42, 86.30), (17.77, 16.26), (12.48, 1.27), (1.08, 0.11), (253.44, 116.85),
        0.6275, "one_year_survival", 0.777,
    ),
}

# Outcome model: logit = intercept + sum(coef * standardised feature). Signs follow the
# paper's risk factors (ascites, diameter, number, vascular invasion, AFP for survival);
# the image-only terms (enhancement, washout, necrosis) are what the CT adds.
OUTCOME_COEFFICIENTS: dict[CohortName, dict[str, float]] = {
    "TACE": {"diameter": -0.8, "number": -0.6, "pvtt": -0.7, "afp": -0.5, "albumin": 0.35,
             "enhancement": 0.5, "washout": 0.15, "necrosis": -0.2},
    "HAIC": {"diameter": -0.6, "number": -0.5, "pvtt": -0.3, "afp": -0.6, "albumin": 0.35,
             "metastasis": -0.5, "enhancement": 0.5, "washout": 0.15, "necrosis": -0.2},
    "TC": {"diameter": -0.7, "number": -0.6, "pvtt": -0.8, "afp": -0.6, "ascites": -0.9,
           "albumin": 0.45, "bilirubin": -0.35, "metastasis": -0.6, "enhancement": 0.4,
           "necrosis": -0.2},
    "HC": {"diameter": -0.7, "number": -0.6, "pvtt": -0.7, "afp": -0.6, "ascites": -0.9,
           "albumin": 0.45, "bilirubin": -0.35, "metastasis": -0.6, "enhancement": 0.45,
           "necrosis": -0.2},
}
IMAGE_FEATURES = ("enhancement", "washout", "necrosis")


def _lognormal(mean: float, sd: float, z: np.ndarray) -> np.ndarray:
    s2 = np.log1p((sd / mean) ** 2)
    out: np.ndarray = np.exp(np.log(mean) - s2 / 2 + np.sqrt(s2) * z)
    return out


def _mix(rng: np.random.Generator, n: int, *loads: tuple[float, np.ndarray]) -> np.ndarray:
    """A standard-normal variable loading on given factors (weights squared sum < 1)."""
    rest = 1.0 - sum(w * w for w, _ in loads)
    out = np.sqrt(max(rest, 0.0)) * rng.standard_normal(n)
    for w, f in loads:
        out = out + w * f
    return out


def sample_table(cohort: CohortName, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` patients of a cohort as columns: the 20 clinical fields plus latent image ones."""
    m = TABLE1[cohort]
    burden = rng.standard_normal(n)
    liver = rng.standard_normal(n)
    ppf = ndtri  # standard normal quantile (= scipy.stats.norm.ppf, without scipy.stats)

    def binary(p: float, *loads: tuple[float, np.ndarray]) -> np.ndarray:
        out: np.ndarray = _mix(rng, n, *loads) > ppf(1.0 - p)
        return out

    zd = _mix(rng, n, (0.55, burden))
    cut1, cut2 = ppf(m.diameter[0]), ppf(m.diameter[0] + m.diameter[1])
    u = rng.random(n)
    diameter = np.where(zd < cut1, 20 + 30 * u, np.where(zd < cut2, 50 + 50 * u, 100 + 40 * u))
    many = binary(m.number_over_3, (0.45, burden))
    few_count = rng.choice([1, 2, 3], size=n, p=[0.5, 0.3, 0.2])
    number = np.where(many, rng.integers(4, 9, size=n), few_count)
    pvtt = binary(m.vascular_invasion, (0.7, burden))
    meta = binary(m.metastasis, (0.7, burden))
    ecog = binary(m.ecog_1, (0.3, burden)).astype(np.int64)
    ascites = binary(m.ascites, (0.3, burden), (0.5, liver))
    afp_high = binary(m.afp_over_400, (0.45, burden))
    ua = rng.random(n)
    log_afp = np.where(afp_high, np.log10(400.0) + ua * 2.3, 0.3 + ua * (np.log10(400.0) - 0.3))
    afp = 10.0**log_afp
    bclc = np.where(pvtt | meta | (ecog >= 1), "C", np.where(number <= 2, "A", "B"))

    age = np.where(
        rng.random(n) < m.age_over_65,
        np.clip(66 + rng.exponential(5.0, n), 66, 90),
        np.clip(rng.normal(53.0, 8.5, n), 25, 65),
    )
    alb = np.clip(m.albumin[0] + m.albumin[1] * _mix(rng, n, (-0.6, liver)), 22, 55)
    tbil = np.clip(_lognormal(*m.bilirubin, _mix(rng, n, (0.6, liver))), 3, 400)
    z_alt = _mix(rng, n, (0.3, burden))
    alt = np.clip(_lognormal(*m.alt, z_alt), 3, 4000)
    ast = np.clip(_lognormal(*m.ast, 0.8 * z_alt + 0.6 * _mix(rng, n, (0.3, burden))), 4, 4000)
    z_pt = _mix(rng, n, (0.5, liver))
    pt = np.clip(m.pt[0] + m.pt[1] * z_pt, 9, 30)
    inr = np.clip(m.inr[0] + m.inr[1] * (0.9 * z_pt + 0.436 * rng.standard_normal(n)), 0.8, 3.0)
    plt = np.clip(_lognormal(*m.platelets, _mix(rng, n, (-0.5, liver))), 20, 900)
    cp = (
        1 + (tbil >= 34) + (tbil > 50)
        + 1 + (alb <= 35) + (alb < 28)
        + 1 + (inr >= 1.7) + (inr > 2.3)
        + 1 + ascites
        + 1
    ).astype(np.int64)

    enhancement = np.clip(rng.normal(55.0, 18.0, n), 12.0, 100.0)
    washout = np.clip(rng.normal(25.0, 10.0, n), 5.0, 50.0)
    necrosis = np.clip(0.06 + 0.25 * (diameter - 50) / 100 + rng.normal(0, 0.06, n), 0.0, 0.45)
    nodularity = expit(1.2 * liver)
    return {
        "albumin_g_per_l": alb, "alt_u_per_l": alt, "ast_u_per_l": ast,
        "total_bilirubin_umol_per_l": tbil, "prothrombin_time_s": pt, "inr": inr,
        "platelets_10e9_per_l": plt, "child_pugh_score": cp,
        "age_years": age, "sex": np.where(rng.random(n) < m.female, "female", "male"),
        "ecog": ecog, "comorbidity": rng.random(n) < m.comorbidity,
        "hbv": rng.random(n) < m.hbv, "ascites": ascites,
        "afp_ng_per_ml": afp, "tumour_number": number, "max_tumour_diameter_mm": diameter,
        "bclc_stage": bclc, "metastasis": meta, "pvtt": pvtt,
        "enhancement_hu": enhancement, "washout_hu": washout, "necrosis_fraction": necrosis,
        "liver_nodularity": nodularity,
    }


def standardised_features(table: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outcome model's inputs: fixed, documented standardisations of table columns."""
    t = table
    return {
        "diameter": (t["max_tumour_diameter_mm"] - 90.0) / 30.0,
        "number": (np.minimum(t["tumour_number"], 8) - 4.0) / 2.5,
        "pvtt": t["pvtt"].astype(float),
        "metastasis": t["metastasis"].astype(float),
        "ascites": t["ascites"].astype(float),
        "afp": (np.log10(t["afp_ng_per_ml"]) - 2.6) / 1.0,
        "albumin": (t["albumin_g_per_l"] - 39.0) / 5.0,
        "bilirubin": (np.log(t["total_bilirubin_umol_per_l"]) - 2.8) / 0.6,
        "enhancement": (t["enhancement_hu"] - 55.0) / 18.0,
        "washout": (t["washout_hu"] - 25.0) / 10.0,
        "necrosis": (t["necrosis_fraction"] - 0.15) / 0.1,
    }


def _linear(cohort: CohortName, table: Mapping[str, np.ndarray], image: bool = True) -> np.ndarray:
    x = standardised_features(table)
    out = np.zeros(len(table["age_years"]))
    for name, coef in OUTCOME_COEFFICIENTS[cohort].items():
        if image or name not in IMAGE_FEATURES:
            out = out + coef * x[name]
    return out


@cache
def intercept(cohort: CohortName) -> float:
    """Intercept that makes the cohort's mean outcome probability equal the paper's rate."""
    table = sample_table(cohort, 40000, np.random.default_rng(20240601))
    lin = _linear(cohort, table)
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(np.mean(expit(mid + lin))) < TABLE1[cohort].event_rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def outcome_probability(cohort: CohortName, table: Mapping[str, np.ndarray]) -> np.ndarray:
    """True outcome probability of every patient in the table (the oracle's score)."""
    out: np.ndarray = expit(intercept(cohort) + _linear(cohort, table))
    return out


def auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the ROC curve (Mann-Whitney with ties counted half), optionally weighted.

    With ``weights`` each item counts as a case with weight ``w`` and a control with weight
    ``1 - w`` (``labels`` ignored): the population AUC of a score for outcomes drawn with
    probability ``w``.
    """
    s = np.asarray(scores, dtype=float)
    if weights is None:
        y = np.asarray(labels).astype(bool)
        pos, neg = y.astype(float), (~y).astype(float)
    else:
        pos = np.asarray(weights, dtype=float)
        neg = 1.0 - pos
    order = np.argsort(s, kind="mergesort")
    s, pos, neg = s[order], pos[order], neg[order]
    _, start = np.unique(s, return_index=True)
    pos_g = np.add.reduceat(pos, start)
    neg_g = np.add.reduceat(neg, start)
    neg_below = np.concatenate([[0.0], np.cumsum(neg_g)[:-1]])
    total = pos.sum() * neg.sum()
    if total <= 0:
        raise ValueError("AUC needs at least one case and one control")
    return float(np.sum(pos_g * (neg_below + 0.5 * neg_g)) / total)


@cache
def oracle_auc(cohort: CohortName, clinical_only: bool = False) -> float:
    """Population AUC of the true probability (the best any model can do) for a cohort.

    ``clinical_only``: the AUC of the clinical part of the logit alone, i.e. what a model
    that ignores the image can reach at most (approximately; the image features are
    independent of the clinical ones, so the clinical logit ranks like E[p | clinical]).
    """
    table = sample_table(cohort, 40000, np.random.default_rng(777))
    p = outcome_probability(cohort, table)
    score = _linear(cohort, table, image=not clinical_only)
    return auc(score, np.zeros(len(p)), weights=p)


@dataclass(frozen=True)
class CohortPatient:
    """One synthetic cohort member: clinical variables, latent image features, outcome."""

    cohort: CohortName
    index: int
    seed: int
    clinical: ClinicalVariables
    features: TumourFeatures
    probability: float
    outcome: bool


@dataclass(frozen=True)
class SyntheticCohort:
    """A drawn cohort with the oracle's view of it."""

    cohort: CohortName
    endpoint: str
    patients: tuple[CohortPatient, ...]

    @property
    def outcomes(self) -> np.ndarray:
        """Outcome per patient (bool)."""
        return np.array([p.outcome for p in self.patients], bool)

    @property
    def probabilities(self) -> np.ndarray:
        """True outcome probability per patient."""
        return np.array([p.probability for p in self.patients])

    def sample_oracle_auc(self) -> float:
        """AUC of the true probability against this cohort's drawn outcomes."""
        return auc(self.probabilities, self.outcomes)


def _clinical_record(table: Mapping[str, np.ndarray], i: int) -> dict[str, object]:
    ints = {"child_pugh_score", "ecog", "tumour_number"}
    bools = {"comorbidity", "hbv", "ascites", "metastasis", "pvtt"}
    strs = {"sex", "bclc_stage"}
    rec: dict[str, object] = {}
    for name in ClinicalVariables.model_fields:
        v = table[name][i]
        if name in ints:
            rec[name] = int(v)
        elif name in bools:
            rec[name] = bool(v)
        elif name in strs:
            rec[name] = str(v)
        else:
            rec[name] = round(float(v), 2)
    return rec


def draw_cohort(cohort: CohortName, n: int, seed: int) -> SyntheticCohort:
    """A seeded synthetic cohort of ``n`` patients (same arguments -> same cohort).

    Every patient carries an image seed for :func:`~hccatom.synthetic.generate_patient`
    and the :class:`TumourFeatures` that make its image consistent with its clinical data.
    """
    if cohort not in TABLE1:
        raise ValueError(f"unknown cohort {cohort!r}; expected one of {COHORTS}")
    ss = np.random.SeedSequence([seed, COHORTS.index(cohort), 0xC0407])
    rng = np.random.default_rng(ss)
    table = sample_table(cohort, n, rng)
    p = outcome_probability(cohort, table)
    y = rng.random(n) < p
    image_seeds = rng.integers(0, 2**31 - 1, size=n)
    patients = []
    for i in range(n):
        feats = TumourFeatures(
            n_tumours=int(table["tumour_number"][i]),
            max_diameter_mm=float(table["max_tumour_diameter_mm"][i]),
            arterial_enhancement_hu=float(table["enhancement_hu"][i]),
            washout_hu=float(table["washout_hu"][i]),
            necrosis_fraction=float(table["necrosis_fraction"][i]),
            vascular_invasion=bool(table["pvtt"][i]),
            metastasis=bool(table["metastasis"][i]),
            ascites=bool(table["ascites"][i]),
            liver_nodularity=float(table["liver_nodularity"][i]),
        )
        patients.append(CohortPatient(
            cohort=cohort, index=i, seed=int(image_seeds[i]),
            clinical=ClinicalVariables.from_mapping(_clinical_record(table, i)),
            features=feats, probability=float(p[i]), outcome=bool(y[i]),
        ))
    return SyntheticCohort(
        cohort=cohort, endpoint=TABLE1[cohort].endpoint, patients=tuple(patients)
    )
