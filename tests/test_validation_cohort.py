"""The cohort table schema: typed rows, every bad row reported at once with line numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hccatom.errors import InputError
from hccatom.validation.cohort import CLINICAL_FIELDS, read_cohort
from hccatom.validation.errors import CohortInputError

CLINICAL = {
    "albumin_g_per_l": 38.0, "alt_u_per_l": 50.0, "ast_u_per_l": 60.0,
    "total_bilirubin_umol_per_l": 15.0, "prothrombin_time_s": 12.5, "inr": 1.05,
    "platelets_10e9_per_l": 180.0, "child_pugh_score": 5, "age_years": 55.0, "sex": "male",
    "ecog": 0, "comorbidity": False,
    "hbv": True, "ascites": False, "afp_ng_per_ml": 120.0, "tumour_number": 2,
    "max_tumour_diameter_mm": 60.0, "bclc_stage": "B", "metastasis": False, "pvtt": False,
}


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = [",".join(header)] + [",".join("" if v is None else str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_precomputed_scores_rows(tmp_path: Path) -> None:
    header = ["case_id", "treatment", "response", "os_months", "os_event", "set",
              "score_TACE", "score_HAIC", "score_TC", "score_HC", "compare_TACE"]
    p = _csv(tmp_path / "c.csv", header, [
        ["a1", "TACE", 1, 14.2, 0, "train", 0.5, 0.3, 0.6, 0.7, 0.4],
        ["a2", "hc", None, 8.0, 1, "external", 0.2, 0.3, 0.4, 0.5, None],
        ["a3", "TACE + systemic", None, None, None, None, 0.2, 0.3, 0.4, 0.5, None],
    ])
    cohort = read_cohort(p)
    a1, a2, a3 = cohort.cases
    assert a1.model == "TACE" and a1.response == 1 and a1.set == "train"
    assert a1.scores == {"TACE": 0.5, "HAIC": 0.3, "TC": 0.6, "HC": 0.7}
    assert a1.compare == {"TACE": 0.4}
    assert a2.treatment == "HAIC + systemic" and a2.model == "HC"
    assert a2.one_year_survival() == 0  # died at 8 months
    assert a1.one_year_survival() == 1  # followed beyond 12 months
    assert a3.one_year_survival() is None and a3.set is None
    assert len(cohort.sha256) == 64


def test_every_bad_row_reported_at_once(tmp_path: Path) -> None:
    header = ["case_id", "treatment", "response", "os_months", "os_event", "set",
              "score_TACE", "score_HAIC", "score_TC", "score_HC"]
    p = _csv(tmp_path / "bad.csv", header, [
        ["ok", "TACE", 1, 10, 1, "train", 0.5, 0.3, 0.6, 0.7],
        ["b1", "surgery", 2, 10, 1, "train", 0.5, 0.3, 0.6, 0.7],
        ["b2", "HAIC", 0, -3, None, "test", 1.5, 0.3, None, 0.7],
        ["ok", "HAIC", 0, 10, 1, "train", 0.5, 0.3, 0.6, 0.7],
    ])
    with pytest.raises(CohortInputError) as exc:
        read_cohort(p)
    err = exc.value
    assert isinstance(err, InputError)
    got = {(line, col) for line, col, _ in err.problems}
    assert {(3, "treatment"), (3, "response"), (4, "os_months"), (4, "os_months/os_event"),
            (4, "set"), (4, "score_TACE"), (4, "score_*"), (5, "case_id")} <= got
    assert "line 4, set" in str(err) and "nothing was scored" in str(err)


def test_clinical_columns_json_and_paths(tmp_path: Path) -> None:
    (tmp_path / "ct").mkdir()
    for n in ("a.nii.gz", "p.nii.gz"):
        (tmp_path / "ct" / n).write_bytes(b"x")
    (tmp_path / "c2.json").write_text(json.dumps(CLINICAL), encoding="utf-8")
    header = ["case_id", "treatment", "arterial", "portal", "clinical_json", *CLINICAL_FIELDS]
    row1 = ["c1", "TACE", "ct/a.nii.gz", "ct/p.nii.gz", None,
            *[str(CLINICAL[f]).lower() if isinstance(CLINICAL[f], bool) else CLINICAL[f]
              for f in CLINICAL_FIELDS]]
    row2 = ["c2", "HAIC", "ct/a.nii.gz", "ct/p.nii.gz", "c2.json", *[None] * len(CLINICAL_FIELDS)]
    bad = list(row1)
    bad[0], bad[2] = "c3", "ct/missing.nii.gz"
    bad[header.index("albumin_g_per_l")] = "abc"
    cohort = read_cohort(_csv(tmp_path / "ok.csv", header, [row1, row2]))
    c1, c2 = cohort.cases
    assert c1.clinical is not None and c1.clinical.hbv is True and c1.clinical.tumour_number == 2
    assert c2.clinical == c1.clinical
    assert c1.arterial == tmp_path / "ct" / "a.nii.gz"
    with pytest.raises(CohortInputError) as exc:
        read_cohort(_csv(tmp_path / "bad.csv", header, [row1, bad]))
    cols = {c for line, c, _ in exc.value.problems if line == 3}
    assert {"arterial", "albumin_g_per_l"} <= cols


def test_missing_required_column_and_file(tmp_path: Path) -> None:
    with pytest.raises(CohortInputError, match="treatment"):
        read_cohort(_csv(tmp_path / "x.csv", ["case_id"], [["a"]]))
    with pytest.raises(CohortInputError, match="not found"):
        read_cohort(tmp_path / "absent.csv")


def test_parquet_when_pyarrow_present(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="Parquet input needs pyarrow (optional)")
    import pyarrow.parquet as pq

    t = pa.table({"case_id": ["a"], "treatment": ["TACE"], "score_TACE": [0.5],
                  "score_HAIC": [0.4], "score_TC": [0.3], "score_HC": [0.2]})
    pq.write_table(t, tmp_path / "c.parquet")
    assert read_cohort(tmp_path / "c.parquet").cases[0].scores == {
        "TACE": 0.5, "HAIC": 0.4, "TC": 0.3, "HC": 0.2}
