"""Predictor end to end on the fixture bundle and synthetic two-phase phantoms (no torch).

The fixture graphs are hand-built with known weights (tests/fixtures/bundle/make_fixtures.py),
so the scores the Predictor returns can be recomputed with numpy from the images the chain
produced: this checks the wiring (input names, clinical order, fused column order), not just
that something came out.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fixtures.bundle.helpers import build_fixture_bundle, clinical_example, phantom
from fixtures.bundle.make_fixtures import selection_score

from hccatom.atom import MODELS, PAPER_MSS, AtomPolicy, decide
from hccatom.bundle import load_bundle
from hccatom.chain import (
    encode_clinical,
    phase_image,
    prepare_phase,
    quality_flags,
)
from hccatom.clinical import ClinicalVariables
from hccatom.errors import (
    ClinicalInputError,
    CTInputError,
    EngineUnavailableError,
    InputError,
    NoTumourError,
)
from hccatom.predictor import Case, CTStudy, Predictor, ProgressEvent
from hccatom.recommendation import RESEARCH_USE_NOTICE, Recommendation
from hccatom.safety import SafetyLimits


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_bundle(tmp_path_factory.mktemp("p") / "bundle")


@pytest.fixture(scope="module")
def predictor(bundle_dir: Path) -> Predictor:
    return Predictor.from_bundle(bundle_dir, device="cpu")


@pytest.fixture(scope="module")
def case() -> dict[str, object]:
    return phantom()


@pytest.fixture(scope="module")
def rec(predictor: Predictor, case: dict[str, object]) -> Recommendation:
    return predictor.recommend({"arterial": case["arterial"], "portal": case["portal"]},
                               clinical_example())


def _expected_scores(predictor: Predictor, case: dict[str, object],
                     clinical: dict[str, object]) -> dict[str, float]:
    """Recompute the four scores with numpy from the chain's own stage functions."""
    spec = predictor.preprocessing
    imgs = {}
    for name in ("arterial", "portal"):
        ct = prepare_phase(case[name], spec)
        labels = predictor.segment(case[name])
        imgs[name] = phase_image(ct, labels, spec).image[None]
    sel = predictor.bundle.manifest.selection
    feeds = encode_clinical(ClinicalVariables.from_mapping(clinical), sel.clinical_encoding, sel)
    clin = np.concatenate([feeds["lab"], feeds["demo"], feeds["iv"]], axis=1)
    return {m: float(selection_score(m, imgs["arterial"], imgs["portal"], clin)[0])
            for m in MODELS}


def test_recommendation_scores_match_the_numpy_reference(
    predictor: Predictor, case: dict[str, object], rec: Recommendation
) -> None:
    expected = _expected_scores(predictor, case, clinical_example())
    for m in MODELS:
        assert rec.scores[m].score == pytest.approx(expected[m], abs=1e-5)
        assert rec.scores[m].threshold == PAPER_MSS[m]
    # the decision is ATOM applied to exactly these scores with the bundle's thresholds
    again = decide({m: rec.scores[m].score for m in MODELS}, PAPER_MSS)
    assert again == rec.decision
    assert rec.final_plan == rec.decision.final_plan


def test_clinical_values_reach_the_model(predictor: Predictor, case: dict[str, object]) -> None:
    ct = {"arterial": case["arterial"], "portal": case["portal"]}
    base = predictor.score(ct, clinical_example())
    changed = dict(clinical_example(), afp_ng_per_ml=20000.0)
    other = predictor.score(ct, changed)
    assert all(other[m] != base[m] for m in MODELS)
    expected = _expected_scores(predictor, case, changed)
    assert other["HC"] == pytest.approx(expected["HC"], abs=1e-5)


def test_phase_reports_describe_the_tumour_slice(
    rec: Recommendation, case: dict[str, object]
) -> None:
    labels = np.asarray(case["labels"])
    # ground-truth largest tumour cross-section: radius 12 mm sphere -> ~452 mm^2
    truth_max = (labels == 2).sum(axis=(1, 2)).max() * 2.0 * 2.0
    for name in ("arterial", "portal"):
        ph = rec.phases[name]  # type: ignore[index]
        assert ph.tumour_area_mm2 == pytest.approx(np.pi * 12.0**2, rel=0.1)
        assert ph.tumour_area_mm2 == pytest.approx(truth_max, rel=0.1)
        assert ph.liver_area_mm2 > ph.tumour_area_mm2
        # tumour centre at z = 22 mm from the first voxel (at -100 mm); the source has
        # 2.5 mm slices, so equal-area slices span about one source slice around it
        assert ph.slice_position_mm == pytest.approx(-100.0 + 22.0, abs=3.0)
        assert ph.box_mm == pytest.approx(224.0)
        assert ph.segmentation_voxels["tumour"] > 0
        # host path on the CPU: every tile's logits are counted as device -> host bytes
        moved = ph.segmentation_transfer_bytes
        assert moved["host_to_device"] > 0 and moved["device_to_host"] > 0
    # the phantom is 192 mm wide: the 224 mm box is padded, and that is flagged per phase
    codes = {(f.code, f.phase) for f in rec.quality_flags}
    assert ("crop_padded", "arterial") in codes and ("crop_padded", "portal") in codes
    assert "phases_far_apart" not in {f.code for f in rec.quality_flags}


def test_recommendation_metadata(rec: Recommendation, bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    assert rec.bundle.name == "fixture-bundle" and rec.bundle.sha256 == b.sha256
    assert rec.bundle.synthetic
    assert rec.notice == RESEARCH_USE_NOTICE and "Research use only" in rec.notice
    assert rec.engine.segmentation == ["CPUExecutionProvider"]
    assert rec.engine.selection_layout == "fused"
    for stage in ("read_arterial", "segment_arterial", "crop_arterial", "segment_portal",
                  "selection", "atom", "total"):
        assert rec.timings_ms[stage] >= 0.0
    assert rec.timings_ms["total"] >= rec.timings_ms["segment_arterial"]
    text = rec.summary()
    assert rec.final_plan in text and "TACE" in text and "Research use only" in text


def test_json_round_trip(rec: Recommendation, tmp_path: Path) -> None:
    path = tmp_path / "rec.json"
    text = rec.to_json(path)
    data = json.loads(text)
    assert data["final_plan"] == rec.final_plan
    assert set(data["scores"]) == set(MODELS)
    assert data["decision"]["rationale"][0]["rule_id"] == "risk.TACE"
    assert Recommendation.from_json(path) == rec
    assert Recommendation.from_json(text) == rec


def test_separate_graphs_give_the_same_scores_as_fused(
    tmp_path: Path, case: dict[str, object], rec: Recommendation
) -> None:
    b = build_fixture_bundle(tmp_path / "sep.zip", fused=False)
    with Predictor.from_bundle(b, device="cpu") as p:
        r = p.recommend(CTStudy(arterial=case["arterial"], portal=case["portal"]),
                        ClinicalVariables.from_mapping(clinical_example()))
    assert r.engine.selection_layout == "separate"
    for m in MODELS:
        assert r.scores[m].score == pytest.approx(rec.scores[m].score, abs=1e-6)


def test_bundle_thresholds_and_policy_drive_the_decision(
    tmp_path: Path, case: dict[str, object], rec: Recommendation
) -> None:
    s = {m: rec.scores[m].score for m in MODELS}
    # thresholds just below HAIC and HC, above TACE and TC -> HAIC + systemic
    th = {"TACE": min(0.99, s["TACE"] + 0.05), "HAIC": max(0.01, s["HAIC"] - 0.05),
          "TC": min(0.99, s["TC"] + 0.05), "HC": max(0.01, s["HC"] - 0.05)}
    pol = AtomPolicy(policy_id="site-policy", tie_preference="HAIC")
    b = build_fixture_bundle(tmp_path / "th", thresholds=th, policy=pol)
    r = Predictor.from_bundle(b, device="cpu").recommend(
        {"arterial": case["arterial"], "portal": case["portal"]}, clinical_example())
    assert r.final_plan == "HAIC + systemic"
    assert r.decision.policy_id == "site-policy"
    assert r.scores["HAIC"].threshold == th["HAIC"]
    assert r.decision.fired_rules[-2:] == ["stage1.only-favourable", "stage2.add-systemic"]


def test_concurrent_recommend_equals_serial(predictor: Predictor) -> None:
    cases = [phantom(tumour_centre_mm=(22.0, 100.0 + 4 * i, 95.0 - 3 * i), noise_hu=5.0,
                     seed=i) for i in range(4)]
    clin = [dict(clinical_example(), age_years=40 + 7 * i) for i in range(4)]
    serial = [predictor.recommend({"arterial": c["arterial"], "portal": c["portal"]}, k)
              for c, k in zip(cases, clin, strict=True)]
    barrier = threading.Barrier(4)

    def run(i: int) -> Recommendation:
        barrier.wait()
        return predictor.recommend(
            {"arterial": cases[i]["arterial"], "portal": cases[i]["portal"]}, clin[i])

    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(run, range(4)))
    for a, b in zip(serial, parallel, strict=True):
        assert a.comparable() == b.comparable()
    # the cases differ, so equality is not trivial
    assert len({r.scores["TACE"].score for r in serial}) == 4


def test_phases_together_equal_phases_in_turn(
    bundle_dir: Path, case: dict[str, object], rec: Recommendation
) -> None:
    results = []
    for workers in (1, 2):
        with Predictor.from_bundle(bundle_dir, device="cpu", phase_workers=workers) as p:
            assert p.phase_workers == workers
            results.append(p.recommend({"arterial": case["arterial"], "portal": case["portal"]},
                                       clinical_example()))
    assert results[0].comparable() == results[1].comparable() == rec.comparable()
    assert set(rec.timings_ms) >= {"segment_arterial", "segment_portal", "crop_portal"}
    with pytest.raises(ValueError, match="phase_workers must be 1 or 2"):
        Predictor.from_bundle(bundle_dir, device="cpu", phase_workers=3)


def test_phase_errors_surface_arterial_first(
    predictor: Predictor, case: dict[str, object]
) -> None:
    empty = phantom(tumour_radius_mm=0.0)
    with pytest.raises(CTInputError, match=r"^arterial phase: .*nonexistent") as both:
        predictor.recommend({"arterial": "/nonexistent/ct.nii.gz", "portal": empty["portal"]},
                            clinical_example())  # both phases fail
    assert both.value.phase == "arterial"
    with pytest.raises(NoTumourError, match=r"^portal phase: .*no tumour") as one:
        predictor.recommend({"arterial": case["arterial"], "portal": empty["portal"]},
                            clinical_example())  # only the portal phase fails
    assert one.value.phase == "portal"


def test_recommend_many_streams_in_order_with_progress(
    predictor: Predictor, case: dict[str, object], rec: Recommendation
) -> None:
    no_tumour = phantom(tumour_radius_mm=0.0)
    cases = [
        Case(ct={"arterial": case["arterial"], "portal": case["portal"]},
             clinical=clinical_example(), case_id="a"),
        Case(ct={"arterial": no_tumour["arterial"], "portal": no_tumour["portal"]},
             clinical=clinical_example(), case_id="b"),
        ({"arterial": case["arterial"], "portal": case["portal"]}, clinical_example()),
    ]
    seen: list[int] = []
    results = list(predictor.recommend_many(
        cases, progress=lambda n, r: seen.append(n), on_error="yield", workers=2))
    assert [r.index for r in results] == [0, 1, 2] and seen == [1, 2, 3]
    assert results[0].ok and results[0].case_id == "a"
    assert not results[1].ok and isinstance(results[1].error, NoTumourError)
    assert results[2].recommendation is not None
    assert results[2].recommendation.comparable() == rec.comparable()
    with pytest.raises(NoTumourError):
        list(predictor.recommend_many(cases[1:2]))


def test_progress_events(predictor: Predictor, case: dict[str, object]) -> None:
    events: list[ProgressEvent] = []
    predictor.recommend({"arterial": case["arterial"], "portal": case["portal"]},
                        clinical_example(), progress=events.append)
    stages = {e.stage for e in events}
    assert {"segment_arterial", "segment_portal", "selection", "atom"} <= stages
    tiles = [e for e in events if e.stage == "segment_arterial" and e.total > 1]
    assert tiles and tiles[-1].done == tiles[-1].total


def test_segment_returns_labels(predictor: Predictor, case: dict[str, object]) -> None:
    labels = predictor.segment(case["arterial"])
    assert labels.array.dtype == np.uint8
    assert labels.spacing[0] == pytest.approx(1.0)  # the bundle's slice thickness
    assert set(np.unique(labels.array)) == {0, 1, 2}


def test_input_errors_are_typed(predictor: Predictor, case: dict[str, object]) -> None:
    with pytest.raises(InputError, match="missing \\['portal'\\]"):
        predictor.recommend({"arterial": case["arterial"]}, clinical_example())
    with pytest.raises(InputError, match="unknown \\['venous'\\]"):
        predictor.recommend({"arterial": case["arterial"], "portal": case["portal"],
                             "venous": case["portal"]}, clinical_example())
    with pytest.raises(InputError, match="CTStudy"):
        predictor.recommend([case["arterial"], case["portal"]], clinical_example())  # type: ignore[arg-type]
    with pytest.raises(ClinicalInputError) as info:
        predictor.recommend({"arterial": case["arterial"], "portal": case["portal"]},
                            dict(clinical_example(), inr=-1, ecog=9))
    assert {f for f, _ in info.value.problems} == {"inr", "ecog"}
    with pytest.raises(CTInputError):
        predictor.recommend({"arterial": "/nonexistent/ct.nii.gz", "portal": case["portal"]},
                            clinical_example())
    empty = phantom(tumour_radius_mm=0.0)
    with pytest.raises(NoTumourError):
        predictor.recommend({"arterial": empty["arterial"], "portal": empty["portal"]},
                            clinical_example())


def test_unavailable_device_is_typed(bundle_dir: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA present: cannot test its absence here")
    with pytest.raises(EngineUnavailableError):
        Predictor.from_bundle(bundle_dir, device="cuda")


def test_quality_flags_far_apart_and_small_tumour(predictor: Predictor) -> None:
    spec = predictor.preprocessing
    a = phantom(tumour_centre_mm=(12.0, 100.0, 95.0), tumour_radius_mm=5.0)
    p = phantom(tumour_centre_mm=(36.0, 100.0, 95.0), tumour_radius_mm=5.0)
    imgs = {}
    for name, src in (("arterial", a["arterial"]), ("portal", p["portal"])):
        ct = prepare_phase(src, spec)
        imgs[name] = phase_image(ct, predictor.segment(src), spec)
    flags = quality_flags(imgs, SafetyLimits(slice_tumour_area_min_mm2=100.0,
                                             slice_distance_max_mm=20))
    codes = {f.code for f in flags}
    assert {"small_tumour", "phases_far_apart"} <= codes
    far = next(f for f in flags if f.code == "phases_far_apart")
    apart = float(re.search(r"are (\d+) mm apart", far.message).group(1))  # type: ignore[union-attr]
    assert apart == pytest.approx(24.0, abs=3.0)  # tumour centres 24 mm apart, 2.5 mm slices
    assert all(f.code != "small_tumour" or f.phase in ("arterial", "portal") for f in flags)
