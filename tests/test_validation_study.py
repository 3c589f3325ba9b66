"""A DICOM study folder per cohort row: schema, ``Case(study=...)``, scoring, live progress."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hccatom.cli_progress import StderrProgress
from hccatom.errors import InputError
from hccatom.validation.cohort import CohortCase, read_cohort
from hccatom.validation.errors import CohortInputError
from hccatom.validation.scoring import EtaProgress, inputs_digest

CLINICAL = {
    "albumin_g_per_l": 38.0, "alt_u_per_l": 50.0, "ast_u_per_l": 60.0,
    "total_bilirubin_umol_per_l": 15.0, "prothrombin_time_s": 12.5, "inr": 1.05,
    "platelets_10e9_per_l": 180.0, "child_pugh_score": 5, "age_years": 55.0, "sex": "male",
    "ecog": 0, "comorbidity": False,
    "hbv": True, "ascites": False, "afp_ng_per_ml": 120.0, "tumour_number": 2,
    "max_tumour_diameter_mm": 60.0, "bclc_stage": "B", "metastasis": False, "pvtt": False,
}
HEADER = ["case_id", "treatment", "arterial", "portal", "study", "arterial_series_uid",
          "portal_series_uid", "clinical_json"]


def _csv(path: Path, rows: list[list[object]]) -> Path:
    lines = [",".join(HEADER)] + [",".join("" if v is None else str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _folder(tmp: Path) -> Path:
    (tmp / "ct").mkdir()
    for n in ("a.nii.gz", "p.nii.gz"):
        (tmp / "ct" / n).write_bytes(b"x")
    (tmp / "studies" / "s1").mkdir(parents=True)
    (tmp / "clinical.json").write_text(json.dumps(CLINICAL), encoding="utf-8")
    return tmp


# --- schema -------------------------------------------------------------------------------
def test_study_column_read_with_series_uids(tmp_path: Path) -> None:
    _folder(tmp_path)
    cohort = read_cohort(_csv(tmp_path / "c.csv", [
        ["p1", "TACE", "ct/a.nii.gz", "ct/p.nii.gz", None, None, None, "clinical.json"],
        ["s1", "HAIC", None, None, "studies/s1", "1.2.3", None, "clinical.json"],
        ["s2", "TC", None, None, str(tmp_path / "studies" / "s1"), None, None,
         "clinical.json"],
    ]))
    p1, s1, s2 = cohort.cases
    assert p1.study is None and p1.arterial == tmp_path / "ct" / "a.nii.gz"
    assert s1.study == tmp_path / "studies" / "s1" and s1.arterial is None
    assert (s1.arterial_series_uid, s1.portal_series_uid) == ("1.2.3", None)
    assert s2.study == tmp_path / "studies" / "s1" and s2.arterial_series_uid is None


def test_study_row_errors_reported_with_line_numbers(tmp_path: Path) -> None:
    _folder(tmp_path)
    p = _csv(tmp_path / "bad.csv", [
        ["ok", "TACE", None, None, "studies/s1", None, None, "clinical.json"],
        ["both", "TACE", "ct/a.nii.gz", "ct/p.nii.gz", "studies/s1", None, None,
         "clinical.json"],
        ["neither", "TACE", None, None, None, None, None, "clinical.json"],
        ["gone", "TACE", None, None, "studies/absent", None, None, "clinical.json"],
        ["file", "TACE", None, None, "ct/a.nii.gz", None, None, "clinical.json"],
        ["uid", "TACE", "ct/a.nii.gz", "ct/p.nii.gz", None, None, "1.2.3", "clinical.json"],
    ])
    with pytest.raises(CohortInputError) as exc:
        read_cohort(p)
    err = exc.value
    assert isinstance(err, InputError)
    got = {(line, col): msg for line, col, msg in err.problems}
    assert "not both" in got[(3, "study")]
    assert "DICOM study folder" in got[(4, "arterial")] and (4, "portal") in got
    assert "not found" in got[(5, "study")] and "studies/absent" in got[(5, "study")]
    assert "not a folder" in got[(6, "study")]
    assert "study column" in got[(7, "portal_series_uid")]
    assert not any(line == 2 for line, _, _ in err.problems)  # the good row is fine
    assert "line 5, study" in str(err)


def test_cache_key_covers_study_and_series_choice() -> None:
    base = CohortCase(line=2, case_id="a", treatment="TACE", study=Path("/s/one"))
    variants = [
        base,
        replace(base, study=Path("/s/two")),
        replace(base, arterial_series_uid="1.2.3"),
        replace(base, portal_series_uid="1.2.3"),
        replace(base, study=None, arterial=Path("/s/one"), portal=Path("/s/one")),
    ]
    assert len({inputs_digest(v) for v in variants}) == len(variants)
    assert inputs_digest(replace(base, line=9)) == inputs_digest(base)


# --- Case -----------------------------------------------------------------------------------
def test_case_needs_exactly_one_of_ct_or_study(tmp_path: Path) -> None:
    from hccatom import Predictor
    from hccatom.demo import demo_bundle_path
    from hccatom.predictor import Case

    ct = {"arterial": tmp_path / "a.nii.gz", "portal": tmp_path / "p.nii.gz"}
    cases = [Case(ct=ct, study=tmp_path, clinical=CLINICAL, case_id="both"),
             Case(ct=None, clinical=CLINICAL, case_id="neither"),
             Case(ct=ct, arterial="1.2.3", clinical=CLINICAL, case_id="uid")]
    with Predictor.from_bundle(demo_bundle_path(), device="cpu") as predictor:
        results = list(predictor.recommend_many(cases, on_error="yield"))
        with pytest.raises(InputError, match="exactly one of ct"):
            list(predictor.recommend_many(cases[:1]))
    assert all(isinstance(r.error, InputError) and r.recommendation is None for r in results)
    assert "'both'" in str(results[0].error) and "exactly one" in str(results[1].error)
    assert "study=" in str(results[2].error)


# --- progress -------------------------------------------------------------------------------
def test_terminal_redraws_eta_in_place_and_log_gets_lines() -> None:
    tty = io.StringIO()
    shown = StderrProgress(tty, tty=True, redraw_s=0.0)
    with shown.stage("score_cases"):
        eta = EtaProgress(3, shown.note, live=shown.live)
        for done in (1, 2, 3):
            eta(done, 0, 0)
    shown.close()
    text = tty.getvalue()
    assert "\r\x1b[Khccatom: score_cases" in text and "scored 1/3 cases" in text
    assert "ETA" in text.split("scored 2/3", 1)[1].split("\r", 1)[0]
    plain = [ln for ln in text.replace("\r\x1b[K", "\n").splitlines() if ln.endswith("s")]
    assert any(ln.startswith("hccatom: scored 3/3 cases") for ln in plain)
    assert not any(ln.startswith("hccatom: scored 1/3") for ln in plain)  # redrawn only

    log = io.StringIO()
    plain_progress = StderrProgress(log, tty=False)
    with plain_progress.stage("score_cases"):
        eta = EtaProgress(3, plain_progress.note, every_s=0.0, live=None)
        plain_progress.live("ignored off a terminal")
        for done in (1, 2, 3):
            eta(done, 0, 0)
    plain_progress.close()
    out = log.getvalue()
    assert "\r" not in out and "ignored" not in out
    assert [ln.split(" cases")[0] for ln in out.splitlines() if "scored" in ln] == [
        "hccatom: scored 1/3", "hccatom: scored 2/3", "hccatom: scored 3/3"]


def test_command_uses_live_line_only_on_a_terminal() -> None:
    from hccatom.validation.command import _live_line

    on_tty = StderrProgress(io.StringIO(), tty=True)
    assert _live_line(on_tty) == on_tty.live
    assert _live_line(StderrProgress(io.StringIO(), tty=False)) is None


# --- a two-case cohort through scoring (one row a DICOM study) ------------------------------
@pytest.fixture(scope="module")
def study_cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("pydicom", reason="DICOM study rows need the dicom extra (pydicom)")
    from hccatom.ct_io import write_volume
    from hccatom.dicom.synthetic_study import SeriesPlan, write_study
    from hccatom.synthetic import COHORTS, ScanSpec, draw_cohort, generate_patient

    spec = replace(ScanSpec.demo(), n_slices=24, centre_on="tumour")
    member = draw_cohort(COHORTS[0], 1, seed=0).patients[0]
    patient = generate_patient(member.seed, spec, member.features)
    root = tmp_path_factory.mktemp("cohort")
    uids = write_study(patient, root / "study", [
        SeriesPlan("arterial", "Arterial 1.25"), SeriesPlan("portal", "Portal 1.25"),
        SeriesPlan("portal", "Portal 2.5", thickness_factor=2)], extras=False)
    (root / "ct").mkdir()
    write_volume(patient.arterial, root / "ct" / "a.nii.gz")
    write_volume(patient.portal, root / "ct" / "p.nii.gz")
    (root / "clinical.json").write_text(member.clinical.model_dump_json(), encoding="utf-8")
    return {"root": root, "uids": uids, "clinical": member.clinical}


def test_cohort_with_a_dicom_study_row_is_scored(study_cohort: dict[str, Any]) -> None:
    from hccatom import Predictor
    from hccatom.demo import demo_bundle_path
    from hccatom.validation.scoring import score_cohort

    root, uids = study_cohort["root"], study_cohort["uids"]
    rows: list[list[object]] = [
        ["paths", "TACE", "ct/a.nii.gz", "ct/p.nii.gz", None, None, None, "clinical.json"],
        ["dicom", "HAIC", None, None, "study", None, uids["portal"], "clinical.json"],
    ]
    cohort = read_cohort(_csv(root / "cohort.csv", rows))
    assert cohort.cases[1].study == root / "study"
    out = root / "out"
    with Predictor.from_bundle(demo_bundle_path(), device="cpu", mirroring=False,
                               phase_workers=1) as predictor:
        first = score_cohort(cohort.cases, predictor, out)
        assert first.failed == [] and [s.source for s in first.scored] == ["scored"] * 2
        direct = predictor.recommend(study=root / "study", clinical=study_cohort["clinical"],
                                     portal=uids["portal"])
        assert first.scored[1].scores == pytest.approx(
            {m: s.score for m, s in direct.scores.items()}, abs=1e-6)
        assert direct.input_series is not None
        assert direct.input_series["portal"].series_instance_uid == uids["portal"]

        again = score_cohort(cohort.cases, predictor, out)  # same inputs: both cached
        assert (again.n_cached, again.n_new) == (2, 0)
        assert [s.scores for s in again.scored] == [s.scores for s in first.scored]

        rows[1][6] = uids["portal_thick"]  # another series chosen: that case is rescored
        changed = read_cohort(_csv(root / "cohort.csv", rows))
        third = score_cohort(changed.cases, predictor, out)
    assert (third.n_cached, third.n_new) == (1, 1) and third.failed == []
    assert [s.source for s in third.scored] == ["cache", "scored"]


def test_validate_command_scores_study_row_with_compare_bundle(
        study_cohort: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``hccatom validate`` on a one-row table whose row is a DICOM study, compared with a
    "second" bundle (the same one): the study reaches both scorings, so the columns agree."""
    pytest.importorskip("lifelines", reason="hccatom validate needs the validate extra")
    from hccatom.atom import MODELS
    from hccatom.cli import main
    from hccatom.demo import demo_bundle_path

    root = study_cohort["root"]
    table = _csv(tmp_path / "one.csv", [["dicom", "TACE", None, None, str(root / "study"), None,
                                         None, str(root / "clinical.json")]])
    bundle = str(demo_bundle_path())
    out = tmp_path / "out"
    assert main(["validate", str(table), "--bundle", bundle, "--compare-bundle", bundle,
                 "--out", str(out), "--no-plots", "-q"]) == 0
    assert "1 of 1 cases scored (0 from cache), 0 failed" in capsys.readouterr().out
    (row,) = json.loads((out / "tables" / "scores.json").read_text())
    for m in MODELS:
        assert row[f"compare_{m}"] == pytest.approx(row[f"score_{m}"], abs=1e-6)
    assert len(list((out / "compare" / "cases").glob("*.json"))) == 1
