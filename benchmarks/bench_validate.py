"""``hccatom validate`` speed: the statistics step for 10,000 cases, and scoring at demo size.

The statistics step (:func:`hccatom.validation.analyses.analyse`: AUC + DeLong CI and
tests, threshold metrics, Mann-Whitney, KM/log-rank/Cox, Table 3 under both policies) runs
on 10,000 cases with precomputed scores. Reference in the same run: DeLong's variance by
its definition (every positive-negative pair, O(m n)) against our mid-rank form (O(n log n)).
Scoring: cases per minute of the real chain with the demo bundle on synthetic patients.

Run:  .venv/bin/pytest benchmarks/bench_validate.py -o python_files='bench_*.py' \
          --benchmark-only --benchmark-columns=median,min,max,rounds
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hccatom.atom import MODELS
from hccatom.validation.analyses import analyse
from hccatom.validation.cohort import CohortCase
from hccatom.validation.roc import auc_delong
from hccatom.validation.scoring import ScoredCase

TREATMENTS = ("TACE", "HAIC", "TACE + systemic", "HAIC + systemic")
THRESHOLDS = {"TACE": 0.4035, "HAIC": 0.3368, "TC": 0.6130, "HC": 0.6458}


def _cohort(n: int, seed: int = 0) -> list[ScoredCase]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = TREATMENTS[i % 4]
        y = int(rng.random() < 0.4)
        scores = {m: float(np.clip(0.45 + 0.15 * y + rng.normal(0, 0.15), 0.001, 0.999))
                  for m in MODELS}
        months = float(rng.exponential(20.0 if y else 9.0))
        case = CohortCase(
            line=i + 2, case_id=f"b{i}", treatment=t,  # type: ignore[arg-type]
            response=y if t in ("TACE", "HAIC") else None, os_months=months,
            os_event=int(rng.random() < 0.7), set=("train", "internal", "external")[i % 3],
            scores=scores, compare={m: float(rng.random()) for m in MODELS},
        )
        out.append(ScoredCase(case, scores, "table"))
    return out


def test_statistics_10000_cases(benchmark: Any) -> None:
    pytest.importorskip("lifelines", reason="needs the validate extra")
    cases = _cohort(10_000)
    res = benchmark.pedantic(analyse, args=(cases, THRESHOLDS), rounds=3, iterations=1)
    benchmark.extra_info["cases"] = len(cases)
    assert len(res.table2) == 16 and len(res.table3) == 8 and len(res.survival) == 4


def _pairwise_delong_se(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(np.sqrt(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size))


@pytest.mark.parametrize("impl", ["midrank", "pairwise_reference"])
def test_delong_10000(benchmark: Any, impl: str) -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(10_000) < 0.4).astype(int)
    s = rng.normal(size=10_000) + 0.8 * y
    if impl == "midrank":
        se = benchmark.pedantic(lambda: auc_delong(s, y).se, rounds=5, iterations=1)
    else:
        se = benchmark.pedantic(_pairwise_delong_se, args=(s, y), rounds=3, iterations=1)
    assert se == pytest.approx(_pairwise_delong_se(s, y))


def test_scoring_cases_per_minute_demo_size(benchmark: Any, tmp_path: Path) -> None:
    """Four synthetic patients (one per cohort) through the real chain, 2 workers."""
    from hccatom.demo import demo_bundle_path
    from hccatom.predictor import Predictor
    from hccatom.validation.cohort import read_cohort
    from hccatom.validation.demo_cohort import write_demo_cohort
    from hccatom.validation.scoring import score_cohort

    cohort = read_cohort(write_demo_cohort(tmp_path / "c", 1))
    predictor = Predictor.from_bundle(demo_bundle_path(), device="cpu")
    runs = iter(range(100))

    def once() -> float:
        out = tmp_path / f"run{next(runs)}"  # a fresh cache each round
        t0 = time.perf_counter()
        res = score_cohort(cohort.cases, predictor, out, workers=2)
        assert len(res.scored) == len(cohort.cases)
        return len(res.scored) / (time.perf_counter() - t0) * 60.0

    rate = benchmark.pedantic(once, rounds=2, iterations=1)
    benchmark.extra_info["cases_per_minute_last_round"] = rate
