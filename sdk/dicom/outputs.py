"""Write a DICOM-study recommendation back as DICOM objects in the same study.

:func:`write_dicom` writes, into one folder:

* ``SEG_arterial.dcm``, ``SEG_portal.dcm``: liver and tumour on each source series' own
  grid, frames referencing its SOP instances (:mod:`hccatom.dicom.seg`);
* ``SR.dcm``: TID 1500 measurement report (:mod:`hccatom.dicom.sr`);
* ``REPORT_SC.dcm``: the visual report as a Secondary Capture image: the same page as
  ``rec.report(...)`` (:func:`hccatom.report.render_pixels`), burned into RGB pixels.

Every object gets new Series and SOP Instance UIDs and joins the source study: the Patient
and General Study attributes (name, ID, birth date, sex, study UID/date/time/ID, accession
number, referring physician) come from the source images and nothing else of the patient is
copied. The source's Specific Character Set is kept so names round-trip unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
import pydicom
from pydicom.tag import Tag

from hccatom.dicom.errors import DicomStudyError, no_phi_warnings
from hccatom.dicom.grid import labels_to_source
from hccatom.dicom.index import SeriesInfo
from hccatom.dicom.seg import LIVER, TUMOUR, algorithm_identification, build_seg
from hccatom.dicom.sr import PhaseMeasurements, build_sr, largest_diameter
from hccatom.path_checks import open_regular_file
from hccatom.phases import PHASES

if TYPE_CHECKING:
    from hccatom.dicom.study_run import DicomContext, PhaseData
    from hccatom.recommendation import PhaseReport, Recommendation

__all__ = ["segments_on_source", "source_headers", "write_dicom"]

_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                  "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                  "ReferringPhysicianName")


_SOURCE_TAGS = [Tag(k) for k in (
    # what the writers read from the source images; an explicit list, so that nothing else
    # of the patient (age, weight, addresses, private tags) can reach an output
    "SpecificCharacterSet", "ImageType", "SOPClassUID", "SOPInstanceUID", "StudyDate",
    "ContentDate", "StudyTime", "ContentTime", "AccessionNumber", "Modality", "Manufacturer",
    "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "SliceThickness", "SpacingBetweenSlices", "StudyInstanceUID", "SeriesInstanceUID",
    "StudyID", "SeriesNumber", "AcquisitionNumber", "InstanceNumber", "PatientOrientation",
    "ImagePositionPatient", "ImageOrientationPatient", "FrameOfReferenceUID",
    "PositionReferenceIndicator", "SamplesPerPixel", "PhotometricInterpretation",
    "NumberOfFrames", "Rows", "Columns", "PixelSpacing", "BitsAllocated", "BitsStored",
    "HighBit", "PixelRepresentation", "RescaleIntercept", "RescaleSlope",
)]


def segments_on_source(data: PhaseData, liver_label: int, tumour_label: int) -> np.ndarray:
    """Segment numbers (0, LIVER, TUMOUR) per source pixel, images in series order."""
    if data.labels is None:
        raise DicomStudyError("No labels kept for this phase; run recommend(study=...) again.")
    raw = labels_to_source(data.labels, data.grid)
    lut = np.zeros(max(256, int(raw.max()) + 1), dtype=np.uint8)
    lut[liver_label] = LIVER
    lut[tumour_label] = TUMOUR
    return lut[raw]


def source_headers(series: SeriesInfo) -> list[pydicom.Dataset]:
    """The source images' headers (the tags the writers use only), in series order.

    An empty Specific Character Set (seen in real exports) means the default repertoire and
    is dropped, as highdicom refuses the empty value.
    """
    out: list[pydicom.Dataset] = []
    for inst in series.instances:
        with open_regular_file(inst.path, "DICOM source image", error=DicomStudyError) as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=_SOURCE_TAGS)
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet
        out.append(ds)
    return out


def _headers(data: PhaseData) -> list[pydicom.Dataset]:
    return source_headers(data.grid.series)


def _key_index(data: PhaseData, report: PhaseReport) -> int:
    uid = report.source_image.sop_instance_uid if report.source_image else None
    for k, inst in enumerate(data.grid.series.instances):
        if inst.sop_instance_uid == uid:
            return k
    raise DicomStudyError("The key slice's source image is not in the chosen series.")


def _voxel_mm3(data: PhaseData) -> float:
    s = data.grid.series
    dz = s.slice_spacing_mm or s.slice_thickness_mm or 1.0
    return float(data.grid.spacing_rc[0] * data.grid.spacing_rc[1] * abs(dz))


def _join_study(ds: pydicom.Dataset, source: pydicom.Dataset) -> None:
    """Study-level attributes and character set from the source; nothing else."""
    for kw in _PATIENT_STUDY:
        if kw in source:
            setattr(ds, kw, source.data_element(kw).value)  # type: ignore[union-attr]
    if source.get("SpecificCharacterSet"):
        ds.SpecificCharacterSet = source.SpecificCharacterSet


def write_dicom(rec: Recommendation, out_dir: str | Path, *, first_series_number: int = 9001
                ) -> list[Path]:
    """Write SEG per phase, the SR and the report image into ``out_dir``; returns the paths.

    ``rec`` must come from ``Predictor.recommend(study=...)`` in this process (the labels
    live in memory, not in the JSON).
    """
    with no_phi_warnings():
        return _write(rec, Path(out_dir), first_series_number)


def _write(rec: Recommendation, out_dir: Path, first_series_number: int) -> list[Path]:
    from hccatom import __version__
    from hccatom.report import render_pixels

    ctx: DicomContext | None = rec._dicom
    if ctx is None:
        raise DicomStudyError(
            "to_dicom needs a recommendation made from a DICOM study in this process "
            "(Predictor.recommend(study=...) or hccatom recommend --study DIR --dicom-out OUT)."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    algorithm = algorithm_identification(ctx.bundle_name, ctx.bundle_version)
    written: list[Path] = []
    measured: list[PhaseMeasurements] = []
    number = first_series_number
    for phase in PHASES:
        data = ctx.phases[phase]
        report = rec.phases[phase]
        segments = segments_on_source(data, ctx.liver_label, ctx.tumour_label)
        headers = _headers(data)
        seg = build_seg(headers, segments, algorithm=algorithm, series_number=number,
                        series_description=f"hccatom liver/tumour {phase} (research use only)",
                        software_version=__version__)
        number += 1
        _join_study(seg, headers[0])
        path = out / f"SEG_{phase}.dcm"
        seg.save_as(path)
        written.append(path)
        k = _key_index(data, report)
        key_labels = segments[k]
        diam = largest_diameter(key_labels == TUMOUR, data.grid.spacing_rc)
        voxel = _voxel_mm3(data)
        measured.append(PhaseMeasurements(
            phase=phase, seg=seg, key_image=headers[k],
            liver_volume_cm3=float(np.count_nonzero(segments == LIVER)) * voxel / 1000.0,
            tumour_volume_cm3=float(np.count_nonzero(segments == TUMOUR)) * voxel / 1000.0,
            diameter_mm=diam[0] if diam else None,
            diameter_line_rc=diam[1] if diam else None,
        ))
    scores = {m: (a.score, a.threshold, a.risk_group) for m, a in rec.scores.items()}
    rules = [(r.rule_id, r.text) for r in rec.decision.rationale]
    sr = build_sr(measured, scores=scores, plan=rec.final_plan,
                  policy_id=rec.decision.policy_id, rules=rules, bundle_name=ctx.bundle_name,
                  bundle_version=ctx.bundle_version, software_version=__version__,
                  series_number=number)
    number += 1
    _join_study(sr, measured[0].key_image)
    path = out / "SR.dcm"
    sr.save_as(path)
    written.append(path)
    pixels = render_pixels(rec)  # the one report layout (hccatom.report)
    ref = measured[0].key_image
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=pixels, photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=hd.UID(),
        series_number=number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="hccatom", patient_orientation=("L", "P"),
    )
    sc.SeriesDescription = "hccatom report (research use only" + (
        ", synthetic models)" if ctx.synthetic else ")")
    sc.BurnedInAnnotation = "YES"
    sc.BodyPartExamined = "ABDOMEN"  # unpaired: Laterality (type 2C) is absent
    sc.ImageComments = ("Research use only - not for clinical decisions"
                        + ("; synthetic models" if ctx.synthetic else ""))
    _join_study(sc, ref)
    path = out / "REPORT_SC.dcm"
    sc.save_as(path)
    written.append(path)
    return written
