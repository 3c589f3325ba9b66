"""Synthetic two-phase CT phantoms and treatment cohorts (numpy/scipy only; no patient data).

* :func:`generate_patient`: a seeded arterial + portal study with liver/tumour labels.
* :func:`draw_cohort`: clinical variables per cohort from the paper's Table 1 marginals,
  latent image features and outcomes from a known logistic model (:func:`oracle_auc`).

Synthetic data are for demos, tests and benchmarks only: never evidence about patients.
"""

from hccatom.synthetic.cohort import (
    COHORTS,
    TABLE1,
    CohortMarginals,
    CohortName,
    CohortPatient,
    SyntheticCohort,
    auc,
    draw_cohort,
    oracle_auc,
    outcome_probability,
    sample_table,
)
from hccatom.synthetic.phantom import ScanSpec, SyntheticPatient, TumourFeatures, generate_patient

__all__ = [
    "COHORTS",
    "TABLE1",
    "CohortMarginals",
    "CohortName",
    "CohortPatient",
    "ScanSpec",
    "SyntheticCohort",
    "SyntheticPatient",
    "TumourFeatures",
    "auc",
    "draw_cohort",
    "generate_patient",
    "oracle_auc",
    "outcome_probability",
    "sample_table",
]
