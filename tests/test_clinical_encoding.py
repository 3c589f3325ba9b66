"""ClinicalEncoding: raw values, the authors' loader, spec validation, clipping, standardising."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from hccatom import ClinicalVariables
from hccatom.clinical_encoding import ClinicalEncoding, EncodingSlot

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "clinical_example.json"


def _example(**changes: Any) -> ClinicalVariables:
    return ClinicalVariables.from_mapping(json.loads(EXAMPLE.read_text()) | changes)


def test_raw_values_encodes_raw_values_in_authors_order() -> None:
    enc = ClinicalEncoding.raw_values().encode(_example())
    assert set(enc) == {"lab", "demo", "iv"}
    assert {k: v.shape for k, v in enc.items()} == {"lab": (8,), "demo": (6,), "iv": (6,)}
    assert all(v.dtype == np.float32 for v in enc.values())
    np.testing.assert_array_equal(
        enc["lab"], np.float32([38.5, 42.0, 55.0, 17.1, 12.8, 1.08, 152.0, 5])
    )
    # age, sex (male=1), ECOG, comorbidity, HBV, ascites
    np.testing.assert_array_equal(enc["demo"], np.float32([58, 1, 0, 0, 1, 0]))
    # AFP, tumour number, max diameter, BCLC (B=1), metastasis, PVTT
    np.testing.assert_array_equal(enc["iv"], np.float32([420, 2, 64, 1, 0, 0]))
    other = ClinicalEncoding.raw_values().encode(
        _example(sex="female", bclc_stage="C", pvtt=True, ascites=True)
    )
    assert other["demo"][1] == 0.0 and other["demo"][5] == 1.0
    assert other["iv"][3] == 2.0 and other["iv"][5] == 1.0


def test_spec_roundtrips_through_json() -> None:
    spec = ClinicalEncoding.raw_values()
    again = ClinicalEncoding.model_validate_json(spec.model_dump_json())
    assert again == spec
    np.testing.assert_array_equal(again.encode(_example())["iv"], spec.encode(_example())["iv"])


def _slots_json() -> list[dict[str, Any]]:
    return [s.model_dump() for s in ClinicalEncoding.raw_values().slots]


def test_validation_incomplete_or_duplicated_groups() -> None:
    slots = _slots_json()
    with pytest.raises(ValidationError, match=r"group lab needs positions 0\.\.7"):
        ClinicalEncoding.model_validate({"slots": slots[1:]})
    dup = [dict(s) for s in slots]
    dup[1]["position"] = 0  # two lab slots at position 0, none at 1
    with pytest.raises(ValidationError, match="exactly once"):
        ClinicalEncoding.model_validate({"slots": dup})
    same_source = [dict(s) for s in slots]
    same_source[1]["source"] = "albumin_g_per_l"
    with pytest.raises(ValidationError, match="more than once"):
        ClinicalEncoding.model_validate({"slots": same_source})


@pytest.mark.parametrize(
    ("slot", "message"),
    [
        ({"source": "albumin"}, "unknown source field"),
        ({"source": "hbv", "transform": "identity"}, "use transform bool01"),
        ({"source": "age_years", "transform": "bool01"}, "needs a true/false field"),
        ({"source": "sex", "transform": "identity"}, "category"),
        ({"source": "sex", "transform": "enum", "mapping": {"male": 1}}, "exactly"),
        ({"source": "age_years", "transform": "enum", "mapping": {"a": 1}}, "only for"),
        ({"source": "age_years", "mapping": {"a": 1}}, "only used with"),
        ({"source": "age_years", "scale": 0.0}, "non-zero"),
        ({"source": "age_years", "offset": math.inf}, "finite"),
        ({"source": "age_years", "clip": (5.0, 1.0)}, "low <= high"),
    ],
)
def test_slot_validation(slot: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EncodingSlot.model_validate({"group": "demo", "position": 0} | slot)


def test_clip_offset_scale_and_log1p() -> None:
    slots = list(ClinicalEncoding.raw_values().slots)
    for i, s in enumerate(slots):
        if s.source == "tumour_number":
            slots[i] = s.model_copy(update={"clip": (1.0, 3.0)})
        if s.source == "afp_ng_per_ml":
            slots[i] = s.model_copy(update={"transform": "log1p", "offset": 2.0, "scale": 4.0})
    spec = ClinicalEncoding(slots=tuple(slots))
    iv = spec.encode(_example(tumour_number=7, afp_ng_per_ml=999.0))["iv"]
    assert iv[1] == 3.0
    assert iv[0] == pytest.approx((math.log1p(999.0) - 2.0) / 4.0, rel=1e-6)


def _cohort(n: int, seed: int = 0) -> list[ClinicalVariables]:
    rng = np.random.default_rng(seed)
    return [
        _example(
            age_years=float(rng.uniform(30, 85)),
            albumin_g_per_l=float(rng.uniform(25, 50)),
            afp_ng_per_ml=float(rng.lognormal(4, 2)),
            hbv=bool(rng.integers(0, 2)),
            bclc_stage=str(rng.choice(["A", "B", "C"])),
            ecog=int(rng.integers(0, 3)),
        )
        for _ in range(n)
    ]


def test_fit_standardise_gives_zero_mean_unit_std() -> None:
    cohort = _cohort(50)
    spec = ClinicalEncoding.fit_standardise(cohort, log1p_fields=["afp_ng_per_ml"])
    batch = spec.encode_batch(cohort)
    assert batch["lab"].shape == (50, 8) and batch["lab"].dtype == np.float32
    age = batch["demo"][:, 0]
    assert abs(float(age.mean())) < 1e-5 and float(age.std()) == pytest.approx(1.0, rel=1e-5)
    afp = batch["iv"][:, 0]
    assert abs(float(afp.mean())) < 1e-5 and float(afp.std()) == pytest.approx(1.0, rel=1e-5)
    afp_slot = next(s for s in spec.slots if s.source == "afp_ng_per_ml")
    assert afp_slot.transform == "log1p"
    # constant column (ALT is the same for everyone): offset = value, scale 1 -> 0
    np.testing.assert_array_equal(batch["lab"][:, 1], 0.0)
    # categories are left as codes unless asked
    hbv = batch["demo"][:, 4]
    assert set(np.unique(hbv)) <= {0.0, 1.0}
    assert set(np.unique(batch["iv"][:, 3])) <= {0.0, 1.0, 2.0}
    both = ClinicalEncoding.fit_standardise(cohort, standardise_categorical=True)
    hbv_std = both.encode_batch(cohort)["demo"][:, 4]
    assert abs(float(hbv_std.mean())) < 1e-5


def test_fit_standardise_errors() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        ClinicalEncoding.fit_standardise(_cohort(1))
    with pytest.raises(ValueError, match="unknown log1p"):
        ClinicalEncoding.fit_standardise(_cohort(3), log1p_fields=["afp"])
    with pytest.raises(ValueError, match="categorical"):
        ClinicalEncoding.fit_standardise(_cohort(3), log1p_fields=["hbv"])


def test_encode_batch_empty() -> None:
    out = ClinicalEncoding.raw_values().encode_batch([])
    assert out["demo"].shape == (0, 6)


#: The authors' loader columns (SELECTION.py, Data.__getitem__) -> hccatom's fields, in order.
AUTHORS_COLUMNS = {
    "lab": [("ALB", "albumin_g_per_l"), ("ALT", "alt_u_per_l"), ("AST", "ast_u_per_l"),
            ("TBIL", "total_bilirubin_umol_per_l"), ("PT", "prothrombin_time_s"),
            ("INR", "inr"), ("PLT", "platelets_10e9_per_l"),
            ("child-pugh (5 or 6 or 7)", "child_pugh_score")],
    "demo": [("age", "age_years"), ("sex", "sex"), ("ECOG", "ecog"),
             ("comorbidity", "comorbidity"), ("hepatitis", "hbv"), ("ascites", "ascites")],
    "iv": [("AFP", "afp_ng_per_ml"), ("tumour_n", "tumour_number"),
           ("MaximumRadius", "max_tumour_diameter_mm"), ("BCLC ", "bclc_stage"),
           ("metastasis", "metastasis"), ("PVTT", "pvtt")],
}


@pytest.mark.parametrize(("unit", "radius"), [("mm", 32.0), ("cm", 3.2)])
def test_authors_loader_matches_their_columns_and_feeds_the_radius(
    unit: str, radius: float
) -> None:
    enc = ClinicalEncoding.authors_loader(unit)  # type: ignore[arg-type]
    for group, columns in AUTHORS_COLUMNS.items():
        assert [s.source for s in enc.ordered(group)] == [field for _, field in columns]
    out = enc.encode(_example())  # the example's maximum diameter is 64 mm
    raw = ClinicalEncoding.raw_values().encode(_example())
    assert out["iv"][2] == pytest.approx(radius)
    # every other slot is the raw value, as in the authors' loader
    np.testing.assert_array_equal(np.delete(out["iv"], 2), np.delete(raw["iv"], 2))
    np.testing.assert_array_equal(out["lab"], raw["lab"])
    np.testing.assert_array_equal(out["demo"], raw["demo"])
    assert "SELECTION.py" in enc.description and unit in enc.description


def test_authors_loader_needs_a_radius_unit() -> None:
    from hccatom.errors import ClinicalInputError

    with pytest.raises(ClinicalInputError, match="radius_unit"):
        ClinicalEncoding.authors_loader("inch")  # type: ignore[arg-type]
