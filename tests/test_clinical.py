"""ClinicalVariables: loading, ranges, every-field error reporting, unit hints, schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hccatom import ClinicalVariables
from hccatom.clinical import FIELD_RANGES, GROUPS, BclcStage, Sex
from hccatom.errors import ClinicalInputError, InputError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "clinical_example.json"
INT_FIELDS = {"child_pugh_score", "ecog", "tumour_number"}


def _valid() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


def _problems(values: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ClinicalInputError) as err:
        ClinicalVariables.from_mapping(values)
    assert isinstance(err.value, InputError)
    problems = dict(err.value.problems)
    for name in problems:  # the message repeats every problem
        assert name in str(err.value)
    return problems


def test_example_file_loads() -> None:
    c = ClinicalVariables.from_json(EXAMPLE)
    assert c.albumin_g_per_l == 38.5
    assert c.sex is Sex.male and c.bclc_stage is BclcStage.B
    assert c.tumour_number == 2 and isinstance(c.tumour_number, int)
    assert c.hbv is True and c.pvtt is False
    assert ClinicalVariables.from_mapping(_valid()) == c
    assert len(ClinicalVariables.model_fields) == 20


def test_groups_are_the_papers_in_order() -> None:
    assert [len(v) for v in GROUPS.values()] == [8, 6, 6]
    assert sorted(n for g in GROUPS.values() for n in g) == sorted(ClinicalVariables.model_fields)
    c = ClinicalVariables.from_json(EXAMPLE)
    assert c.group_values("lab") == (38.5, 42.0, 55.0, 17.1, 12.8, 1.08, 152.0, 5)
    assert c.group_values("demo") == (58.0, Sex.male, 0, False, True, False)
    assert c.group_values("iv") == (420.0, 2, 64.0, BclcStage.B, False, False)
    with pytest.raises(KeyError):
        c.group_values("imaging")


def test_frozen() -> None:
    c = ClinicalVariables.from_json(EXAMPLE)
    with pytest.raises(ValidationError):
        c.albumin_g_per_l = 40.0  # type: ignore[misc]


def test_json_schema() -> None:
    schema = ClinicalVariables.model_json_schema()
    assert set(schema["properties"]) == set(ClinicalVariables.model_fields)
    assert set(schema["required"]) == set(ClinicalVariables.model_fields)
    assert schema["additionalProperties"] is False
    alb = schema["properties"]["albumin_g_per_l"]
    assert alb["minimum"] == 10.0 and alb["maximum"] == 70.0 and "g/L" in alb["description"]
    json.dumps(schema)


def test_missing_and_extra_fields_are_errors() -> None:
    values = _valid()
    del values["albumin_g_per_l"], values["pvtt"]
    values["albumin_g_per_dl"] = 3.8
    problems = _problems(values)
    assert set(problems) == {"albumin_g_per_l", "pvtt", "albumin_g_per_dl"}
    assert (
        problems["albumin_g_per_l"].startswith("missing")
        and "10..70 g/L" in problems["albumin_g_per_l"]
    )
    assert "not a known clinical variable" in problems["albumin_g_per_dl"]


def test_every_bad_field_reported_at_once_with_range() -> None:
    values = _valid() | {
        "ecog": 5,
        "child_pugh_score": 4,
        "tumour_number": 0,
        "sex": "M",
        "bclc_stage": "D",
        "hbv": "maybe",
        "age_years": 7,
        "inr": float("nan"),
    }
    problems = _problems(values)
    assert set(problems) == {
        "ecog",
        "child_pugh_score",
        "tumour_number",
        "sex",
        "bclc_stage",
        "hbv",
        "age_years",
        "inr",
    }
    assert "integer 0..4" in problems["ecog"]
    assert "integer 5..15" in problems["child_pugh_score"]
    assert "integer 1..50" in problems["tumour_number"]
    assert "'male' or 'female'" in problems["sex"]
    assert "'A', 'B' or 'C'" in problems["bclc_stage"]
    assert "true or false" in problems["hbv"]
    assert "18..100 years" in problems["age_years"]
    assert "got nan" in problems["inr"]


def test_integers_must_be_whole_and_bools_are_not_numbers() -> None:
    problems = _problems(_valid() | {"tumour_number": 2.5, "albumin_g_per_l": True})
    assert set(problems) == {"tumour_number", "albumin_g_per_l"}


@pytest.mark.parametrize(
    ("field", "value", "hint"),
    [
        ("albumin_g_per_l", 3.5, "g/dL"),
        ("total_bilirubin_umol_per_l", 1.1, "mg/dL"),
        ("platelets_10e9_per_l", 150000, "per uL"),
        ("max_tumour_diameter_mm", 5.2, "looks like cm"),
        ("alt_u_per_l", 0.6, "ukat/L"),
        ("ast_u_per_l", 0.7, "ukat/L"),
        ("prothrombin_time_s", 1.1, "INR"),
        ("inr", 13.0, "prothrombin time in seconds"),
        ("age_years", 700, "months"),
    ],
)
def test_unit_mixups_are_named(field: str, value: float, hint: str) -> None:
    problems = _problems(_valid() | {field: value})
    assert set(problems) == {field}
    assert "unit mix-up?" in problems[field] and hint in problems[field]


def test_constructor_raises_the_same_error() -> None:
    with pytest.raises(ClinicalInputError) as err:
        ClinicalVariables(**(_valid() | {"albumin_g_per_l": 3.5}))
    assert err.value.problems[0][0] == "albumin_g_per_l"


def test_from_json_errors(tmp_path: Path) -> None:
    with pytest.raises(ClinicalInputError, match="not found"):
        ClinicalVariables.from_json(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ClinicalInputError, match="not valid JSON"):
        ClinicalVariables.from_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ClinicalInputError, match="JSON object"):
        ClinicalVariables.from_json(bad)
    with pytest.raises(ClinicalInputError, match="mapping"):
        ClinicalVariables.from_mapping([1, 2])  # type: ignore[arg-type]


# --- property tests ---------------------------------------------------------------------
def _in_range(name: str) -> st.SearchStrategy[Any]:
    lo, hi, _ = FIELD_RANGES[name]
    if name in INT_FIELDS:
        return st.integers(int(lo), int(hi))
    return st.floats(lo, hi, allow_nan=False)


VALID = st.fixed_dictionaries(
    {
        **{name: _in_range(name) for name in FIELD_RANGES},
        "sex": st.sampled_from(["male", "female"]),
        "bclc_stage": st.sampled_from(["A", "B", "C"]),
        **{name: st.booleans() for name in ("comorbidity", "hbv", "ascites", "metastasis", "pvtt")},
    }
)


@settings(max_examples=60, deadline=None)
@given(values=VALID)
def test_property_valid_values_accepted_and_roundtrip(values: dict[str, Any]) -> None:
    c = ClinicalVariables.from_mapping(values)
    again = ClinicalVariables.from_mapping(json.loads(c.model_dump_json()))
    assert again == c
    for name, (lo, hi, _) in FIELD_RANGES.items():
        assert lo <= getattr(c, name) <= hi


@settings(max_examples=60, deadline=None)
@given(
    values=VALID,
    bad=st.lists(st.sampled_from(sorted(FIELD_RANGES)), min_size=1, unique=True),
    above=st.booleans(),
    factor=st.floats(1.01, 100.0),
)
def test_property_every_out_of_range_field_reported(
    values: dict[str, Any], bad: list[str], above: bool, factor: float
) -> None:
    for name in bad:
        lo, hi, _ = FIELD_RANGES[name]
        # above the range, or below it (AFP's lower bound 0 can only be exceeded above)
        v = hi * factor + 1 if above or lo <= 0 else lo / factor - 1e-3
        if name in INT_FIELDS:
            v = int(v) + 1 if above or lo <= 0 else int(lo) - 1
        values[name] = v
    problems = _problems(values)
    assert set(problems) == set(bad)
    for name in bad:
        lo, hi, unit = FIELD_RANGES[name]
        assert f"{lo:g}..{hi:g} {unit}" in problems[name]
