"""``Predictor.recommend(study=...)``: a DICOM study through the chain.

find phases -> read both series -> check they differ -> the usual chain (labels kept) ->
name the chosen slices by their source images, flag phases that may be swapped, record the
chosen series, keep what :func:`hccatom.dicom.outputs.write_dicom` needs.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hccatom.dicom import require_extra
from hccatom.dicom.errors import DicomStudyError, PhaseConflictError
from hccatom.dicom.grid import SourceGrid, internal_point, read_series
from hccatom.dicom.index import StudyIndex, index_study
from hccatom.dicom.phases import PhaseChoice, PhaseSelection, eligibility, find_phases
from hccatom.phases import PHASES, Phase
from hccatom.recommendation import (
    InputSeries,
    QualityFlag,
    Recommendation,
    SourceImage,
)
from hccatom.volume import Volume

if TYPE_CHECKING:
    from hccatom.explain.runner import ExplainMode
    from hccatom.predictor import Predictor
    from hccatom.progress_events import ProgressCallback

__all__ = ["DicomContext", "PhaseData", "crop_to_labels", "liver_mean_hu", "recommend_folders",
           "recommend_study", "swap_flag"]


@dataclass
class PhaseData:
    """One phase of a DICOM-study recommendation: source grid and our labels."""

    grid: SourceGrid
    labels: Volume | None = None
    """Labels on the internal grid (z resampled, LPS), cropped to their non-zero box."""
    internal_grid: Volume | None = None
    """The whole internal grid's geometry (a 1-voxel array): slice indices refer to it."""
    liver_mean_hu: float | None = None


@dataclass
class DicomContext:
    """What the DICOM writers need beyond the Recommendation (kept in memory only)."""

    selection: PhaseSelection
    phases: dict[Phase, PhaseData]
    liver_label: int
    tumour_label: int
    bundle_name: str
    bundle_version: str
    synthetic: bool


def liver_mean_hu(ct: Volume, labels: Volume, liver_label: int) -> float | None:
    """Mean HU of liver parenchyma (the liver label, tumour excluded); None if no liver."""
    mask = np.asarray(labels.array) == liver_label
    if not mask.any():
        return None
    return float(np.asarray(ct.array)[mask].mean(dtype=np.float64))


def crop_to_labels(labels: Volume) -> Volume:
    """The label volume cropped to the bounding box of its non-zero voxels (same physical
    placement). A recommendation keeps these for DICOM output: a few MB, not the whole grid."""
    array = np.asarray(labels.array)
    starts, stops = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        (hit,) = np.nonzero(array.any(axis=other))
        if hit.size == 0:
            return labels
        starts.append(int(hit[0]))
        stops.append(int(hit[-1]) + 1)
    box = array[starts[0]:stops[0], starts[1]:stops[1], starts[2]:stops[2]].copy()
    step = np.asarray(labels.direction, dtype=float) * np.asarray(labels.spacing)[None, :]
    origin = np.asarray(labels.origin, dtype=float) + step @ np.asarray(starts, dtype=float)
    return labels.with_array(box, origin=tuple(float(v) for v in origin))


def swap_flag(arterial_hu: float | None, portal_hu: float | None) -> QualityFlag | None:
    """The "phases may be swapped" flag: portal liver parenchyma should enhance more."""
    if arterial_hu is None or portal_hu is None or portal_hu > arterial_hu:
        return None
    return QualityFlag(
        code="phases_may_be_swapped",
        message=f"phases may be swapped: liver parenchyma is {arterial_hu:.0f} HU in the "
        f"arterial and {portal_hu:.0f} HU in the portal series (portal-venous liver should "
        "enhance more). Check the series choice (input_series) and pass arterial=/portal= "
        "explicitly if needed.",
    )


def _read_pair(selection: PhaseSelection, workers: int) -> dict[Phase, Volume]:
    series = {p: selection.choice(p).series for p in PHASES}
    if workers > 1:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="hccatom-dicom") as pool:
            futures = {p: pool.submit(read_series, s) for p, s in series.items()}
            return {p: f.result() for p, f in futures.items()}
    return {p: read_series(s) for p, s in series.items()}


def _check_different(volumes: dict[Phase, Volume], selection: PhaseSelection) -> None:
    a, p = volumes["arterial"], volumes["portal"]
    if a.shape == p.shape and np.array_equal(np.asarray(a.array), np.asarray(p.array)):
        raise PhaseConflictError(
            f"The arterial ({selection.arterial.series.brief()}) and portal "
            f"({selection.portal.series.brief()}) series hold identical pixel data; the two "
            "phases must be different acquisitions. Choose with arterial=/portal=.",
            [selection.arterial.series, selection.portal.series])


def recommend_study(
    predictor: Predictor,
    study: str | Path | StudyIndex,
    clinical: Any,
    *,
    arterial: str | None = None,
    portal: str | None = None,
    progress: ProgressCallback | None = None,
    explain: bool | ExplainMode = False,
) -> Recommendation:
    """:meth:`Predictor.recommend` for a DICOM study folder (see the module doc)."""
    from hccatom.predictor import _Timer

    require_extra()
    t0 = time.perf_counter()
    timer = _Timer(progress)
    with timer.stage("find_phases"):  # the index reports files read (index_study events)
        selection = find_phases(study, arterial=arterial, portal=portal, progress=progress)
    return _run(predictor, selection, clinical, timer, t0, explain)


def _single_series(folder: Path, progress: ProgressCallback | None = None
                   ) -> PhaseChoice | None:
    """The explicit choice of a folder's only series, or None when it is not exactly one
    usable CT series (the ordinary chain then reads it and reports what is wrong)."""
    try:
        index = index_study(folder, progress=progress)
    except DicomStudyError:
        return None
    if len(index.series) != 1:
        return None
    series = index.series[0]
    why = eligibility(series)
    if why is not None and not why.startswith(("E4", "E5")):
        return None
    return PhaseChoice(phase="arterial", series=series, confidence=1.0, rules=("explicit",),
                       reasons=("the folder given for this phase",))


def recommend_folders(
    predictor: Predictor,
    folders: dict[Phase, Path],
    clinical: Any,
    *,
    progress: ProgressCallback | None = None,
    explain: bool | ExplainMode = False,
) -> Recommendation | None:
    """``recommend`` for one DICOM series folder per phase, with slices named by their
    source images and DICOM output available; None when a folder is not exactly one CT
    series (the caller then runs the ordinary chain)."""
    from dataclasses import replace

    from hccatom.predictor import _Timer

    t0 = time.perf_counter()
    timer = _Timer(progress)
    with timer.stage("find_phases"):
        choices = {p: _single_series(folders[p], progress) for p in PHASES}
    art, por = choices["arterial"], choices["portal"]
    if art is None or por is None:
        return None
    selection = PhaseSelection(
        arterial=art, portal=replace(por, phase="portal"),
        index=StudyIndex(root=folders["arterial"], series=[art.series, por.series], n_files=0,
                         skipped_non_dicom=0, skipped_dicomdir=0, unreadable=0),
        excluded={})
    if art.series.series_instance_uid == por.series.series_instance_uid:
        raise PhaseConflictError(
            f"The arterial and portal folders hold the same series ({art.series.brief()}).",
            [art.series])
    return _run(predictor, selection, clinical, timer, t0, explain)


def _run(predictor: Predictor, selection: PhaseSelection, clinical: Any, timer: Any,
         t0: float, explain: bool | ExplainMode = False) -> Recommendation:
    """Read the chosen series, run the chain, name slices, flag, keep DICOM context."""
    with timer.stage("read_dicom"):
        volumes = _read_pair(selection, predictor.phase_workers)
        _check_different(volumes, selection)
    spec = predictor.preprocessing
    data = {p: PhaseData(grid=SourceGrid.of(selection.choice(p).series)) for p in PHASES}

    def keep(name: Phase, ct: Volume, labels: Volume) -> None:
        data[name].labels = crop_to_labels(labels)
        data[name].internal_grid = Volume.from_array(  # geometry only (for slice indices)
            np.zeros((1, 1, 1), np.uint8), labels.spacing, origin=labels.origin,
            direction=labels.direction)
        data[name].liver_mean_hu = liver_mean_hu(ct, labels, spec.liver_label)

    rec = predictor._recommend({"arterial": volumes["arterial"], "portal": volumes["portal"]},
                               clinical, timer, keep, explain=explain)
    del volumes
    phases = dict(rec.phases)
    for name in PHASES:
        internal = data[name].internal_grid
        assert internal is not None
        grid = data[name].grid
        point = internal_point(internal, (float(phases[name].slice_index), 0.0, 0.0))
        src = grid.nearest_slice(point)
        phases[name] = phases[name].model_copy(update={"source_image": SourceImage(
            series_instance_uid=grid.series.series_instance_uid,
            sop_instance_uid=src.sop_instance_uid, instance_number=src.instance_number,
            distance_mm=round(src.distance_mm, 3))})
    flags = list(rec.quality_flags)
    swapped = swap_flag(data["arterial"].liver_mean_hu, data["portal"].liver_mean_hu)
    if swapped is not None:
        flags.append(swapped)
    timings = dict(rec.timings_ms)
    timings["total"] = (time.perf_counter() - t0) * 1000.0
    out = rec.model_copy(update={
        "phases": phases, "quality_flags": flags, "timings_ms": timings,
        "input_series": {p: InputSeries(**selection.choice(p).record()) for p in PHASES},
    })
    out._dicom = DicomContext(
        selection=selection, phases=data, liver_label=spec.liver_label,
        tumour_label=spec.tumour_label, bundle_name=rec.bundle.name,
        bundle_version=rec.bundle.version, synthetic=rec.bundle.synthetic)
    from hccatom.explain.visual import copy_key_slices

    return copy_key_slices(rec, out)  # the report draws the key slices
