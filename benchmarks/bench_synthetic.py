"""Synthetic phantom generation speed (numpy/scipy only): the demo size and a realistic study.

Run:  .venv/bin/pytest benchmarks/bench_synthetic.py -o python_files='bench_*.py' \
          --benchmark-only --benchmark-columns=median,min,max,rounds
"""

from __future__ import annotations

from typing import Any

import pytest

from hccatom.synthetic import ScanSpec, draw_cohort, generate_patient

CASES = {
    "demo_128x128x48": ScanSpec.demo(),
    "realistic_512x512x160": ScanSpec.realistic(),
}


@pytest.mark.parametrize("name", list(CASES))
def test_generate_patient(benchmark: Any, name: str) -> None:
    spec = CASES[name]
    rounds = 5 if name.startswith("demo") else 2
    p = benchmark.pedantic(generate_patient, args=(1, spec), rounds=rounds, iterations=1)
    benchmark.extra_info["voxels_per_phase"] = int(p.arterial.array.size)
    assert p.arterial.shape == spec.shape_zyx


def test_draw_cohort_1000(benchmark: Any) -> None:
    co = benchmark.pedantic(draw_cohort, args=("TACE", 1000, 0), rounds=3, iterations=1)
    assert len(co.patients) == 1000
