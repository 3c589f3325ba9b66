"""Site validation: a site's own cohort through a bundle, scored as the paper scored it.

Statistics (:mod:`~hccatom.validation.roc`, :mod:`~hccatom.validation.binary_metrics`,
:mod:`~hccatom.validation.group_tests`, :mod:`~hccatom.validation.survival`), the cohort
table (:mod:`~hccatom.validation.cohort`), scoring with a resumable cache
(:mod:`~hccatom.validation.scoring`), the paper's analyses
(:mod:`~hccatom.validation.analyses`), threshold recalibration
(:mod:`~hccatom.validation.calibrate`) and the report (:mod:`~hccatom.validation.report`).
Survival statistics and plots need the ``validate`` extra (lifelines, matplotlib).
"""

from hccatom.validation.binary_metrics import ThresholdMetrics, threshold_metrics
from hccatom.validation.errors import CohortInputError, StatisticsInputError
from hccatom.validation.group_tests import FisherExact, MannWhitney, fisher_exact, mann_whitney
from hccatom.validation.roc import AucResult, DelongTest, auc_delong, delong_test, roc_curve

__all__ = [
    "AucResult",
    "CohortInputError",
    "DelongTest",
    "FisherExact",
    "MannWhitney",
    "StatisticsInputError",
    "ThresholdMetrics",
    "auc_delong",
    "delong_test",
    "fisher_exact",
    "mann_whitney",
    "roc_curve",
    "threshold_metrics",
]
