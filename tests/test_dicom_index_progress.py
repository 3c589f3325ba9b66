"""Indexing a DICOM study: progress events (files read, series found), the series listing
(slice spacing from positions, thickness beside it where it differs) and ``hccatom study``."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest

pytest.importorskip("pydicom", reason="needs the dicom extra (pydicom, highdicom)")
pytest.importorskip("highdicom", reason="needs the dicom extra (pydicom, highdicom)")

from hccatom.cli import main
from hccatom.cli_progress import StderrProgress
from hccatom.dicom import DicomStudyError, find_phases, index_study
from hccatom.dicom import index as index_module
from hccatom.dicom.index import INDEX_STAGE, InstanceInfo, SeriesInfo
from hccatom.dicom.study_run import _single_series
from hccatom.dicom.synthetic_study import SeriesPlan, default_plans, write_study
from hccatom.progress_events import ProgressEvent
from hccatom.synthetic import ScanSpec, SyntheticPatient, generate_patient

SMALL = ScanSpec(shape_yx=(32, 32), spacing_yx_mm=(12.0, 12.0), slice_thickness_mm=2.5,
                 n_slices=16)
REAL_SERIES = ("totalseg_example", "example_ct_dicom")  # README: 2.0 mm apart, tag says 3 mm


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("study")
    patient: SyntheticPatient = generate_patient(5, SMALL)
    return root, write_study(patient, root, default_plans())


def _counts(events: list[ProgressEvent]) -> list[ProgressEvent]:
    return [e for e in events if e.total > 1]


# --- progress ---------------------------------------------------------------------------
def test_every_file_is_counted_when_not_rate_limited(
        study: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "PROGRESS_INTERVAL_S", 0.0)
    events: list[ProgressEvent] = []
    idx = index_study(study[0], progress=events.append)
    assert {e.stage for e in events} == {INDEX_STAGE}
    assert (events[0].done, events[0].total) == (0, 1)  # started
    assert (events[-1].done, events[-1].total) == (1, 1)  # done
    assert events[-1].detail == f"{len(idx.series)} series"
    counts = _counts(events)
    assert [e.done for e in counts] == list(range(1, idx.n_files + 1))
    assert {e.total for e in counts} == {idx.n_files}
    found = [int(e.detail.split()[0]) for e in counts]
    assert found == sorted(found) and found[-1] == len(idx.series) == len(study[1])
    assert all(b.elapsed_s >= a.elapsed_s for a, b in itertools.pairwise(events))


def test_count_events_are_rate_limited(study: tuple[Path, dict[str, str]],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count()  # a clock advancing 0.1 s per reading: 0.5 s = 5 readings
    monkeypatch.setattr(index_module.time, "monotonic", lambda: next(ticks) * 0.1)
    events: list[ProgressEvent] = []
    idx = index_study(study[0], progress=events.append)
    counts = _counts(events)
    assert 2 <= len(counts) < idx.n_files / 3  # not one per file
    assert counts[-1].done == idx.n_files  # the last file is always reported
    gaps = [b.done - a.done for a, b in itertools.pairwise(counts[:-1])]
    assert gaps and min(gaps) >= 4


def test_progress_true_shows_lines_on_stderr(study: tuple[Path, dict[str, str]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    idx = index_study(study[0], progress=True)
    err = capsys.readouterr().err
    assert f"hccatom: index_study done: {idx.n_files} files, {len(idx.series)} series in" in err
    index_study(study[0])  # False: nothing
    index_study(study[0], progress=None)
    assert capsys.readouterr().err == ""


def test_a_bad_progress_argument_is_a_typed_error(study: tuple[Path, dict[str, str]]) -> None:
    with pytest.raises(DicomStudyError, match="progress must be True, False or a callable"):
        index_study(study[0], progress="yes")  # type: ignore[arg-type]


def test_stderr_lines_for_index_events_in_a_log_and_quiet() -> None:
    def feed(show: StderrProgress) -> None:
        show(ProgressEvent(INDEX_STAGE, 0, 1, 0.0))
        for i in range(1, 21):
            show(ProgressEvent(INDEX_STAGE, i, 20, 0.1 * i, f"{1 + i // 8} series"))
        show(ProgressEvent(INDEX_STAGE, 1, 1, 2.1, "3 series"))
        show.close()

    log = io.StringIO()
    feed(StderrProgress(log, tty=False))
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("hccatom: index_study 5/20 files, 1 series ")
    assert lines[-1].startswith("hccatom: index_study done: 20 files, 3 series in ")
    assert len(lines) == 4  # quarters, not one line per file
    tty = io.StringIO()
    feed(StderrProgress(tty, tty=True, redraw_s=0.0))
    assert "index_study 20/20 files, 3 series" in tty.getvalue()
    quiet = io.StringIO()
    feed(StderrProgress(quiet, "quiet", tty=False))
    assert quiet.getvalue() == ""


def test_find_phases_and_series_folders_forward_progress(
        study: tuple[Path, dict[str, str]]) -> None:
    events: list[ProgressEvent] = []
    find_phases(study[0], progress=events.append)
    assert events[-1] == ProgressEvent(INDEX_STAGE, 1, 1, events[-1].elapsed_s,
                                       f"{len(study[1])} series")
    folder = index_study(study[0]).by_uid(study[1]["arterial"]).instances[0].path.parent
    events.clear()
    _single_series(folder, events.append)
    assert events and events[-1].stage == INDEX_STAGE and events[-1].done == 1


# --- spacing in listings ----------------------------------------------------------------
def test_real_series_shows_position_spacing_and_the_thicker_tag(real_data: Path) -> None:
    idx = index_study(real_data.joinpath(*REAL_SERIES))
    (series,) = idx.series
    assert series.slice_thickness_mm == 3.0
    assert series.slice_spacing_mm == pytest.approx(2.0)
    assert series.spacing_text() == "spacing 2 mm (slice thickness 3 mm: overlapping slices)"
    assert "(CT, 20 slices, spacing 2 mm (slice thickness 3 mm: overlapping slices))" in (
        series.brief())
    assert idx.listing().splitlines() == ["20 files, 1 series", f"  - {series.brief()}"]


def test_equal_thickness_and_spacing_show_one_number(
        study: tuple[Path, dict[str, str]]) -> None:
    idx = index_study(study[0])
    thin, thick = idx.by_uid(study[1]["arterial"]), idx.by_uid(study[1]["arterial_thick"])
    assert thin.spacing_text() == "spacing 2.5 mm"
    assert thick.spacing_text() == "spacing 10 mm"
    localizer = idx.by_uid(study[1]["localizer"])  # one image: no spacing, the tag alone
    assert localizer.brief().endswith("(CT, 1 slices, slice thickness 1 mm)")
    assert [ln for ln in idx.listing().splitlines() if "thickness" in ln] == [
        f"  - {localizer.brief()}"]
    head = idx.listing().splitlines()[0]
    assert head == f"{idx.n_files} files, {len(idx.series)} series (1 not DICOM, 1 DICOMDIR)"
    record = find_phases(idx).arterial.record()
    assert record["slice_spacing_mm"] == pytest.approx(2.5)
    assert record["slice_thickness_mm"] == pytest.approx(2.5)


def _series(thickness: float | None, z: list[float]) -> SeriesInfo:
    s = SeriesInfo(
        series_instance_uid="1.2.3", study_instance_uid="1.2", series_number=4, modality="CT",
        image_type=("ORIGINAL",), sop_class_uid="1.2.840.10008.5.1.4.1.1.2", description="",
        protocol="", contrast_agent="", contrast_route="", contrast_start_s=None,
        series_time_s=None, slice_thickness_mm=thickness, pixel_spacing_mm=(1.0, 1.0),
        rows=2, columns=2, orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), kernel="",
        frame_of_reference_uid="")
    s.instances = [InstanceInfo(Path(f"{i}"), f"1.2.3.{i}", s.sop_class_uid, i,
                                (0.0, 0.0, zi), None, None) for i, zi in enumerate(z)]
    return s


def test_gaps_missing_tags_and_missing_positions() -> None:
    assert _series(1.0, [0.0, 5.0, 10.0]).spacing_text() == (
        "spacing 5 mm (slice thickness 1 mm: gaps between slices)")
    assert _series(None, [0.0, 0.8, 1.6]).spacing_text() == "spacing 0.8 mm"
    assert _series(5.0, [0.0]).spacing_text() == "slice thickness 5 mm"
    assert _series(None, [0.0]).spacing_text() == "spacing ? mm"


# --- hccatom study ----------------------------------------------------------------------
def test_study_command_lists_series_and_phases(
        study: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", str(study[0])]) == 0
    out, err = capsys.readouterr()
    idx = index_study(study[0])
    assert out.splitlines()[0] == idx.listing().splitlines()[0]
    assert f"series #1 UID {study[1]['localizer']} " in out and "excluded: E3-localizer" in out
    assert f"arterial: series #3 UID {study[1]['arterial']} " in out
    assert f"portal: series #5 UID {study[1]['portal']} " in out
    assert f"hccatom: index_study done: {idx.n_files} files, {len(idx.series)} series" in err
    assert main(["study", "-q", str(study[0])]) == 0
    out_q, err_q = capsys.readouterr()
    assert out_q == out and err_q == ""


def test_study_command_errors(tmp_path: Path, real_data: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["study", "-q", str(real_data.joinpath(*REAL_SERIES))]) == 2
    out, err = capsys.readouterr()
    assert "spacing 2 mm (slice thickness 3 mm: overlapping slices)" in out
    assert "hccatom: bad input: No series of the study looks like the arterial phase" in err
    plans = [SeriesPlan("arterial", "AP early", seconds_after_injection=20.0),
             SeriesPlan("arterial", "AP late", seconds_after_injection=45.0)]
    write_study(generate_patient(1, SMALL), tmp_path / "two", plans)
    assert main(["study", str(tmp_path / "two")]) == 2
    assert "2 acquisitions look like the arterial phase" in capsys.readouterr().err


def test_the_reconstruction_reason_names_the_spacing_where_it_differs() -> None:
    from hccatom.dicom.phases import _Acquisition, _choose_recon, _Vote

    vote = _Vote("arterial", 0.7, "R1-keyword", "series description has arterial keywords")
    overlapping = _Acquisition(0.0, [_series(3.0, [0.0, 2.0, 4.0, 6.0])], [vote])
    assert "; chose 3 mm slices every 2 mm, kernel class" in (
        _choose_recon("arterial", overlapping).reasons[-1])
    equal = _Acquisition(0.0, [_series(2.0, [0.0, 2.0, 4.0])], [vote])
    assert "; chose 2 mm slices, kernel class" in _choose_recon("arterial", equal).reasons[-1]


def test_study_command_verbose_shows_the_stage_start_and_the_skip_counts(
        study: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="hccatom.dicom.index"):
        assert main(["study", "-v", str(study[0])]) == 0
    err = capsys.readouterr().err
    assert "hccatom: index_study ...\n" in err  # -v: the start line too
    idx = index_study(study[0])
    assert (f"Study indexed: {idx.n_files} files, {len(idx.series)} series, 1 not DICOM, "
            "0 unreadable, 1 DICOMDIR, 0 skipped unopened") in caplog.text
    assert str(study[0]) not in caplog.text  # counts only: no folder names in the log line
