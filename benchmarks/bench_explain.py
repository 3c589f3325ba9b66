"""Explanations and the report on the CPU: what ``explain=True`` adds to the SELECTION
stage, and how long the report takes to render.

Models: the committed demo bundle plus explain graphs (built here with onnx, as
``tools/example_report.py`` does), demo patient seed 0. The SELECTION stage (four scores,
batch 1), rollout (four explain graphs + the rollout in NumPy) and attributions (four fast
graphs on a batch of 21) are timed interleaved, round by round, so that they share the
machine's load; medians and ratios go to ``extra_info`` and are printed.

Run:  .venv/bin/pytest benchmarks/bench_explain.py -o python_files='bench_*.py' \
          --benchmark-only --benchmark-columns=median,min,max,rounds -s
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnx", reason="explain graphs are built with onnx (export extra)")
pytest.importorskip("matplotlib", reason="the report needs matplotlib")

import hccatom
from hccatom.demo import demo_bundle_path, demo_case
from hccatom.explain.visual import geometry_of
from hccatom.export.explain_bundle import add_explain_to_bundle

ROUNDS = int(os.environ.get("HCCATOM_BENCH_ROUNDS", "15"))


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from hccatom.bundle.explain_spec import reference_values
    from hccatom.chain import encode_clinical
    from hccatom.predictor import _Timer
    from hccatom.synthetic import draw_cohort

    ref = reference_values([p.clinical for p in draw_cohort("TACE", 40, seed=5).patients])
    bundle = add_explain_to_bundle(demo_bundle_path(), tmp_path_factory.mktemp("b") / "b",
                                   clinical_reference=ref, verify=False)
    predictor = hccatom.Predictor.from_bundle(bundle, device="cpu", threads=2)
    ct, clinical, _ = demo_case(0)
    _, images, _, _, cv = predictor._score(ct, clinical, _Timer(None))
    sel = predictor.bundle.manifest.selection
    feeds = predictor.scorer.feeds(images["arterial"].image, images["portal"].image,
                                   encode_clinical(cv, sel.clinical_encoding, sel))
    geometry = {n: geometry_of(img, predictor.preprocessing) for n, img in images.items()}
    rec = predictor.recommend(ct, clinical, explain=True)
    return {"p": predictor, "images": images, "cv": cv, "feeds": feeds, "geom": geometry,
            "rec": rec}


def _median_ms(fn: Callable[[], object], times: list[float]) -> None:
    t0 = time.perf_counter()
    fn()
    times.append((time.perf_counter() - t0) * 1000.0)


def test_explain_vs_selection_stage(benchmark: Any, case: dict[str, Any]) -> None:
    p, feeds, images, geom, cv = (case[k] for k in ("p", "feeds", "images", "geom", "cv"))
    steps: dict[str, Callable[[], object]] = {
        "selection": lambda: p.scorer.score(feeds),
        "rollout": lambda: p.explainer.relevance(feeds, images, geom),
        "attributions": lambda: p.explainer.attributions(p.scorer, images, cv),
    }
    for fn in steps.values():  # warm-up (engine creation, first-run allocations)
        fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(ROUNDS):
        for name, fn in steps.items():
            _median_ms(fn, times[name])
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {"rollout_over_selection": med["rollout"] / med["selection"],
              "attributions_over_selection": med["attributions"] / med["selection"],
              "explain_over_selection": (med["rollout"] + med["attributions"])
              / med["selection"]}
    benchmark.extra_info.update({f"median_ms_{k}": round(v, 2) for k, v in med.items()})
    benchmark.extra_info.update({k: round(v, 2) for k, v in ratios.items()})
    print(f"\ninterleaved medians of {ROUNDS} rounds (ms): "
          + ", ".join(f"{k} {v:.1f}" for k, v in med.items())
          + "; ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    benchmark.pedantic(lambda: (steps["rollout"](), steps["attributions"]()), rounds=3,
                       iterations=1)


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_report_rendering(benchmark: Any, case: dict[str, Any], suffix: str,
                          tmp_path: Path) -> None:
    rec = case["rec"]
    rec.report(tmp_path / f"warm{suffix}")  # matplotlib import, font cache
    benchmark.pedantic(lambda: rec.report(tmp_path / f"r{suffix}"), rounds=5, iterations=1)
