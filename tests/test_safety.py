"""Safety signals: bundle limits, typed errors and structured flags in every result.

Fast paths use the fixture bundle (hand-built graphs that label the helper phantom exactly);
the synthetic-input warning is also checked end to end on the committed demo bundle with a
demo phantom (no warning) and a real CT from tests/data/real (warning).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures.bundle.helpers import build_fixture_bundle, clinical_example, phantom
from pydantic import ValidationError

from hccatom.bundle import Manifest, load_bundle
from hccatom.ct_io import read_ct
from hccatom.demo import demo_bundle_path, demo_case
from hccatom.errors import (
    CTInputError,
    ImplausibleLiverError,
    NoBodyError,
    NoTumourError,
    SamePhaseError,
)
from hccatom.predictor import Predictor
from hccatom.recommendation import Recommendation
from hccatom.safety import (
    DEFAULT_SAFETY_LIMITS,
    SYNTHETIC_PHANTOM_NOTE,
    PhaseMeasures,
    SafetyLimits,
    TrainingPopulation,
    VariableRange,
    check_body,
    check_segmentation,
    child_pugh_range,
    consistency_flags,
    image_flags,
    measure_phase,
    population_flags,
    synthetic_input_flags,
    training_population,
)
from hccatom.segmentation.confidence import mean_max_probability
from hccatom.synthetic import generate_patient
from hccatom.volume import Volume

CONSISTENT: dict[str, Any] = {  # Child-Pugh 5 (A), BCLC B: consistent
    "albumin_g_per_l": 40.0, "alt_u_per_l": 40.0, "ast_u_per_l": 45.0,
    "total_bilirubin_umol_per_l": 15.0, "prothrombin_time_s": 12.0, "inr": 1.05,
    "platelets_10e9_per_l": 200.0, "child_pugh_score": 5, "age_years": 60.0, "sex": "male",
    "ecog": 0, "comorbidity": False, "hbv": True, "ascites": False, "afp_ng_per_ml": 20.0,
    "tumour_number": 4, "max_tumour_diameter_mm": 60.0, "bclc_stage": "B",
    "metastasis": False, "pvtt": False,
}


def _cv(**changes: Any) -> Any:
    from hccatom.clinical import ClinicalVariables

    return ClinicalVariables.from_mapping({**CONSISTENT, **changes})


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_bundle(tmp_path_factory.mktemp("s") / "bundle")


@pytest.fixture(scope="module")
def predictor(bundle_dir: Path) -> Predictor:
    return Predictor.from_bundle(bundle_dir, device="cpu", phase_workers=1)


@pytest.fixture(scope="module")
def demo_predictor() -> Predictor:
    return Predictor.from_bundle(demo_bundle_path(), device="cpu", phase_workers=1)


@pytest.fixture(scope="module")
def case() -> dict[str, Any]:
    return phantom()


def _ct(case: dict[str, Any]) -> dict[str, Any]:
    return {"arterial": case["arterial"], "portal": case["portal"]}


def _marked(vol: Volume) -> Volume:
    return Volume.from_array(vol.array, vol.spacing, origin=vol.origin,
                             notes=(SYNTHETIC_PHANTOM_NOTE,))


# --- limits as bundle values ------------------------------------------------------------
def test_limits_validate() -> None:
    assert DEFAULT_SAFETY_LIMITS.liver_volume_min_ml == 300.0
    assert DEFAULT_SAFETY_LIMITS.liver_volume_max_ml == 6000.0
    with pytest.raises(ValidationError, match="liver_volume_min_ml"):
        SafetyLimits(liver_volume_min_ml=7000.0)
    with pytest.raises(ValidationError, match="not both"):
        VariableRange(min=1.0, max=2.0, categories=["a"])
    with pytest.raises(ValidationError, match="min <= max"):
        VariableRange(min=3.0, max=2.0)
    assert VariableRange(min=1.0, max=2.0).contains(1.5)
    assert not VariableRange(min=1.0, max=2.0).contains(2.5)
    assert VariableRange(categories=[False, True]).contains(True)


def test_demo_manifest_carries_limits_and_training_ranges() -> None:
    raw = json.loads((demo_bundle_path() / "manifest.json").read_text())
    m = Manifest.model_validate(raw)
    assert m.safety is not None and m.safety.training_population is not None
    pop = m.safety.training_population
    assert pop.n_patients == 1600 and len(pop.variables) == 20
    assert pop.variables["inr"].min == pytest.approx(0.8)  # the cohort's clip
    assert pop.variables["bclc_stage"].categories == ["A", "B", "C"]
    # a manifest without the section still loads, with no limits of its own
    del raw["safety"]
    assert Manifest.model_validate(raw).safety is None


def test_demo_training_ranges_are_recomputed_from_the_cohort_definition() -> None:
    from hccatom.export.demo import DemoConfig, demo_safety_limits

    raw = json.loads((demo_bundle_path() / "manifest.json").read_text())
    config = json.loads(raw["provenance"]["notes"])["config"]
    cfg = DemoConfig(seed=config["seed"], sel_train=config["sel_train"],
                     sel_test=config["sel_test"])
    assert demo_safety_limits(cfg).model_dump(mode="json") == raw["safety"]


def test_bundle_without_limits_uses_defaults_and_says_so(tmp_path: Path) -> None:
    b = build_fixture_bundle(tmp_path / "b", safety=None)
    assert load_bundle(b).manifest.safety is None
    p = Predictor.from_bundle(b, device="cpu")
    assert p.safety == DEFAULT_SAFETY_LIMITS
    small = phantom()  # liver ~200 mL: below the default floor
    with pytest.raises(ImplausibleLiverError, match="300-6000 mL"):
        p.recommend(_ct(small), clinical_example())
    big = phantom(shape=(32, 96, 96), liver_semi_mm=(30.0, 50.0, 60.0))  # ~370 mL
    flags = {f.code: f for f in p.recommend(_ct(big), clinical_example()).quality_flags}
    assert flags["safety_limits_default"].severity == "info"
    assert flags["training_population_unknown"].severity == "info"
    q = Predictor.from_bundle(b, device="cpu", safety=SafetyLimits(liver_volume_min_ml=50))
    codes = {f.code for f in q.recommend(_ct(small), clinical_example()).quality_flags}
    assert "safety_limits_default" not in codes and "safety_limits_overridden" in codes


# --- typed errors -----------------------------------------------------------------------------
def test_all_air_volume_raises_no_body(predictor: Predictor, case: dict[str, Any]) -> None:
    air = Volume.from_array(np.full((16, 96, 96), -1024.0, np.float32), (2.5, 2.0, 2.0))
    with pytest.raises(NoBodyError, match="arterial phase: the CT holds only about 0 mL"):
        predictor.recommend({"arterial": air, "portal": case["portal"]}, clinical_example())
    assert check_body(case["arterial"], DEFAULT_SAFETY_LIMITS) > 300.0


def test_all_air_ct_through_the_demo_bundle_raises(demo_predictor: Predictor) -> None:
    """The issue's reproducer: all -1024 HU used to "find" a liver and return a plan."""
    air = Volume.from_array(np.full((48, 128, 128), -1024.0, np.float32), (4.0, 3.0, 3.0))
    air2 = air.with_array(air.array.copy())
    _, clinical, _ = demo_case(0)
    with pytest.raises(NoBodyError, match="looks like air"):
        demo_predictor.recommend({"arterial": air, "portal": air2}, clinical)


def test_liver_volume_limits_both_ways() -> None:
    lim = SafetyLimits(liver_volume_min_ml=300.0, liver_volume_max_ml=6000.0)
    m = _measures(10.0, (0.0, 0.0, 0.0))
    check_segmentation(m, lim, tumour_label=2)  # 1500 mL: fine
    for liver_ml in (299.0, 6001.0):
        with pytest.raises(ImplausibleLiverError, match=f"{liver_ml:.0f} mL"):
            check_segmentation(replace(m, liver_ml=liver_ml), lim, tumour_label=2)
    with pytest.raises(NoTumourError, match="label 2"):
        check_segmentation(replace(m, tumour_ml=0.0), lim, tumour_label=2)


def test_implausible_liver_volume_raises(bundle_dir: Path, case: dict[str, Any]) -> None:
    p = Predictor.from_bundle(bundle_dir, device="cpu",
                              safety=SafetyLimits(liver_volume_min_ml=1000.0))
    with pytest.raises(ImplausibleLiverError, match=r"liver is 2\d\d mL, outside .* 1000-6000"):
        p.recommend(_ct(case), clinical_example())
    # the fixture bundle's own limits: no note about defaults or overrides
    codes = {f.code for f in Predictor.from_bundle(bundle_dir, device="cpu").recommend(
        _ct(case), clinical_example()).quality_flags}
    assert not codes & {"safety_limits_default", "safety_limits_overridden"}


def test_no_tumour_says_what_was_looked_for(predictor: Predictor) -> None:
    none = phantom(tumour_radius_mm=0.0)
    with pytest.raises(NoTumourError, match=r"arterial phase: .*no voxel labelled tumour "
                       r"\(label 2\) in the 2\d\d mL liver.*40 x 192 x 192 mm"):
        predictor.recommend(_ct(none), clinical_example())


def test_same_series_or_pixels_as_both_phases(
    predictor: Predictor, case: dict[str, Any], tmp_path: Path
) -> None:
    from hccatom.ct_io import write_volume

    path = write_volume(case["arterial"], tmp_path / "a.nii.gz")
    with pytest.raises(SamePhaseError, match="same file or series"):
        predictor.recommend({"arterial": path, "portal": str(path)}, clinical_example())
    with pytest.raises(SamePhaseError, match="same image object"):
        predictor.recommend({"arterial": case["arterial"], "portal": case["arterial"]},
                            clinical_example())
    copy = case["arterial"].with_array(np.array(case["arterial"].array))
    with pytest.raises(SamePhaseError, match="identical pixel data") as info:
        predictor.recommend({"arterial": case["arterial"], "portal": copy}, clinical_example())
    assert isinstance(info.value, CTInputError)


# --- flags in the result ---------------------------------------------------------------------
def test_result_flags_are_structured_and_round_trip(
    predictor: Predictor, case: dict[str, Any]
) -> None:
    rec = predictor.recommend(_ct(case), clinical_example())
    # the fixture bundle is synthetic; the helper phantom has no marker: critical warning
    crit = [f for f in rec.quality_flags if f.severity == "critical"]
    assert [f.code for f in crit] == ["synthetic_models_on_non_phantom"]
    assert rec.summary().startswith("WARNING: these models were trained on synthetic data")
    back = Recommendation.from_json(rec.to_json())
    assert back.quality_flags == rec.quality_flags
    ph = rec.phases["arterial"]
    assert ph.tumour_volume_ml == pytest.approx(4 / 3 * np.pi * 12.0**3 / 1000, rel=0.15)
    assert ph.tumour_centroid_mm == pytest.approx((-100 + 22.0, -150 + 100.0, -130 + 95.0),
                                                  abs=1.5)
    assert ph.synthetic_phantom is False
    # marked as hccatom phantoms: no warning
    marked = predictor.recommend({k: _marked(v) for k, v in _ct(case).items()},
                                 clinical_example())
    assert not [f for f in marked.quality_flags if f.severity == "critical"]
    assert marked.phases["portal"].synthetic_phantom is True


def test_clinical_flags_reach_the_result(predictor: Predictor, case: dict[str, Any]) -> None:
    bad = dict(CONSISTENT, bclc_stage="A", pvtt=True)
    rec = predictor.recommend(_ct(case), bad)
    codes = [f.code for f in rec.quality_flags]
    assert "bclc_inconsistent" in codes
    assert "child_pugh_inconsistent" not in codes


# the demo phantom through the demo bundle (no warning): tests/test_demo.py end to end


def test_real_ct_through_the_demo_bundle_is_warned(
    demo_predictor: Predictor, real_data: Path
) -> None:
    path = real_data / "totalseg_example" / "example_ct_sm.nii.gz"
    real = read_ct(path)
    noisy = real.with_array(real.array + np.random.default_rng(0).normal(
        0, 5, real.shape).astype(np.float32))  # a second "phase": not the same pixel data
    _, clinical, _ = demo_case(0)
    rec = demo_predictor.recommend({"arterial": path, "portal": noisy}, clinical)
    crit = [f for f in rec.quality_flags if f.severity == "critical"]
    assert [f.code for f in crit] == ["synthetic_models_on_non_phantom"]
    assert "no clinical meaning" in rec.summary().splitlines()[0]
    assert json.loads(rec.to_json())["quality_flags"][0]["severity"] == "critical"
    # the scan has no tumour: the demo model's false "tumour" is less confident than on
    # phantoms (measured 0.79-0.80 vs 0.92-0.97), and flagged
    low = {f.phase for f in rec.quality_flags if f.code == "low_segmentation_confidence"}
    assert low == {"arterial", "portal"}


# --- the checks alone ------------------------------------------------------------------------
def _measures(tumour_ml: float, centroid: tuple[float, float, float] | None,
              confidence: float | None = 0.95, phantom_: bool = False) -> PhaseMeasures:
    return PhaseMeasures(liver_voxels=1, tumour_voxels=1, liver_ml=1500.0, tumour_ml=tumour_ml,
                         tumour_centroid_mm=centroid,
                         tumour_confidence=confidence, synthetic_phantom=phantom_,
                         fingerprint="x", extent_mm=(200.0, 300.0, 300.0))


def test_image_flags_floor_one_phase_distance_confidence() -> None:
    lim = SafetyLimits(tumour_volume_min_ml=4.0, tumour_distance_max_mm=30.0,
                       tumour_confidence_min=0.85)
    ok = {"arterial": _measures(20.0, (0.0, 0.0, 0.0)),
          "portal": _measures(18.0, (10.0, 10.0, 10.0))}
    assert image_flags(ok, lim) == []
    one = {"arterial": _measures(20.0, (0.0, 0.0, 0.0)),
           "portal": _measures(1.5, (0.0, 40.0, 0.0), confidence=0.6)}
    flags = {(f.code, f.phase): f for f in image_flags(one, lim)}
    assert set(flags) == {("small_tumour_volume", "portal"), ("tumour_in_one_phase", "portal"),
                          ("tumours_far_apart", None), ("low_segmentation_confidence", "portal")}
    assert flags[("tumours_far_apart", None)].values["distance_mm"] == pytest.approx(40.0)
    assert flags[("tumour_in_one_phase", "portal")].values["phase_with_tumour"] == "arterial"
    assert flags[("low_segmentation_confidence", "portal")].values["tumour_confidence"] == 0.6
    # both small: two floor flags, no "one phase" flag
    both = {"arterial": _measures(1.0, (0, 0, 0)), "portal": _measures(2.0, (0, 0, 0))}
    assert [f.code for f in image_flags(both, lim)] == ["small_tumour_volume"] * 2


def test_synthetic_flag_only_for_synthetic_bundles_and_unmarked_inputs() -> None:
    real = {"arterial": _measures(9, None), "portal": _measures(9, None)}
    ph = {"arterial": _measures(9, None, phantom_=True), "portal": _measures(9, None,
                                                                             phantom_=True)}
    assert synthetic_input_flags(False, real) == []
    assert synthetic_input_flags(True, ph) == []
    (flag,) = synthetic_input_flags(True, {**ph, "portal": real["portal"]})
    assert flag.severity == "critical" and flag.values["phases_not_phantom"] == "portal"
    assert SYNTHETIC_PHANTOM_NOTE in generate_patient(3).arterial.notes


def test_centroid_in_patient_coordinates() -> None:
    lab = np.zeros((10, 20, 30), np.uint8)
    lab[:, 5:15, 5:25] = 1
    lab[2:4, 8:10, 10:12] = 2  # centre index (2.5, 8.5, 10.5)
    flip = ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))  # z runs inferior
    labels = Volume.from_array(lab, (2.0, 1.0, 0.5), origin=(100.0, -10.0, 20.0),
                               direction=flip)
    m = measure_phase(labels.with_array(lab.astype(np.float32)), labels, liver_label=1,
                      tumour_label=2, tumour_confidence=0.9)
    assert m.tumour_centroid_mm == pytest.approx((100.0 - 2.5 * 2.0, -10 + 8.5, 20 + 5.25))
    assert m.tumour_ml == pytest.approx(8 * 1.0 / 1000)
    assert m.voxels == {"liver": 10 * 10 * 20 - 8, "tumour": 8}
    assert m.liver_ml == pytest.approx(10 * 10 * 20 * 1.0 / 1000)


def test_mean_max_probability_matches_softmax() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (3, 20, 6, 7)).astype(np.float16)
    f = logits.astype(np.float32)
    p = np.exp(f - f.max(0)) / np.exp(f - f.max(0)).sum(0)
    mask = f.argmax(0) == 2
    assert mean_max_probability(logits, 2, slab=3) == pytest.approx(p.max(0)[mask].mean(),
                                                                   rel=1e-5)
    background_only = np.zeros((3, 2, 2, 2), np.float32)
    background_only[0] = 1.0
    assert mean_max_probability(background_only, 2) is None


# --- clinical --------------------------------------------------------------------------------
def test_outside_training_population_per_variable() -> None:
    pop = training_population([_cv(), _cv(inr=1.3, age_years=70.0)], "two patients")
    assert pop.variables["inr"] == VariableRange(min=1.05, max=1.3)
    assert pop.variables["sex"].categories == ["male"]
    assert population_flags(_cv(inr=1.2), pop) == []
    flags = population_flags(_cv(inr=2.5, sex="female", age_years=40.0), pop)
    by_var = {f.values["variable"]: f for f in flags}
    assert set(by_var) == {"inr", "sex", "age_years"}
    assert all(f.code == "outside_training_population" for f in flags)
    assert by_var["inr"].values["max"] == 1.3 and "1.05..1.3" in by_var["inr"].message
    assert "outside the training population" in by_var["sex"].message
    (unknown,) = population_flags(_cv(), None)
    assert unknown.code == "training_population_unknown" and unknown.severity == "info"
    assert population_flags(_cv(), TrainingPopulation()) == [unknown]


def test_demo_population_flags_an_edited_value() -> None:
    m = Manifest.model_validate_json((demo_bundle_path() / "manifest.json").read_text())
    assert m.safety is not None
    pop = m.safety.training_population
    assert population_flags(_cv(), pop) == []
    (flag,) = population_flags(_cv(inr=2.0), pop)  # the synthetic cohort's INR stops at 1.54
    assert flag.values["variable"] == "inr"


def test_child_pugh_consistency() -> None:
    assert child_pugh_range(_cv()) == (5, 7)  # encephalopathy unknown: +0..2
    assert consistency_flags(_cv()) == []
    sick = dict(total_bilirubin_umol_per_l=60.0, albumin_g_per_l=25.0, inr=2.5, ascites=True)
    assert child_pugh_range(_cv(**sick)) == (12, 15)
    (flag,) = consistency_flags(_cv(**sick, child_pugh_score=5))
    assert flag.code == "child_pugh_inconsistent"
    assert (flag.values["possible_min"], flag.values["possible_max"]) == (12, 15)
    assert "class A" in flag.message
    assert consistency_flags(_cv(**sick, child_pugh_score=12)) == []
    # boundaries: bilirubin 34 and albumin 35 already give 2 points each
    assert child_pugh_range(_cv(total_bilirubin_umol_per_l=34.0, albumin_g_per_l=35.0)) == (7, 9)


def test_bclc_consistency() -> None:
    (a,) = consistency_flags(_cv(bclc_stage="A", pvtt=True))
    assert a.code == "bclc_inconsistent" and "portal vein invasion" in a.message
    (b,) = consistency_flags(_cv(bclc_stage="B", ecog=1))
    assert "ECOG 1" in b.message
    (c,) = consistency_flags(_cv(bclc_stage="C"))
    assert "without" in c.message
    assert consistency_flags(_cv(bclc_stage="C", metastasis=True)) == []
    codes = {f.code for f in consistency_flags(_cv(bclc_stage="C", ecog=3))}
    assert codes == {"bclc_stage_d"}


def test_bundle_info_states_the_limits(tmp_path: Path) -> None:
    from hccatom.bundle.info import bundle_summary

    assert "training ranges of 20 clinical variables (n=1600)" in bundle_summary(
        load_bundle(demo_bundle_path()))
    plain = build_fixture_bundle(tmp_path / "b", safety=None)
    assert "default limits apply" in bundle_summary(load_bundle(plain))


def test_cli_refuses_one_file_as_both_phases(
    bundle_dir: Path, case: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hccatom.cli import main
    from hccatom.ct_io import write_volume

    ct = write_volume(case["arterial"], tmp_path / "a.nii.gz")
    clinical = tmp_path / "c.json"
    clinical.write_text(json.dumps(clinical_example()))
    code = main(["recommend", "--bundle", str(bundle_dir), "--arterial", str(ct), "--portal",
                 str(ct), "--clinical", str(clinical), "--device", "cpu"])
    assert code == 2
    assert "same file or series" in capsys.readouterr().err


def test_cli_bundle_build_records_limits_and_training_ranges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fixtures.bundle.helpers import FUSED, SEGMENTATION

    from hccatom.cli import main

    cohort = tmp_path / "cohort.json"
    cohort.write_text(json.dumps([CONSISTENT, dict(CONSISTENT, inr=1.4, sex="female")]))
    limits = tmp_path / "safety.json"
    limits.write_text(json.dumps({"liver_volume_min_ml": 100.0}))
    out = tmp_path / "b"
    code = main(["bundle", "build", "--no-window-before-segmentation",
                 "--segmentation", str(SEGMENTATION), "--fused", str(FUSED),
                 "--paper-thresholds", "--out", str(out), "--no-verify", "--safety", str(limits),
                 "--training-clinical", str(cohort)])
    assert code == 0, capsys.readouterr().err
    safety = load_bundle(out).manifest.safety
    assert safety is not None and safety.liver_volume_min_ml == 100.0
    assert safety.training_population is not None
    assert safety.training_population.variables["inr"] == VariableRange(min=1.05, max=1.4)
    assert safety.training_population.variables["sex"].categories == ["female", "male"]
    # a bad record is named by its index
    cohort.write_text(json.dumps([CONSISTENT, dict(CONSISTENT, inr="high")]))
    code = main(["bundle", "build", "--no-window-before-segmentation",
                 "--segmentation", str(SEGMENTATION), "--fused", str(FUSED),
                 "--paper-thresholds", "--out", str(tmp_path / "c"), "--no-verify",
                 "--training-clinical", str(cohort)])
    assert code == 2 and "record 1" in capsys.readouterr().err
