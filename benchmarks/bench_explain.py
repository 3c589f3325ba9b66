"""Explanations and the report on the CPU: what ``explain`` adds to the SELECTION stage,
and how long the report takes to render.

Models: the committed demo bundle plus explain graphs (built here with onnx, as
``tools/example_report.py`` does), demo patient seed 0. Timed interleaved, round by round,
so that all share the machine's load; medians and ratios go to ``extra_info`` and are
printed:

* ``selection``: the SELECTION stage without explain (four fast graphs, batch 1);
* ``selection_explain``: the stage with explain (four explain graphs, which give the scores
  and the attention maps) plus the NumPy rollout: ``rollout_added`` = this - ``selection``;
* ``attributions`` (one row per variable whose value differs from the reference) and
  ``attributions_groups`` (3 rows), four fast graphs in one batched call each;
* the earlier path, kept here for the A/B: ``rollout_before`` (explain graphs run after
  the fast graphs) and ``attributions_before`` (batch of 21: the patient + every
  variable, equal to its reference or not).

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
            "rec": rec, "bundle": bundle}


def _median_ms(fn: Callable[[], object], times: list[float],
               clock: Callable[[], float] = time.perf_counter) -> None:
    t0 = clock()
    fn()
    times.append((clock() - t0) * 1000.0)


def _steps(p: Any, feeds: Any, images: Any, geom: Any, cv: Any
           ) -> dict[str, Callable[[], object]]:
    from hccatom.explain.attributions import batch_feeds, variants
    from hccatom.explain.runner import ExplainRun

    base = p.scorer.score(feeds)[0]
    sel = p.bundle.manifest.selection
    names = {"arterial": sel.io.arterial, "portal": sel.io.portal, "lab": sel.io.lab,
             "demo": sel.io.demo, "iv": sel.io.iv}

    def selection_explain() -> object:
        run = ExplainRun(p.explainer, p.scorer)
        run.score(feeds)
        return p.explainer.relevance(feeds, images, geom, run.outputs)

    def attributions_before() -> object:  # the earlier path: every variable, patient row
        rows = [cv, *(c for _, c in variants(cv, p.explainer.reference))]
        return p.scorer.score(batch_feeds(images["arterial"].image, images["portal"].image,
                                          rows, sel.clinical_encoding, names))

    return {
        "selection": lambda: p.scorer.score(feeds),
        "selection_explain": selection_explain,
        "attributions": lambda: p.explainer.attributions(p.scorer, images, cv, base),
        "attributions_groups": lambda: p.explainer.attributions(p.scorer, images, cv, base,
                                                                "groups"),
        "rollout_before": lambda: p.explainer.relevance(feeds, images, geom),
        "attributions_before": attributions_before,
    }


def test_explain_vs_selection_stage(benchmark: Any, case: dict[str, Any]) -> None:
    p, feeds, images, geom, cv = (case[k] for k in ("p", "feeds", "images", "geom", "cv"))
    base = p.scorer.score(feeds)[0]
    steps = _steps(p, feeds, images, geom, cv)
    for fn in steps.values():  # warm-up (engine creation, first-run allocations)
        fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(ROUNDS):
        for name, fn in steps.items():
            _median_ms(fn, times[name])
    med = {k: statistics.median(v) for k, v in times.items()}
    sel_ms = med["selection"]
    added = max(med["selection_explain"] - sel_ms, 0.0)
    ratios = {
        "rollout_added_over_selection": added / sel_ms,
        "attributions_over_selection": med["attributions"] / sel_ms,
        "attributions_groups_over_selection": med["attributions_groups"] / sel_ms,
        "explain_added_over_selection": (added + med["attributions"]) / sel_ms,
        "explain_groups_added_over_selection": (added + med["attributions_groups"]) / sel_ms,
        "before_explain_added_over_selection":
            (med["rollout_before"] + med["attributions_before"]) / sel_ms,
    }
    rows = sum(1 for a in p.explainer.attributions(p.scorer, images, cv, base)[0]["TACE"]
               if not a.equals_reference)
    benchmark.extra_info.update({f"median_ms_{k}": round(v, 2) for k, v in med.items()})
    benchmark.extra_info.update({k: round(v, 2) for k, v in ratios.items()})
    benchmark.extra_info["attribution_rows_run"] = rows
    print(f"\ninterleaved medians of {ROUNDS} rounds (ms): "
          + ", ".join(f"{k} {v:.1f}" for k, v in med.items())
          + f"; attribution rows run {rows} of 20; ratios: "
          + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    benchmark.pedantic(lambda: (steps["selection_explain"](), steps["attributions"]()),
                       rounds=3, iterations=1)


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_report_rendering(benchmark: Any, case: dict[str, Any], suffix: str,
                          tmp_path: Path) -> None:
    rec = case["rec"]
    rec.report(tmp_path / f"warm{suffix}")  # matplotlib import, font cache
    benchmark.pedantic(lambda: rec.report(tmp_path / f"r{suffix}"), rounds=5, iterations=1)


def test_explain_cpu_time_one_thread(benchmark: Any, case: dict[str, Any]) -> None:
    """The same steps with one engine thread, timed in process CPU time: on a loaded VM the
    wall clock of two-thread runs mostly measures waiting for the second core."""
    p = hccatom.Predictor.from_bundle(case["bundle"], device="cpu", threads=1)
    feeds, images, geom, cv = (case[k] for k in ("feeds", "images", "geom", "cv"))
    steps = _steps(p, feeds, images, geom, cv)
    for fn in steps.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(ROUNDS):
        for name, fn in steps.items():
            _median_ms(fn, times[name], time.process_time)
    med = {k: statistics.median(v) for k, v in times.items()}
    sel_ms = med["selection"]
    ratios = {"rollout_added_over_selection": (med["selection_explain"] - sel_ms) / sel_ms,
              "attributions_over_selection": med["attributions"] / sel_ms,
              "attributions_groups_over_selection": med["attributions_groups"] / sel_ms,
              "before_explain_added_over_selection":
                  (med["rollout_before"] + med["attributions_before"]) / sel_ms}
    benchmark.extra_info.update({f"cpu_ms_{k}": round(v, 2) for k, v in med.items()})
    benchmark.extra_info.update({k: round(v, 2) for k, v in ratios.items()})
    print(f"\nCPU time, 1 thread, medians of {ROUNDS} rounds (ms): "
          + ", ".join(f"{k} {v:.1f}" for k, v in med.items()) + "; ratios: "
          + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    benchmark.pedantic(steps["selection"], rounds=3, iterations=1)
