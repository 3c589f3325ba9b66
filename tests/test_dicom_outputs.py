"""DICOM study through the chain, and SEG / SR / report out (needs the dicom extra).

One synthetic study (non-ASCII patient name, UTF-8 character set) runs through the demo
bundle once per module; the tests check what comes back and what is written.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom", reason="needs the dicom extra (pydicom, highdicom)")
pytest.importorskip("highdicom", reason="needs the dicom extra (pydicom, highdicom)")

import highdicom as hd
import pydicom

from hccatom import Predictor
from hccatom.cli import main
from hccatom.demo import demo_bundle_path
from hccatom.dicom import DicomStudyError, PhaseConflictError, index_study
from hccatom.dicom.grid import SourceGrid, labels_to_source, read_series
from hccatom.dicom.outputs import segments_on_source, source_headers
from hccatom.dicom.sr import largest_diameter
from hccatom.dicom.study_run import swap_flag
from hccatom.dicom.synthetic_study import SYNTHETIC_PATIENT, SeriesPlan, write_study
from hccatom.preprocess import resample_z
from hccatom.recommendation import Recommendation
from hccatom.synthetic import COHORTS, ScanSpec, draw_cohort, generate_patient

NAME = "Synthétique^Fantôme"
PATIENT_KEYWORDS = {"PatientName", "PatientID", "PatientBirthDate", "PatientSex"}
SPEC = replace(ScanSpec.demo(), n_slices=24, centre_on="tumour")


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    member = draw_cohort(COHORTS[0], 1, seed=0).patients[0]
    patient = generate_patient(member.seed, SPEC, member.features)
    root = tmp_path_factory.mktemp("study")
    uids = write_study(patient, root, patient_attributes=dict(SYNTHETIC_PATIENT,
                                                              PatientName=NAME))
    predictor = Predictor.from_bundle(demo_bundle_path(), device="cpu", mirroring=False,
                                      phase_workers=1)
    rec = predictor.recommend(study=root, clinical=member.clinical)
    out = tmp_path_factory.mktemp("out")
    files = rec.to_dicom(out)
    return {"root": root, "uids": uids, "rec": rec, "files": files, "member": member,
            "patient": patient, "predictor": predictor}


def _read(files: list[Path], name: str) -> pydicom.Dataset:
    return pydicom.dcmread(next(f for f in files if f.name == name))


# --- study in -----------------------------------------------------------------------------
def test_recommendation_names_source_images(case: dict) -> None:
    rec: Recommendation = case["rec"]
    idx = index_study(case["root"])
    assert rec.input_series is not None
    for phase in ("arterial", "portal"):
        chosen = rec.input_series[phase]
        assert chosen.series_instance_uid == case["uids"][phase]
        src = rec.phases[phase].source_image
        assert src is not None and src.series_instance_uid == case["uids"][phase]
        series = idx.by_uid(src.series_instance_uid)
        inst = next(i for i in series.instances if i.sop_instance_uid == src.sop_instance_uid)
        assert inst.instance_number == src.instance_number
        assert inst.position is not None
        # the source image lies at the chosen slice (within half a source slice)
        assert abs(inst.position[2] - rec.phases[phase].slice_position_mm) == pytest.approx(
            src.distance_mm, abs=1e-3)
        assert src.distance_mm <= SPEC.slice_thickness_mm / 2 + 1e-6
    summary = rec.summary()
    assert f"image {rec.phases['arterial'].source_image.instance_number} (SOP " in summary
    back = Recommendation.from_json(rec.to_json())
    assert back.phases["portal"].source_image == rec.phases["portal"].source_image
    assert back.input_series == rec.input_series
    assert NAME not in rec.to_json() and "PV 1.25" not in rec.to_json()
    with pytest.raises(DicomStudyError, match="DICOM study in this process"):
        back.to_dicom(case["root"] / "never")
    assert {"find_phases", "read_dicom"} <= set(rec.timings_ms)


def test_identical_pixel_data_is_refused(tmp_path: Path, case: dict) -> None:
    plans = [SeriesPlan("arterial", "AP"), SeriesPlan("arterial", "PV",
                                                      seconds_after_injection=70)]
    write_study(case["patient"], tmp_path, plans)
    with pytest.raises(PhaseConflictError, match="identical pixel data"):
        case["predictor"].recommend(study=tmp_path, clinical=case["member"].clinical)


def test_kept_labels_are_cropped_without_moving(case: dict) -> None:
    from hccatom.dicom.study_run import crop_to_labels

    labels = resample_z(case["patient"].arterial_labels, 1.0, order=0)
    small = crop_to_labels(labels)
    assert small.array.size < labels.array.size / 2
    series = index_study(case["root"]).by_uid(case["uids"]["arterial"])
    grid = SourceGrid.of(series)
    np.testing.assert_array_equal(labels_to_source(small, grid), labels_to_source(labels, grid))


def test_swap_flag_rule() -> None:
    assert swap_flag(90.0, 120.0) is None
    flag = swap_flag(120.0, 90.0)
    assert flag is not None and flag.code == "phases_may_be_swapped"
    assert swap_flag(None, 90.0) is None


def test_swapped_descriptions_raise_the_swap_flag(tmp_path: Path, case: dict) -> None:
    # descriptions lie (the arterial acquisition is called portal) and nothing else helps
    plans = [SeriesPlan("arterial", "Portal venous", contrast_tags=False),
             SeriesPlan("portal", "Arterial", contrast_tags=False)]
    write_study(case["patient"], tmp_path, plans)
    assert not any(f.code == "phases_may_be_swapped" for f in case["rec"].quality_flags)
    rec = case["predictor"].recommend(study=tmp_path, clinical=case["member"].clinical)
    assert "phases_may_be_swapped" in [f.code for f in rec.quality_flags]


# --- label grid -----------------------------------------------------------------------------
@pytest.mark.parametrize(("thickness", "flip_x"), [(1.0, False), (1.25, True), (2.5, False),
                                                   (5.0, True)])
def test_labels_map_back_to_the_source_grid_exactly(tmp_path: Path, thickness: float,
                                                    flip_x: bool) -> None:
    spec = ScanSpec(shape_yx=(48, 40), spacing_yx_mm=(7.0, 8.0), slice_thickness_mm=thickness,
                    n_slices=int(40 / thickness))
    patient = generate_patient(5, spec)
    uids = write_study(patient, tmp_path, [SeriesPlan("arterial", "AP", flip_x=flip_x)],
                       extras=False)
    series = index_study(tmp_path).by_uid(uids["arterial"])
    vol = read_series(series)  # LPS: a flipped source comes back in the phantom's order
    np.testing.assert_allclose(vol.array, np.rint(patient.arterial.array).clip(-1024, 3071),
                               atol=0.5)
    internal = resample_z(patient.arterial_labels, 1.0, order=0)
    mapped = labels_to_source(internal, SourceGrid.of(series))
    truth = np.asarray(patient.arterial_labels.array)
    # images sort along the normal (row x column direction): a flipped row direction flips
    # the normal too, so that series runs superior -> inferior
    np.testing.assert_array_equal(mapped, truth[::-1, :, ::-1] if flip_x else truth)


# --- results out ----------------------------------------------------------------------------
def test_seg_round_trip_on_the_source_grid(case: dict) -> None:
    ctx = case["rec"]._dicom
    for phase in ("arterial", "portal"):
        seg = hd.seg.segread(next(f for f in case["files"] if f.name == f"SEG_{phase}.dcm"))
        data = ctx.phases[phase]
        expected = segments_on_source(data, ctx.liver_label, ctx.tumour_label)
        assert expected[expected > 0].size > 1000 and (expected == 2).any()
        sop_uids = [i.sop_instance_uid for i in data.grid.series.instances]
        got = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=sop_uids, segment_numbers=[1, 2], combine_segments=True,
            skip_overlap_checks=True)
        np.testing.assert_array_equal(np.asarray(got), expected)
        assert seg.SeriesInstanceUID not in case["uids"].values()
        assert seg.StudyInstanceUID == data.grid.series.study_instance_uid
        desc = {s.SegmentNumber: s for s in seg.SegmentSequence}
        assert desc[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
        assert desc[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
        assert desc[2].AnatomicRegionSequence[0].CodeValue == "10200004"
        alg = desc[1].SegmentationAlgorithmIdentificationSequence[0]
        assert alg.AlgorithmName == case["rec"].bundle.name
        assert alg.AlgorithmVersion == case["rec"].bundle.version
        refs = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0]
                .ReferencedInstanceSequence}
        assert refs == set(sop_uids)


def _content(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    out = []
    for item in ds.get("ContentSequence", []):
        out.append(item)
        out += _content(item)
    return out


def test_sr_holds_measurements_scores_plan_and_key_images(case: dict) -> None:
    rec: Recommendation = case["rec"]
    sr = hd.sr.srread(next(f for f in case["files"] if f.name == "SR.dcm"))
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    items = _content(sr)
    numbers = {}
    for it in items:
        if it.ValueType == "NUM":
            code = it.ConceptNameCodeSequence[0]
            numbers.setdefault(code.get("CodeValue") or code.get("LongCodeValue"), []).append(
                float(it.MeasuredValueSequence[0].NumericValue))
    for model, a in rec.scores.items():
        assert numbers[f"score-{model}"] == [pytest.approx(a.score, abs=1e-6)]
        assert pytest.approx(a.threshold, abs=1e-6) in numbers["mss-threshold"]
    assert len(numbers["118565006"]) == 4  # liver + tumour volume, both phases
    assert len(numbers["81827009"]) == 2  # largest diameter per phase
    codes = [it.ConceptCodeSequence[0] for it in items if it.ValueType == "CODE"]
    values = {c.get("CodeValue") or c.get("LongCodeValue") for c in codes}
    assert rec.final_plan in values and rec.decision.policy_id in values
    assert {r.rule_id for r in rec.decision.rationale} <= values
    refs = {it.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for it in items
            if it.ValueType == "IMAGE"}
    for phase in ("arterial", "portal"):
        src = rec.phases[phase].source_image
        assert src is not None and src.sop_instance_uid in refs
    # liver volume = liver pixels on the source grid x voxel volume
    ctx = rec._dicom
    data = ctx.phases["arterial"]
    seg = segments_on_source(data, ctx.liver_label, ctx.tumour_label)
    voxel = data.grid.spacing_rc[0] * data.grid.spacing_rc[1] * data.grid.series.slice_spacing_mm
    assert numbers["118565006"][0] == pytest.approx((seg == 1).sum() * voxel / 1000, rel=1e-4)


def test_report_image_and_study_membership(case: dict) -> None:
    from hccatom.report import render_pixels
    from hccatom.report.page import A4_INCHES

    sc = _read(case["files"], "REPORT_SC.dcm")
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert sc.pixel_array.shape[-1] == 3 and sc.pixel_array.std() > 10
    # one report layout: the SC carries the page rec.report() draws (A4 at 150 dpi)
    page = render_pixels(case["rec"])
    assert page.shape == (int(A4_INCHES[1] * 150), int(A4_INCHES[0] * 150), 3)
    np.testing.assert_array_equal(sc.pixel_array, page)
    assert "Research use only - not for clinical decisions" in sc.ImageComments
    assert "synthetic models" in sc.ImageComments  # the demo bundle is synthetic
    source = pydicom.dcmread(index_study(case["root"]).by_uid(
        case["uids"]["arterial"]).instances[0].path, stop_before_pixels=True)
    sops = set()
    for f in case["files"]:
        ds = pydicom.dcmread(f)
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.AccessionNumber == source.AccessionNumber
        assert str(ds.PatientName) == NAME and ds.SpecificCharacterSet == "ISO_IR 192"
        assert {e.keyword for e in ds if e.tag.group == 0x0010} <= PATIENT_KEYWORDS
        assert ds.SeriesInstanceUID not in case["uids"].values()
        sops.add(ds.SOPInstanceUID)
    assert len(sops) == len(case["files"]) == 4


def test_dciodvfy_finds_no_errors(case: dict) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed here")
    for f in case["files"]:
        run = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True, check=False)
        errors = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, f"{f.name}: {errors}"


def test_largest_diameter_per_lesion() -> None:
    mask = np.zeros((20, 30), bool)
    mask[2:5, 2:5] = True  # 3 x 3 lesion
    mask[10:12, 5:25] = True  # 20 px long lesion
    d, line = largest_diameter(mask, (1.0, 2.0))
    assert d == pytest.approx(np.hypot(1.0, 19 * 2.0))
    assert sorted(line[:, 0]) == [5.0, 24.0]
    assert largest_diameter(np.zeros((4, 4), bool), (1.0, 1.0)) is None


def test_cli_study_and_dicom_out(tmp_path: Path, case: dict,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    clinical = tmp_path / "clinical.json"
    clinical.write_text(case["member"].clinical.model_dump_json())
    out = tmp_path / "dicom"
    code = main(["recommend", "--bundle", str(demo_bundle_path()), "--study", str(case["root"]),
                 "--portal", case["uids"]["portal"], "--clinical", str(clinical),
                 "--device", "cpu", "--no-mirroring", "--dicom-out", str(out),
                 "--json", str(tmp_path / "rec.json")])
    err = capsys.readouterr().err
    assert code == 0, err
    idx = index_study(case["root"])  # indexing the study showed files and series found
    assert f"index_study done: {idx.n_files} files, {len(idx.series)} series in" in err
    assert sorted(p.name for p in out.iterdir()) == [
        "REPORT_SC.dcm", "SEG_arterial.dcm", "SEG_portal.dcm", "SR.dcm"]
    rec = Recommendation.from_json(tmp_path / "rec.json")
    assert rec.input_series is not None and rec.input_series["portal"].rules == ["explicit"]
    nifti = Path(__file__).parent / "data" / "real" / "totalseg_example" / "example_ct_sm.nii.gz"
    assert main(["recommend", "--bundle", str(demo_bundle_path()), "--arterial", str(nifti),
                 "--portal", str(nifti), "--clinical", str(clinical),
                 "--dicom-out", str(out)]) == 2
    assert "--dicom-out needs DICOM input" in capsys.readouterr().err


def test_axis_runs_match_fancy_indexing() -> None:
    from hccatom.dicom.grid import _axis_run

    rng = np.random.default_rng(0)
    for _ in range(2000):
        size, n = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        step, start = int(rng.choice([-1, 1])), int(rng.integers(-15, 25))
        idx = start + step * np.arange(n)
        ok = (idx >= 0) & (idx < size)
        expected = np.full(n, -1)
        expected[ok] = idx[ok]
        got = np.full(n, -1)
        run = _axis_run(start, step, n, size)
        if run is not None:
            got[run[0]] = np.arange(size)[run[1]]
        np.testing.assert_array_equal(got, expected)


# --- real DICOM series --------------------------------------------------------------------
def test_real_series_reads_like_read_ct_and_maps_labels_back(real_data: Path) -> None:
    from hccatom import read_ct

    folder = real_data / "totalseg_example" / "example_ct_dicom"
    (series,) = index_study(folder).series
    vol = read_series(series)
    np.testing.assert_array_equal(vol.array, read_ct(folder).array)
    body = vol.with_array((np.asarray(vol.array) > -300).astype(np.uint8))
    internal = resample_z(body, 1.0, order=0)  # 2 mm source -> 1 mm internal grid
    mapped = labels_to_source(internal, SourceGrid.of(series))
    np.testing.assert_array_equal(mapped, body.array)  # images ascend like the LPS z axis


def test_real_series_seg_round_trip_and_dciodvfy(real_data: Path, tmp_path: Path,
                                                 recwarn: pytest.WarningsRecorder) -> None:
    from hccatom.ct_io import read_labels
    from hccatom.dicom.seg import algorithm_identification, build_seg

    base = real_data / "dcmqi_ct3slice"
    (series,) = index_study(base / "dicom").series
    liver = read_labels(base / "liver_seg.nrrd")  # manual liver label, LPS
    mapped = labels_to_source(liver, SourceGrid.of(series))
    np.testing.assert_array_equal(mapped, liver.array)
    assert mapped.sum() > 1000
    headers = source_headers(series)
    seg = build_seg(headers, mapped, algorithm=algorithm_identification("test", "1"),
                    series_number=99, series_description="liver", software_version="0")
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    back = hd.seg.segread(path)
    got = back.get_pixels_by_source_instance(
        source_sop_instance_uids=[i.sop_instance_uid for i in series.instances],
        segment_numbers=[1, 2], combine_segments=True, skip_overlap_checks=True)
    np.testing.assert_array_equal(np.asarray(got), mapped)
    assert back.PatientID == headers[0].PatientID
    # highdicom's person-name warning quotes the name: silenced, nothing of the patient logged
    assert not [w for w in recwarn if str(headers[0].PatientName) in str(w.message)]
    if shutil.which("dciodvfy") is not None:
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True,
                             check=False)
        assert not [ln for ln in run.stderr.splitlines() if ln.startswith("Error")]


def test_one_folder_per_phase_names_source_images_too(tmp_path: Path, case: dict) -> None:
    from hccatom.errors import CTInputError

    study = tmp_path / "all"
    uids = write_study(case["patient"], study, [SeriesPlan("arterial", "AP"),
                                                SeriesPlan("portal", "PV")],
                       nested=False, extras=False)
    other = tmp_path / "copy"  # a second path: the same path twice is a SamePhaseError
    shutil.copytree(study, other)
    with pytest.raises(CTInputError, match="holds 2 DICOM series"):  # the usual read_ct error
        case["predictor"].recommend({"arterial": study, "portal": other},
                                    case["member"].clinical)
    for phase in ("arterial", "portal"):
        (tmp_path / phase).mkdir()
        for inst in index_study(study).by_uid(uids[phase]).instances:
            inst.path.rename(tmp_path / phase / inst.path.name)
    events: list = []
    rec = case["predictor"].recommend({"arterial": str(tmp_path / "arterial"),
                                       "portal": tmp_path / "portal"}, case["member"].clinical,
                                      progress=events.append)
    assert rec.input_series is not None and rec.input_series["portal"].rules == ["explicit"]
    indexed = [e for e in events if e.stage == "index_study" and e.total > 1]
    assert [(e.done, e.total, e.detail) for e in indexed if e.done == e.total] == [
        (SPEC.n_slices, SPEC.n_slices, "1 series")] * 2  # each phase folder, every file
    src = rec.phases["arterial"].source_image
    assert src is not None and src.series_instance_uid == uids["arterial"]
    files = rec.to_dicom(tmp_path / "out")
    assert len(files) == 4


def test_recommend_argument_errors(case: dict) -> None:
    from hccatom.errors import InputError

    pred, clinical = case["predictor"], case["member"].clinical
    with pytest.raises(InputError, match=r"either ct=\.\.\. or study="):
        pred.recommend({"arterial": 1, "portal": 2}, clinical, study=case["root"])
    with pytest.raises(InputError, match="clinical variables"):
        pred.recommend(study=case["root"])
    with pytest.raises(InputError, match="arterial=/portal= choose series"):
        pred.recommend({"arterial": 1, "portal": 2}, clinical, arterial="1.2.3")


def test_explain_with_a_study_folder(case: dict, explain_bundle: Path) -> None:
    """recommend(study=..., explain="groups"): the explanation survives the DICOM run's
    copy of the recommendation (source images named, key slices kept for the report), and
    the scores are the ones without explain."""
    pytest.importorskip("matplotlib", reason="the report page needs the report extra")
    from hccatom.report import render_figure

    predictor = Predictor.from_bundle(explain_bundle, device="cpu", mirroring=False,
                                      phase_workers=1)
    rec = predictor.recommend(study=case["root"], clinical=case["member"].clinical,
                              explain="groups")
    exp = rec.explanation
    assert exp is not None and exp.attribution_level == "groups"
    assert exp.attributions is not None and all(len(v) == 3 for v in exp.attributions.values())
    for m, a in case["rec"].scores.items():
        assert abs(rec.scores[m].score - a.score) <= 1e-6
    assert all(p.source_image is not None for p in rec.phases.values())
    from matplotlib.text import Text

    text = " ".join(t.get_text() for t in render_figure(rec).findobj(Text))
    assert "not available" not in text  # key slices and attributions drawn
    assert "token group" in text and "image " in text  # groups; the DICOM image named
