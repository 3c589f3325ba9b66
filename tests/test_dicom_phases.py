"""DICOM study index and phase selection (hccatom.dicom; needs the dicom extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pydicom", reason="needs the dicom extra (pydicom, highdicom)")

from hccatom.dicom import (
    DicomStudyError,
    PhaseAmbiguityError,
    PhaseConflictError,
    find_phases,
    index_study,
)
from hccatom.dicom.phases import classify_description, eligibility
from hccatom.dicom.synthetic_study import SeriesPlan, default_plans, write_study
from hccatom.errors import InputError
from hccatom.synthetic import ScanSpec, SyntheticPatient, generate_patient

SMALL = ScanSpec(shape_yx=(64, 64), spacing_yx_mm=(6.0, 6.0), slice_thickness_mm=1.25,
                 n_slices=40)


@pytest.fixture(scope="module")
def patient() -> SyntheticPatient:
    return generate_patient(3, SMALL)


def _study(tmp: Path, patient: SyntheticPatient, plans: list[SeriesPlan] | None = None,
           **kw: object) -> tuple[Path, dict[str, str]]:
    uids = write_study(patient, tmp, plans, **kw)  # type: ignore[arg-type]
    return tmp, uids


def test_index_reads_nested_files_without_suffix_and_counts_skips(
        tmp_path: Path, patient: SyntheticPatient) -> None:
    root, uids = _study(tmp_path, patient)
    idx = index_study(root)
    assert idx.skipped_non_dicom == 1 and idx.skipped_dicomdir == 1
    assert {s.series_instance_uid for s in idx.series} == set(uids.values())
    assert all(not str(i.path).endswith(".dcm") for s in idx.series for i in s.instances)
    thin = idx.by_uid(uids["arterial"])
    assert thin.n_slices == 40 and thin.slice_thickness_mm == pytest.approx(1.25)
    z = thin.slice_positions_mm()
    assert z is not None and (z[1:] > z[:-1]).all()  # sorted inferior -> superior
    assert thin.slice_spacing_mm == pytest.approx(1.25)
    assert thin.contrast_agent and thin.contrast_start_s is not None
    assert idx.by_uid(uids["localizer"]).n_slices == 1


def test_descriptions_pick_thin_soft_reconstructions(tmp_path: Path,
                                                     patient: SyntheticPatient) -> None:
    plans = [*default_plans(), SeriesPlan("arterial", "Arterial 1.25 lung", kernel="B70f")]
    root, uids = _study(tmp_path, patient, plans)
    sel = find_phases(root)
    assert sel.arterial.series.series_instance_uid == uids["arterial"]
    assert sel.portal.series.series_instance_uid == uids["portal"]
    assert "R1-keyword" in sel.arterial.rules and "R3-bolus-timing" in sel.arterial.rules
    assert sel.arterial.confidence == pytest.approx(1 - 0.3 * 0.3)
    assert sel.excluded[uids["localizer"]].startswith("E3-localizer")
    assert any("3 reconstruction(s)" in r for r in sel.arterial.reasons)
    record = sel.portal.record()
    assert record["series_instance_uid"] == uids["portal"] and "description" not in record


def test_without_descriptions_bolus_timing_decides(tmp_path: Path,
                                                   patient: SyntheticPatient) -> None:
    root, uids = _study(tmp_path, patient, default_plans(descriptions=False))
    sel = find_phases(root)
    assert sel.arterial.series.series_instance_uid == uids["arterial"]
    assert sel.portal.series.series_instance_uid == uids["portal"]
    assert sel.arterial.rules[0] == "R3-bolus-timing"
    assert sel.arterial.confidence == pytest.approx(0.7)


def test_without_descriptions_or_contrast_tags_order_decides(
        tmp_path: Path, patient: SyntheticPatient) -> None:
    plans = [SeriesPlan("noncontrast", "Plain", thickness_factor=4),
             SeriesPlan("portal", contrast_tags=False), SeriesPlan("arterial", contrast_tags=False)]
    root, uids = _study(tmp_path, patient, plans)
    sel = find_phases(root)
    assert sel.arterial.series.series_instance_uid == uids["arterial"]
    assert sel.portal.series.series_instance_uid == uids["portal"]
    assert sel.arterial.rules == ("R5-order", "P1-recon")
    assert sel.arterial.confidence == pytest.approx(0.35)


def test_one_phase_known_the_other_follows_by_order(tmp_path: Path,
                                                    patient: SyntheticPatient) -> None:
    plans = [SeriesPlan("arterial", "Arteriell", contrast_tags=False),
             SeriesPlan("portal", "", contrast_tags=False)]
    root, uids = _study(tmp_path, patient, plans)
    sel = find_phases(root)
    assert sel.portal.series.series_instance_uid == uids["portal"]
    assert sel.portal.rules[0] == "R5-order"


def test_two_arterial_acquisitions_are_ambiguous_and_the_message_is_sanitised(
        tmp_path: Path, patient: SyntheticPatient) -> None:
    plans = [SeriesPlan("arterial", "Early arterial Dr Secret", seconds_after_injection=20),
             SeriesPlan("arterial", "Late arterial Dr Secret", seconds_after_injection=40),
             SeriesPlan("portal", "Portal venous")]
    root, uids = _study(tmp_path, patient, plans)
    with pytest.raises(PhaseAmbiguityError) as info:
        find_phases(root)
    msg = str(info.value)
    assert "2 acquisitions look like the arterial phase" in msg
    assert uids["arterial"] in msg and uids["arterial_2"] in msg
    assert "arterial='<SeriesInstanceUID>'" in msg
    assert "Secret" not in msg and "SYNTHETIC" not in msg and "PHANTOM" not in msg
    assert "t+20 s" in msg  # times relative to the first acquisition, no clock time
    descriptions = {c.description for c in info.value.candidates}
    assert "Late arterial Dr Secret" in descriptions
    assert isinstance(info.value, InputError)
    # the explicit choice resolves it; the portal phase is still found by the rules
    sel = find_phases(root, arterial=uids["arterial_2"])
    assert sel.arterial.rules == ("explicit",) and sel.arterial.confidence == 1.0
    assert sel.portal.series.series_instance_uid == uids["portal"]


def test_conflicting_evidence_is_not_guessed(tmp_path: Path, patient: SyntheticPatient) -> None:
    plans = [SeriesPlan("arterial", "Arterial", seconds_after_injection=75),
             SeriesPlan("portal", "Portal", seconds_after_injection=90)]
    root, _ = _study(tmp_path, patient, plans)
    with pytest.raises(PhaseAmbiguityError, match="conflicting evidence arterial/portal"):
        find_phases(root)


def test_missing_portal_phase(tmp_path: Path, patient: SyntheticPatient) -> None:
    plans = [SeriesPlan("noncontrast", "native"), SeriesPlan("arterial", "AP")]
    root, _ = _study(tmp_path, patient, plans)
    with pytest.raises(PhaseAmbiguityError, match="No series of the study looks like the portal"):
        find_phases(root)


def test_same_series_twice_and_unknown_uid(tmp_path: Path, patient: SyntheticPatient) -> None:
    root, uids = _study(tmp_path, patient)
    with pytest.raises(PhaseConflictError, match="same series"):
        find_phases(root, arterial=uids["portal"], portal=uids["portal"])
    with pytest.raises(DicomStudyError, match="not in the study"):
        find_phases(root, arterial="1.2.3.4")


def test_explicit_localiser_is_refused(tmp_path: Path, patient: SyntheticPatient) -> None:
    plans = [SeriesPlan("arterial", "AP"), SeriesPlan("portal", "PV"),
             SeriesPlan("portal", "PV mpr", image_type=("DERIVED", "SECONDARY", "AXIAL"))]
    root, uids = _study(tmp_path, patient, plans)
    sel = find_phases(root)
    assert sel.excluded[uids["portal_2"]].startswith("E4-derived")
    derived = find_phases(root, portal=uids["portal_2"])  # explicit: accepted, with a note
    assert any("E4-derived" in r for r in derived.portal.reasons)
    idx = index_study(root)
    idx.by_uid(uids["portal"]).problems.append("two images share one slice position")
    with pytest.raises(DicomStudyError, match="E7-geometry"):
        find_phases(idx, portal=uids["portal"])


@pytest.mark.parametrize(("text", "expected"), [
    ("Arterial 1.0 B30f", ["arterial"]), ("LATE ART", ["arterial"]), ("HAP", ["arterial"]),
    ("arteriell", ["arterial"]), ("Phase artérielle", ["arterial"]), ("動脈相", ["arterial"]),
    ("PV 1.25", ["portal"]), ("Portalvenös", ["portal"]), ("venoso", ["portal"]),
    ("Phase portale", ["portal"]), ("Delayed 3 min", ["delayed"]), ("Spätphase", ["delayed"]),
    ("Equilibrium", ["delayed"]), ("Nativ", ["noncontrast"]), ("non-contrast", ["noncontrast"]),
    ("Plain abdomen", ["noncontrast"]), ("sin contraste", ["noncontrast"]),
    ("Abdomen 5.0 B30f", []), ("Arterial + portal", ["arterial", "portal"]),
])
def test_description_keywords(text: str, expected: list[str]) -> None:
    assert classify_description(text) == expected


def test_real_series_indexes_and_is_not_two_phases(real_data: Path) -> None:
    idx = index_study(real_data / "totalseg_example")
    assert idx.skipped_non_dicom == 3  # the NIfTI files and the licence
    (series,) = idx.series
    assert series.n_slices == 20 and series.is_axial and series.modality == "CT"
    assert eligibility(series) is None
    with pytest.raises(PhaseAmbiguityError) as info:
        find_phases(idx)
    assert len(info.value.candidates) == 1
    small = index_study(real_data / "dcmqi_ct3slice")
    assert eligibility(small.series[0]) == "E8-too-few (3 < 8 images)"


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DicomStudyError, match="not found"):
        index_study(tmp_path / "nope")
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(DicomStudyError, match="No DICOM image"):
        index_study(tmp_path)


def test_explicit_localiser_and_three_unlabelled_acquisitions(
        tmp_path: Path, patient: SyntheticPatient) -> None:
    plans = [SeriesPlan("localizer", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")),
             SeriesPlan("arterial", contrast_tags=False), SeriesPlan("portal", contrast_tags=False),
             SeriesPlan("delayed", contrast_tags=False)]
    root, uids = _study(tmp_path, patient, plans)
    with pytest.raises(PhaseAmbiguityError, match="No series of the study looks like the "
                       "arterial phase") as info:
        find_phases(root)  # three unlabelled acquisitions: order alone does not decide
    assert len(info.value.candidates) == 3
    with pytest.raises(DicomStudyError, match="E3-localizer"):
        find_phases(root, arterial=uids["localizer"], portal=uids["portal"])
    sel = find_phases(root, arterial=uids["arterial"])  # one phase known: order finds portal
    assert sel.portal.series.series_instance_uid == uids["portal"]
