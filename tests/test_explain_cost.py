"""What makes explain cheaper must not change its results.

* the explain graphs' score is the fast graphs' score (the SELECTION stage takes it from
  them with ``explain``): demo patient and random inputs, |diff| <= 1e-6, same decision;
* attributions skip the copies whose input equals the patient's (delta exactly 0), take
  the case's own scores as the base, and otherwise give the deltas of the full batch;
* ``explain="groups"`` / ``"rollout"``; a bad mode is a typed error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hccatom
from hccatom.atom import MODELS, decide
from hccatom.errors import InputError


@pytest.fixture(scope="module")
def predictor(explain_bundle: Path) -> Any:
    return hccatom.Predictor.from_bundle(explain_bundle, device="cpu")


def _random_feeds(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"arterial": rng.uniform(-1, 1, (n, 3, 224, 224)).astype(np.float32),
            "portal": rng.uniform(-1, 1, (n, 3, 224, 224)).astype(np.float32),
            "lab": rng.normal(0, 50, (n, 8)).astype(np.float32),
            "demo": rng.normal(0, 20, (n, 6)).astype(np.float32),
            "iv": rng.normal(0, 100, (n, 6)).astype(np.float32)}


def test_explain_graph_scores_equal_fast_graph_scores(predictor: Any) -> None:
    """Same math (the twin only adds head means beside the softmaxes): batch 1 as the
    SELECTION stage runs it, 8 random cases, |diff| <= 1e-6 and the same ATOM decision."""
    graphs = predictor.explainer
    thresholds = predictor.bundle.manifest.thresholds
    policy = predictor.bundle.manifest.policy
    worst = 0.0
    for i in range(8):
        feeds = _random_feeds(1, seed=i)
        fast = predictor.scorer.score(feeds)[0]
        explain = graphs.run_graphs(feeds)
        twin = {m: float(explain[m]["score"].ravel()[0]) for m in MODELS}
        worst = max(worst, *(abs(fast[m] - twin[m]) for m in MODELS))
        assert decide(fast, thresholds, policy) == decide(twin, thresholds, policy)
    assert worst <= 1e-6


def test_recommendation_with_explain_has_the_fast_path_scores(predictor: Any,
                                                               explained: Any) -> None:
    from hccatom.demo import demo_case

    ct, clinical, _ = demo_case(0)
    plain = predictor.recommend(ct, clinical)
    for m in MODELS:
        assert abs(plain.scores[m].score - explained.scores[m].score) <= 1e-6
        assert explained.explanation.models[m].score == explained.scores[m].score
    assert plain.decision == explained.decision and plain.final_plan == explained.final_plan


@pytest.fixture(scope="module")
def scored(predictor: Any) -> tuple[Any, Any, Any]:
    """The demo patient's scores, model images and clinical record (one chain run)."""
    from hccatom.demo import demo_case
    from hccatom.predictor import _Timer

    ct, clinical, _ = demo_case(0)
    scores, images, _, _, cv = predictor._score(ct, clinical, _Timer(None))
    return scores, images, cv


def test_attributions_skip_rows_equal_to_the_reference(predictor: Any, scored: Any) -> None:
    """Copies with the patient's own input are not run and get delta 0; every other delta
    equals the one-batch computation of [patient, *all copies] (the earlier path)."""
    from hccatom.explain.attributions import batch_feeds, variants

    scores, images, cv = scored
    explainer = predictor.explainer
    ref = dict(explainer.reference)
    same = {"sex": cv.sex, "ecog": cv.ecog, "afp_ng_per_ml": cv.afp_ng_per_ml}
    ref.update(same)  # three variables at their reference for sure
    explainer_ref, explainer.reference = explainer.reference, ref
    rows_run: list[int] = []
    score = predictor.scorer.score
    try:
        predictor.scorer.score = lambda f: (rows_run.append(len(f["lab"])), score(f))[1]
        got, _ = explainer.attributions(predictor.scorer, images, cv, scores)
    finally:
        explainer.reference = explainer_ref
        del predictor.scorer.score
    pairs = variants(cv, ref)
    enc = predictor.bundle.manifest.selection.clinical_encoding
    own = enc.encode(cv)
    differs = [n for n, c in pairs
               if any(not np.array_equal(enc.encode(c)[g], own[g]) for g in own)]
    assert rows_run == [len(differs)] and len(differs) <= 20 - len(same)
    names = {k: k for k in ("arterial", "portal", "lab", "demo", "iv")}
    full = score(batch_feeds(images["arterial"].image, images["portal"].image,
                             [cv, *(c for _, c in pairs)], enc, names))
    assert got is not None
    for m in MODELS:
        by_name = {a.variable: a for a in got[m]}
        assert len(by_name) == 20
        for name in same:
            assert by_name[name].delta == 0.0 and by_name[name].equals_reference
            assert "equals the reference" in by_name[name].text()
        for (name, _), row in zip(pairs, full[1:], strict=True):
            a = by_name[name]
            assert a.equals_reference == (name not in differs)
            assert abs(a.delta - (full[0][m] - row[m])) <= 1e-6


def test_group_attributions_replace_each_token_group(predictor: Any, scored: Any) -> None:
    from hccatom.explain.attributions import batch_feeds

    scores, images, cv = scored
    explainer = predictor.explainer
    got, _ = explainer.attributions(predictor.scorer, images, cv, scores, "groups")
    assert got is not None
    enc = predictor.bundle.manifest.selection.clinical_encoding
    record = cv.model_dump()
    names = {k: k for k in ("arterial", "portal", "lab", "demo", "iv")}
    for group in ("lab", "demo", "iv"):
        members = [s.source for s in enc.ordered(group)]
        copy = type(cv).model_validate({**record,
                                        **{n: explainer.reference[n] for n in members}})
        row = predictor.scorer.score(batch_feeds(images["arterial"].image,
                                                 images["portal"].image, [copy], enc,
                                                 names))[0]
        for m in MODELS:
            a = next(x for x in got[m] if x.variable == group)
            assert a.variables == members
            assert abs(a.delta - (scores[m] - row[m])) <= 1e-5
            assert a.text().startswith(f"group {group} ({len(members)} variables)")


def test_explain_modes(predictor: Any, explained: Any) -> None:
    from hccatom.demo import demo_case

    ct, clinical, _ = demo_case(0)
    assert explained.explanation.attribution_level == "variables"
    rollout = predictor.recommend(ct, clinical, explain="rollout")
    assert rollout.explanation.attributions is None
    assert rollout.explanation.attribution_level is None
    assert "rollout" in rollout.explanation.attribution_status
    assert rollout.explanation.models == explained.explanation.models
    assert rollout.decision == explained.decision
    with pytest.raises(InputError, match="groups"):
        predictor.recommend(ct, clinical, explain="everything")


def test_fused_bundle_keeps_its_fused_scores(predictor: Any) -> None:
    """A fused scorer is a different graph: its scores stay the stage's scores, the explain
    graphs still supply the maps."""
    from hccatom.chain import SelectionScorer
    from hccatom.explain.runner import ExplainRun

    spec = predictor.bundle.manifest.selection
    fused = np.asarray([[0.11, 0.22, 0.33, 0.44]], np.float32)

    class FusedEngine:
        providers = ("CPUExecutionProvider",)

        def run(self, feeds: Any) -> dict[str, np.ndarray]:
            return {spec.io.fused_scores: fused}

    run = ExplainRun(predictor.explainer, SelectionScorer(spec, {"fused": FusedEngine()}))
    scores = run.score(_random_feeds(1, seed=3))
    assert scores == {m: float(fused[0, spec.fused_order.index(m)]) for m in MODELS}
    assert run.outputs is not None and set(run.outputs) == set(MODELS)
    assert "attn.0.ii" in run.outputs["TACE"]
