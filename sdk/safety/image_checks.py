"""Checks on the CT phases and their segmentations: typed errors and quality flags.

Errors stop the chain where a result would be meaningless: the same series or pixel data
as both phases (:class:`SamePhaseError`), no body in the image (:class:`NoBodyError`), a
liver of implausible volume (:class:`ImplausibleLiverError`), no tumour
(:class:`NoTumourError`, saying what was looked for). Flags mark results to check: tumour
below the volume floor, tumour in one phase only, the phases' tumours far apart, low
segmentation confidence, and synthetic models run on an input that is not a synthetic
phantom. Limits come from the bundle (:class:`~hccatom.safety.limits.SafetyLimits`).

A synthetic phantom is recognised by the note :data:`SYNTHETIC_PHANTOM_NOTE`, which
:func:`hccatom.synthetic.generate_patient` puts on the :class:`~hccatom.Volume` objects it
returns and the reader keeps. Nothing else counts: a phantom written to a file and read
back, or any other image, is "not recognised as a synthetic phantom", which is what the
warning says (it never claims the input is a real patient).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from hccatom.errors import (
    ImplausibleLiverError,
    NoBodyError,
    NoLiverError,
    NoTumourError,
    SamePhaseError,
)
from hccatom.phases import Phase
from hccatom.recommendation import QualityFlag
from hccatom.safety.limits import SafetyLimits
from hccatom.volume import Volume

SYNTHETIC_PHANTOM_NOTE: Final[str] = "synthetic phantom (hccatom.synthetic), not patient data"
"""The note hccatom's phantom generator leaves on every Volume it makes."""

SYNTHETIC_WARNING: Final[str] = (
    "these models were trained on synthetic data; the result has no clinical meaning "
    "(the input is not recognised as an hccatom synthetic phantom)."
)

_FINGERPRINT_SAMPLES = 1 << 16
_BODY_SLICE_STEP = 4


def is_synthetic_phantom(volume: Volume) -> bool:
    """Whether ``volume`` carries the phantom generator's marker note."""
    return SYNTHETIC_PHANTOM_NOTE in volume.notes


# --- the two phases must differ ----------------------------------------------------------
def _as_path(source: Any) -> Path | None:
    if isinstance(source, str | Path):
        try:
            return Path(source).expanduser().resolve()
        except (OSError, RuntimeError):
            return Path(source)
    return None


def check_distinct_sources(arterial: Any, portal: Any) -> None:
    """Raise :class:`SamePhaseError` when both phases are the same object, file or folder."""
    if arterial is portal and not isinstance(arterial, str | Path):
        raise SamePhaseError(
            "the same image object was given as the arterial and the portal phase; pass the "
            "two contrast phases of the study.")
    a, p = _as_path(arterial), _as_path(portal)
    if a is not None and a == p:
        raise SamePhaseError(
            f"the same file or series ({a.name}) was given as the arterial and the portal "
            "phase; pass the two contrast phases of the study.")


def pixel_fingerprint(ct: Volume) -> str:
    """A digest of the geometry and of 65,536 voxels spread evenly over the whole array.

    Equal fingerprints mean the same grid and identical values at every sampled voxel:
    for CT (noise in every voxel) that is the same pixel data. Cost: milliseconds.
    """
    arr = np.asarray(ct.array)
    flat = arr.reshape(-1)
    step = max(1, flat.size // _FINGERPRINT_SAMPLES)
    h = hashlib.sha256()
    h.update(repr((arr.shape, str(arr.dtype), ct.spacing, ct.origin, ct.direction)).encode())
    h.update(np.ascontiguousarray(flat[::step]).tobytes())
    return h.hexdigest()


def check_distinct_pixels(fingerprints: Mapping[Phase, str]) -> None:
    """Raise :class:`SamePhaseError` when both phases hold identical pixel data."""
    if len(set(fingerprints.values())) < len(fingerprints):
        raise SamePhaseError(
            "the arterial and portal phases hold identical pixel data on the same grid (the "
            "same series given twice?); pass the two contrast phases of the study.")


# --- body ---------------------------------------------------------------------------------
def check_body(ct: Volume, limits: SafetyLimits) -> float:
    """Tissue volume (mL, voxels above ``body_hu_min``); :class:`NoBodyError` below the floor.

    Estimated from every 4th slice (the z-resampled CT has thin slices): a quarter of the
    work, and a body is never thinner than a few slices.
    """
    arr = np.asarray(ct.array)
    step = _BODY_SLICE_STEP if arr.shape[0] >= 4 * _BODY_SLICE_STEP else 1
    voxel_ml = float(np.prod(ct.spacing)) / 1000.0
    n = np.count_nonzero(arr[::step] > limits.body_hu_min)
    tissue_ml = float(n) * voxel_ml * arr.shape[0] / arr[::step].shape[0]
    if tissue_ml < limits.body_min_ml:
        raise NoBodyError(
            f"the CT holds only about {tissue_ml:.0f} mL of tissue (voxels above "
            f"{limits.body_hu_min:g} HU; the bundle's minimum is {limits.body_min_ml:g} mL): "
            "it looks like air, a blank or a non-body image. Pass an abdominal contrast CT "
            "in Hounsfield units that covers the liver.")
    return tissue_ml


# --- per-phase measures -----------------------------------------------------------------------
@dataclass(frozen=True)
class PhaseMeasures:
    """What the safety checks need from one segmented phase."""

    liver_voxels: int
    """Voxels labelled liver (without tumour)."""
    tumour_voxels: int
    liver_ml: float
    """Liver including tumour (the organ), mL."""
    tumour_ml: float
    tumour_centroid_mm: tuple[float, float, float] | None
    """Tumour centroid, patient LPS coordinates (z, y, x) mm; None without tumour."""
    tumour_confidence: float | None
    synthetic_phantom: bool
    fingerprint: str
    extent_mm: tuple[float, float, float]

    @property
    def voxels(self) -> dict[str, int]:
        """Voxel count per label, as :class:`~hccatom.recommendation.PhaseReport` keeps it."""
        return {"liver": self.liver_voxels, "tumour": self.tumour_voxels}

    def report_fields(self) -> dict[str, Any]:
        """The fields :class:`~hccatom.recommendation.PhaseReport` records."""
        return {
            "liver_volume_ml": round(self.liver_ml, 3),
            "tumour_volume_ml": round(self.tumour_ml, 3),
            "tumour_centroid_mm": self.tumour_centroid_mm,
            "tumour_confidence": self.tumour_confidence,
            "synthetic_phantom": self.synthetic_phantom,
        }


def measure_phase(ct: Volume, labels: Volume, *, liver_label: int, tumour_label: int,
                  tumour_confidence: float | None = None) -> PhaseMeasures:
    """Volumes, tumour centroid (patient mm), phantom marker and fingerprint of one phase."""
    array = np.asarray(labels.array)
    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
    flat_idx = np.flatnonzero(array == tumour_label)  # a flat index list: far faster than
    n_tumour = int(flat_idx.size)  # np.nonzero's three, and the tumour is small
    n_liver = int(np.count_nonzero(array == liver_label)) + n_tumour
    centroid: tuple[float, float, float] | None = None
    if n_tumour:
        zyx = np.unravel_index(flat_idx, array.shape)
        mean_idx = np.array([float(i.mean()) for i in zyx])
        d = np.asarray(labels.direction, dtype=float)  # columns: axis unit vectors (z, y, x)
        pos = np.asarray(labels.origin) + d @ (mean_idx * np.asarray(labels.spacing))
        centroid = (float(pos[0]), float(pos[1]), float(pos[2]))
    return PhaseMeasures(
        liver_voxels=n_liver - n_tumour, tumour_voxels=n_tumour,
        liver_ml=n_liver * voxel_ml, tumour_ml=n_tumour * voxel_ml,
        tumour_centroid_mm=centroid, tumour_confidence=tumour_confidence,
        synthetic_phantom=is_synthetic_phantom(ct), fingerprint=pixel_fingerprint(ct),
        extent_mm=labels.extent_mm,
    )


def check_segmentation(m: PhaseMeasures, limits: SafetyLimits, *, tumour_label: int) -> None:
    """Typed errors for no liver, a liver of implausible volume, or no tumour."""
    scanned = " x ".join(f"{e:.0f}" for e in m.extent_mm)
    if m.liver_ml == 0:
        raise NoLiverError(
            f"the segmentation found no liver in the scanned {scanned} mm (z, y, x). Check "
            "that the CT covers the upper abdomen and is a contrast CT.")
    if not limits.liver_volume_min_ml <= m.liver_ml <= limits.liver_volume_max_ml:
        raise ImplausibleLiverError(
            f"the segmented liver is {m.liver_ml:.0f} mL, outside the bundle's plausible range "
            f"{limits.liver_volume_min_ml:g}-{limits.liver_volume_max_ml:g} mL: the image "
            "is probably not an abdominal CT covering the whole liver, or the segmentation "
            "failed on it. Check the input (body region, contrast phase, HU scaling).")
    if m.tumour_ml == 0:
        raise NoTumourError(
            f"the segmentation found no tumour: no voxel labelled tumour (label "
            f"{tumour_label}) in the {m.liver_ml:.0f} mL liver or anywhere else in the scanned "
            f"{scanned} mm (z, y, x). SELECTION needs a visible liver tumour in both phases.")


# --- flags ----------------------------------------------------------------------------------
def synthetic_input_flags(bundle_synthetic: bool, measures: Mapping[Phase, PhaseMeasures]
                          ) -> list[QualityFlag]:
    """The critical warning when synthetic models see an input that is not a phantom."""
    if not bundle_synthetic:
        return []
    other = [name for name, m in measures.items() if not m.synthetic_phantom]
    if not other:
        return []
    return [QualityFlag(
        code="synthetic_models_on_non_phantom", severity="critical",
        values={"phases_not_phantom": ", ".join(other)}, message=SYNTHETIC_WARNING)]


def image_flags(measures: Mapping[Phase, PhaseMeasures], limits: SafetyLimits
                ) -> list[QualityFlag]:
    """Small tumour volume, tumour in one phase only, tumours far apart, low confidence."""
    flags: list[QualityFlag] = []
    floor = limits.tumour_volume_min_ml
    small = [n for n, m in measures.items() if m.tumour_ml < floor]
    for name, m in measures.items():
        if name in small:
            flags.append(QualityFlag(
                code="small_tumour_volume", phase=name, severity="warning",
                values={"tumour_volume_ml": round(m.tumour_ml, 3), "limit_ml": floor},
                message=f"{name}: the segmented tumour is {m.tumour_ml:.1f} mL, below "
                f"{floor:g} mL; it may be a false detection."))
        conf = m.tumour_confidence
        if conf is not None and conf < limits.tumour_confidence_min:
            flags.append(QualityFlag(
                code="low_segmentation_confidence", phase=name, severity="warning",
                values={"tumour_confidence": round(conf, 4),
                        "limit": limits.tumour_confidence_min},
                message=f"{name}: low tumour segmentation confidence (mean probability "
                f"{conf:.2f} < {limits.tumour_confidence_min:g}); check the segmentation."))
    if len(measures) == 2 and len(small) == 1:
        seen = next(n for n in measures if n not in small)
        flags.append(QualityFlag(
            code="tumour_in_one_phase", phase=small[0], severity="warning",
            values={"phase_with_tumour": seen,
                    **{f"{n}_tumour_volume_ml": round(m.tumour_ml, 3)
                       for n, m in measures.items()}},
            message=f"a tumour is segmented in the {seen} phase only (the {small[0]} phase "
            f"has {measures[small[0]].tumour_ml:.1f} mL, below {floor:g} mL); check that "
            "both phases show the lesion."))
    cents = [m.tumour_centroid_mm for m in measures.values()]
    if len(cents) == 2 and cents[0] is not None and cents[1] is not None:
        dist = float(np.linalg.norm(np.subtract(cents[0], cents[1])))
        if dist > limits.tumour_distance_max_mm:
            flags.append(QualityFlag(
                code="tumours_far_apart", severity="warning",
                values={"distance_mm": round(dist, 2), "limit_mm": limits.tumour_distance_max_mm},
                message=f"the tumour centroids of the two phases are {dist:.0f} mm apart "
                f"(> {limits.tumour_distance_max_mm:g} mm, patient coordinates); check that "
                "both phases are of the same study and show the same lesion."))
    return flags


__all__ = [
    "SYNTHETIC_PHANTOM_NOTE",
    "SYNTHETIC_WARNING",
    "PhaseMeasures",
    "check_body",
    "check_distinct_pixels",
    "check_distinct_sources",
    "check_segmentation",
    "image_flags",
    "is_synthetic_phantom",
    "measure_phase",
    "pixel_fingerprint",
    "synthetic_input_flags",
]
