"""The recommendation chain's stages as plain functions of typed inputs and outputs.

:class:`hccatom.Predictor` only wires these together and times them; each is testable
alone. All parameters come from the bundle's specs (nothing here hard-codes a model value).

    read + z resample (prepare_phase) -> segmentation input (segmentation_input)
    -> segment (Segmenter) -> slice pick + liver crop + model image (phase_image)
    -> clinical vectors (encode_clinical) -> SELECTION scores (SelectionScorer)
    -> quality flags (quality_flags; safety checks in hccatom.safety) -> ATOM
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hccatom import memory_plan
from hccatom.atom import MODELS
from hccatom.bundle import SelectionSpec
from hccatom.bundle.specs import ClinicalEncoding, PreprocessSpec
from hccatom.clinical import ClinicalVariables
from hccatom.ct_io import read_ct
from hccatom.engines import Engine
from hccatom.errors import ClinicalInputError, EngineError, InputError
from hccatom.phases import PHASES, Phase
from hccatom.preprocess import (
    CropResult,
    SlicePick,
    crop_liver_box,
    model_image,
    pick_slice,
    resample_z,
    resize_center_crop,
    window_hu,
)
from hccatom.recommendation import PhaseReport, QualityFlag
from hccatom.safety import DEFAULT_SAFETY_LIMITS, SafetyLimits
from hccatom.volume import Volume


# --- CT ---------------------------------------------------------------------------------
def prepare_phase(source: Any, spec: PreprocessSpec, seg_spec: Any = None) -> Volume:
    """Read one phase (anything :func:`hccatom.read_ct` accepts) and resample z.

    Before resampling, the memory z resampling (and, given ``seg_spec``, segmentation) will
    need is checked against the budget (:mod:`hccatom.memory_plan`).
    """
    vol = read_ct(source)
    memory_plan.check_z_resampling(vol.shape, vol.spacing, spec.slice_thickness_mm)
    if seg_spec is not None:
        n_z = memory_plan.z_resampled_slices(vol.shape[0], vol.spacing[0],
                                             spec.slice_thickness_mm)
        memory_plan.check_segmentation(
            (n_z, vol.shape[1], vol.shape[2]),
            (spec.slice_thickness_mm, vol.spacing[1], vol.spacing[2]), seg_spec,
        )
    return resample_z(vol, spec.slice_thickness_mm, spec.z_spline_order)


def segmentation_input(ct: Volume, spec: PreprocessSpec) -> Volume:
    """The volume the segmentation model sees (windowed only where the bundle says so)."""
    if spec.apply_window_before_segmentation:
        return window_hu(ct, spec.hu_window[0], spec.hu_window[1])
    return ct


@dataclass(frozen=True)
class PhaseImage:
    """One phase's model image ``(3, H, W)`` float32 and how it was obtained."""

    image: np.ndarray
    pick: SlicePick
    crop: CropResult
    key_hu: np.ndarray | None = None
    """(rows, columns) HU of the picked slice (reports, relevance on the source slice)."""
    key_labels: np.ndarray | None = None
    """(rows, columns) labels of the picked slice."""
    spacing_yx_mm: tuple[float, float] | None = None


def phase_image(ct: Volume, labels: Volume, spec: PreprocessSpec) -> PhaseImage:
    """Slice with the largest tumour area -> liver box crop -> normalised model image."""
    pick = pick_slice(labels, spec.liver_label, spec.tumour_label)
    crop = crop_liver_box(
        ct, labels, pick.index, spec.crop_mm, spec.image_size_px, spec.pad_value_hu,
        liver_label=spec.liver_label, tumour_label=spec.tumour_label,
        order=spec.crop_interpolation_order,
    )
    image = model_image(crop, spec.hu_window, spec.norm_mean, spec.norm_std)
    if spec.resize_center_crop_px is not None:
        image = resize_center_crop(image, spec.resize_center_crop_px, spec.image_size_px)
    return PhaseImage(image=np.ascontiguousarray(image, dtype=np.float32), pick=pick, crop=crop,
                      key_hu=np.array(ct.array[pick.index], dtype=np.float32),
                      key_labels=np.array(labels.array[pick.index], dtype=np.uint8),
                      spacing_yx_mm=(float(ct.spacing[1]), float(ct.spacing[2])))


def phase_report(img: PhaseImage, labels: Volume, spec: PreprocessSpec,
                 voxels: Mapping[str, int] | None = None) -> PhaseReport:
    """The recommendation's record of one phase (``voxels``: label counts already made)."""
    array = np.asarray(labels.array)
    return PhaseReport(
        slice_index=img.pick.index,
        slice_position_mm=img.pick.z_mm,
        tumour_area_mm2=img.pick.tumour_area_mm2,
        liver_area_mm2=img.pick.liver_area_mm2,
        box_mm=img.crop.box_mm,
        liver_extent_mm=img.crop.liver_extent_mm,
        liver_touches_border=img.crop.liver_touches_border,
        box_enlarged=img.crop.box_enlarged,
        padded=img.crop.padded,
        segmentation_voxels=dict(voxels) if voxels is not None else {  # no int64 copy of
            "liver": int(np.count_nonzero(array == spec.liver_label)),  # the label map (it
            "tumour": int(np.count_nonzero(array == spec.tumour_label)),  # has ~50 M voxels)
        },
    )


# --- clinical ---------------------------------------------------------------------------
def as_clinical(clinical: Any) -> ClinicalVariables:
    """A :class:`ClinicalVariables` from itself, a mapping or a JSON file path."""
    if isinstance(clinical, ClinicalVariables):
        return clinical
    if isinstance(clinical, Mapping):
        return ClinicalVariables.from_mapping(clinical)
    if isinstance(clinical, str | Path):
        return ClinicalVariables.from_json(clinical)
    raise ClinicalInputError(
        f"clinical must be ClinicalVariables, a mapping or a JSON file path, not "
        f"{type(clinical).__name__}."
    )


def encode_clinical(clinical: ClinicalVariables, encoding: ClinicalEncoding,
                    spec: SelectionSpec) -> dict[str, np.ndarray]:
    """The three clinical feeds, batch of one, keyed by the models' input names."""
    groups = encoding.encode(clinical)
    names = {"lab": spec.io.lab, "demo": spec.io.demo, "iv": spec.io.iv}
    return {names[g]: np.asarray(v, np.float32)[None, :] for g, v in groups.items()}


# --- SELECTION --------------------------------------------------------------------------
class SelectionScorer:
    """Scores the four SELECTION models with one fused engine or four separate ones.

    Stateless between calls (engines are thread-safe), so one scorer serves many threads.
    """

    def __init__(self, spec: SelectionSpec, engines: Mapping[str, Engine]) -> None:
        self.spec = spec
        self.engines = dict(engines)
        if "fused" in self.engines:
            self.layout = "fused"
        elif all(m in self.engines for m in MODELS):
            self.layout = "separate"
        else:
            raise EngineError(
                f"SELECTION engines for {sorted(self.engines)}: need 'fused' or all of {MODELS}"
            )

    @property
    def providers(self) -> list[str]:
        """Providers of the engine(s) in use."""
        key = "fused" if self.layout == "fused" else MODELS[0]
        return list(self.engines[key].providers)

    def feeds(self, arterial: np.ndarray, portal: np.ndarray,
              clinical: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Engine feeds from (3, H, W) or (B, 3, H, W) images and the clinical feeds."""
        a = arterial[None] if arterial.ndim == 3 else arterial
        p = portal[None] if portal.ndim == 3 else portal
        return {self.spec.io.arterial: a, self.spec.io.portal: p, **clinical}

    def score(self, feeds: Mapping[str, np.ndarray]) -> list[dict[str, float]]:
        """Scores per case (one dict TACE/HAIC/TC/HC -> float per batch row)."""
        if self.layout == "fused":
            out = np.asarray(self.engines["fused"].run(feeds)[self.spec.io.fused_scores])
            cols = {m: out[:, self.spec.fused_order.index(m)] for m in MODELS}
        else:
            cols = {m: np.asarray(self.engines[m].run(feeds)[self.spec.io.score])[:, 0]
                    for m in MODELS}
        n = len(next(iter(cols.values())))
        return [{m: float(cols[m][i]) for m in MODELS} for i in range(n)]


# --- quality ----------------------------------------------------------------------------
def quality_flags(
    phases: Mapping[Phase, PhaseImage], limits: SafetyLimits | None = None
) -> list[QualityFlag]:
    """Flags for a reader: liver at the border, liver wider than the box, padding, small
    tumour on the chosen slice, chosen slices of the two phases far apart (limits: the
    bundle's :class:`~hccatom.safety.SafetyLimits`)."""
    lim = limits or DEFAULT_SAFETY_LIMITS
    flags: list[QualityFlag] = []
    for name, ph in phases.items():
        c = ph.crop
        if c.liver_touches_border:
            flags.append(QualityFlag(
                code="liver_touches_border", phase=name,
                message=f"{name}: the liver reaches the image border on slice {c.slice_index}; "
                "it may be cut off."))
        if c.box_enlarged:
            flags.append(QualityFlag(
                code="liver_wider_than_crop", phase=name,
                message=f"{name}: the liver ({c.liver_extent_mm[0]:.0f} x "
                f"{c.liver_extent_mm[1]:.0f} mm) is wider than the crop; the box was enlarged "
                f"to {c.box_mm:.0f} mm."))
        if c.padded:
            flags.append(QualityFlag(
                code="crop_padded", phase=name,
                message=f"{name}: part of the crop box lies outside the image (filled)."))
        if ph.pick.tumour_area_mm2 < lim.slice_tumour_area_min_mm2:
            flags.append(QualityFlag(
                code="small_tumour", phase=name,
                values={"tumour_area_mm2": round(ph.pick.tumour_area_mm2, 2),
                        "limit_mm2": lim.slice_tumour_area_min_mm2},
                message=f"{name}: small tumour on the chosen slice "
                f"({ph.pick.tumour_area_mm2:.0f} mm^2 < {lim.slice_tumour_area_min_mm2:g} "
                "mm^2)."))
    if "arterial" in phases and "portal" in phases:
        dz = abs(phases["arterial"].pick.z_mm - phases["portal"].pick.z_mm)
        if math.isfinite(dz) and dz > lim.slice_distance_max_mm:
            flags.append(QualityFlag(
                code="phases_far_apart",
                values={"distance_mm": round(dz, 2), "limit_mm": lim.slice_distance_max_mm},
                message=f"the chosen arterial and portal slices are {dz:.0f} mm apart "
                f"(> {lim.slice_distance_max_mm:g} mm); check that both phases show the same "
                "lesion."))
    return flags


def check_phase_keys(mapping: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` unless ``mapping`` has exactly 'arterial' and 'portal'."""
    keys = set(mapping)
    missing = sorted(set(PHASES) - keys)
    extra = sorted(keys - set(PHASES))
    if missing or extra:
        raise InputError(
            "ct needs exactly the phases 'arterial' and 'portal'"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {extra}" if extra else "")
            + "."
        )


__all__ = [
    "PhaseImage",
    "SelectionScorer",
    "as_clinical",
    "check_phase_keys",
    "encode_clinical",
    "phase_image",
    "phase_report",
    "prepare_phase",
    "quality_flags",
    "segmentation_input",
]
