"""DICOM SR: a TID 1500 Measurement Report (highdicom Comprehensive 3D SR).

Content, per phase: liver and tumour volume (volumetric ROI groups referencing the SEG
segments), the largest tumour diameter on the key slice (planar ROI group: a POLYLINE
between the two farthest tumour pixels on the key slice's source image). Then one group
for the decision: the four SELECTION scores and their thresholds (measurements, unit
"no units"), the risk group per model, the final plan, the policy id and every fired rule
id (qualitative evaluations), referencing both key slice images.

Concepts without a standard code use the private coding scheme ``99HCCATOM`` (codes
listed in :data:`CODES`); volumes, diameter, liver and neoplasm use SNOMED CT, units UCUM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from hccatom.dicom.seg import LIVER, TUMOUR

__all__ = ["CODES", "PhaseMeasurements", "build_sr", "largest_diameter"]

SCHEME = "99HCCATOM"


def _c(value: str, meaning: str) -> Code:
    return Code(value, SCHEME, meaning)


CODES = {
    "TACE": _c("score-TACE", "SELECTION TACE score"),
    "HAIC": _c("score-HAIC", "SELECTION HAIC score"),
    "TC": _c("score-TC", "SELECTION TACE plus systemic score"),
    "HC": _c("score-HC", "SELECTION HAIC plus systemic score"),
    "threshold": _c("mss-threshold", "Maximally selected score threshold"),
    "risk": _c("risk-group", "Risk group"),
    "high": _c("high-risk", "High risk"),
    "low": _c("low-risk", "Low risk"),
    "plan": _c("final-plan", "ATOM final plan"),
    "policy": _c("atom-policy", "ATOM policy"),
    "rule": _c("fired-rule", "Fired ATOM rule"),
    "decision": _c("atom-decision", "ATOM treatment recommendation"),
}
_NO_UNITS = Code("1", "UCUM", "no units")
_CM3 = Code("cm3", "UCUM", "cubic centimeter")
_MM = Code("mm", "UCUM", "millimeter")


@dataclass(frozen=True)
class PhaseMeasurements:
    """What the SR reports about one phase."""

    phase: str
    seg: pydicom.Dataset
    key_image: pydicom.Dataset
    """Header of the source image of the key slice."""
    liver_volume_cm3: float
    tumour_volume_cm3: float
    diameter_mm: float | None
    diameter_line_rc: np.ndarray | None
    """(2, 2) (column, row) pixel coordinates of the diameter's end points on the key image."""


def largest_diameter(mask_rc: np.ndarray, spacing_rc: tuple[float, float]
                     ) -> tuple[float, np.ndarray] | None:
    """The largest lesion diameter on a slice: over the 8-connected tumour regions of
    ``mask_rc``, the largest distance (mm) between two pixel centres of one region, with
    its end points as (column, row) pairs; None for an empty mask."""
    from scipy import ndimage

    regions, n = ndimage.label(mask_rc, structure=np.ones((3, 3), dtype=bool))
    best: tuple[float, np.ndarray] | None = None
    for region in range(1, n + 1):
        found = _diameter(regions == region, spacing_rc)
        if best is None or found[0] > best[0]:
            best = found
    return best


def _diameter(mask_rc: np.ndarray, spacing_rc: tuple[float, float]
              ) -> tuple[float, np.ndarray]:
    """Feret diameter of one region (convex hull vertices first: few points)."""
    rows, cols = np.nonzero(mask_rc)
    pts = np.stack([rows * spacing_rc[0], cols * spacing_rc[1]], axis=1).astype(float)
    idx = np.arange(len(pts))
    if len(pts) > 3:
        from scipy.spatial import ConvexHull, QhullError

        try:
            idx = ConvexHull(pts).vertices
        except QhullError:  # collinear pixels
            idx = np.arange(len(pts))
    sub = pts[idx]
    d = np.linalg.norm(sub[:, None, :] - sub[None, :, :], axis=-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    a, b = idx[i], idx[j]
    line = np.array([[cols[a], rows[a]], [cols[b], rows[b]]], dtype=float)
    return float(d[i, j]), line


def _phase_groups(m: PhaseMeasurements, algorithm: hd.sr.AlgorithmIdentification
                  ) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    groups: list = []
    for number, name, finding, vol in (
        (LIVER, "liver", codes.SCT.Liver, m.liver_volume_cm3),
        (TUMOUR, "tumour", codes.SCT.Neoplasm, m.tumour_volume_cm3),
    ):
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=hd.UID(), identifier=f"{m.phase} {name} volume"),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=m.seg.SOPClassUID, sop_instance_uid=m.seg.SOPInstanceUID,
                segment_number=number, source_series=hd.sr.SourceSeriesForSegmentation(
                    m.key_image.SeriesInstanceUID)),
            finding_type=finding,
            finding_sites=[hd.sr.FindingSite(codes.SCT.Liver)],
            algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(
                name=codes.SCT.Volume, value=round(vol, 3), unit=_CM3, algorithm_id=algorithm)],
        ))
    if m.diameter_mm is not None and m.diameter_line_rc is not None:
        line = m.diameter_line_rc + 0.5  # pixel centres in the TLHC-origin frame
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=hd.UID(), identifier=f"{m.phase} largest tumour diameter on key slice"),
            referenced_region=hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=line.astype(np.float32),
                source_image=hd.sr.SourceImageForRegion.from_source_image(m.key_image)),
            finding_type=codes.SCT.Neoplasm,
            finding_sites=[hd.sr.FindingSite(codes.SCT.Liver)],
            algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(
                name=codes.SCT.Diameter, value=round(m.diameter_mm, 2), unit=_MM,
                algorithm_id=algorithm)],
        ))
    return groups


def _decision_group(
    scores: Mapping[str, tuple[float, float, str]],
    plan: str, policy_id: str, rules: Sequence[tuple[str, str]],
    key_images: Sequence[pydicom.Dataset], algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements, evaluations = [], []
    for model, (score, threshold, risk) in scores.items():
        measurements.append(hd.sr.Measurement(
            name=CODES[model], value=round(score, 6), unit=_NO_UNITS, algorithm_id=algorithm))
        measurements.append(hd.sr.Measurement(
            name=CODES["threshold"], value=round(threshold, 6), unit=_NO_UNITS,
            qualifier=CODES[model], algorithm_id=algorithm))
        evaluations.append(hd.sr.QualitativeEvaluation(
            name=_c(f"risk-{model}", f"{CODES[model].meaning} risk group"),
            value=CODES["high" if risk == "high" else "low"]))
    evaluations.append(hd.sr.QualitativeEvaluation(
        name=CODES["plan"], value=_c(plan[:64], plan[:64])))
    evaluations.append(hd.sr.QualitativeEvaluation(
        name=CODES["policy"], value=_c(policy_id[:64], policy_id[:64])))
    for rule_id, text in rules:
        evaluations.append(hd.sr.QualitativeEvaluation(
            name=CODES["rule"], value=_c(rule_id[:64], (text or rule_id)[:64])))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="ATOM decision"),
        finding_type=CODES["decision"],
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)
                       for ds in key_images],
    )


def build_sr(
    phases: Sequence[PhaseMeasurements],
    *,
    scores: Mapping[str, tuple[float, float, str]],
    plan: str,
    policy_id: str,
    rules: Sequence[tuple[str, str]],
    bundle_name: str,
    bundle_version: str,
    software_version: str,
    series_number: int,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report (see the module doc). ``scores``: model -> (score, threshold,
    risk group); ``rules``: (rule id, text) of every fired rule."""
    algorithm = hd.sr.AlgorithmIdentification(name=bundle_name, version=bundle_version)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="hccatom", manufacturer_name="hccatom",
            model_name=bundle_name[:64]))
    groups: list = []
    for m in phases:
        groups += _phase_groups(m, algorithm)
    groups.append(_decision_group(scores, plan, policy_id, rules,
                                  [m.key_image for m in phases], algorithm))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )
    evidence = [m.seg for m in phases] + [m.key_image for m in phases]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="hccatom",
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description="hccatom measurements and ATOM recommendation (research use only)",
    )
    sr.SoftwareVersions = software_version
    scheme = pydicom.Dataset()  # declare the private coding scheme
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "hccatom SELECTION/ATOM concepts"
    scheme.CodingSchemeResponsibleOrganization = "hccatom"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr
