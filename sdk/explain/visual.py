"""Glue between the Predictor's per-phase images and explanations / reports.

Keeps, for each :class:`~hccatom.Recommendation` made in this process, the key slice of
each phase (HU, labels, the model image and the crop geometry) so that ``rec.report(...)``
can draw it. They live beside the object (a registry keyed by identity, dropped when the
recommendation is garbage-collected), not in it: they are not serialised, do not take part
in equality, and a recommendation read back from JSON or copied has none.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hccatom.chain import PhaseImage
from hccatom.clinical import ClinicalVariables
from hccatom.explain.geometry import CropGeometry
from hccatom.explain.result import Explanation
from hccatom.explain.runner import ExplainMode, ExplainRun, explain_case
from hccatom.phases import Phase
from hccatom.preprocess import PreprocessSpec

if TYPE_CHECKING:
    from hccatom.predictor import Predictor
    from hccatom.recommendation import Recommendation


@dataclass(frozen=True)
class KeySlice:
    """One phase's picked slice as the report draws it."""

    hu: np.ndarray
    """(rows, columns) HU."""
    labels: np.ndarray
    """(rows, columns) labels."""
    model_image: np.ndarray
    """(H, W) first channel of the model image (normalised units)."""
    geometry: CropGeometry | None
    liver_label: int
    tumour_label: int


def geometry_of(img: PhaseImage, spec: PreprocessSpec) -> CropGeometry | None:
    """The crop geometry of one phase image (None without its key slice)."""
    if img.key_hu is None or img.spacing_yx_mm is None:
        return None
    shape = img.key_hu.shape
    return CropGeometry(
        slice_shape=(int(shape[0]), int(shape[1])), spacing_yx_mm=img.spacing_yx_mm,
        centre_yx_mm=img.crop.centre_yx_mm, box_mm=img.crop.box_mm,
        crop_px=spec.image_size_px, resize_px=spec.resize_center_crop_px,
        model_px=spec.image_size_px)


def explain_recommendation(predictor: Predictor, images: Mapping[Phase, PhaseImage],
                           clinical: ClinicalVariables, run: ExplainRun,
                           mode: ExplainMode = "variables") -> Explanation:
    """Rollout relevance and attributions for the case the predictor just scored with
    ``run`` (its SELECTION stage ran the explain graphs)."""
    from hccatom.chain import encode_clinical

    sel = predictor.bundle.manifest.selection
    clin = encode_clinical(clinical, sel.clinical_encoding, sel)
    feeds = predictor.scorer.feeds(images["arterial"].image, images["portal"].image, clin)
    geometry: dict[Phase, CropGeometry | None] = {
        n: geometry_of(img, predictor.preprocessing) for n, img in images.items()}
    return explain_case(run, feeds, images, geometry, clinical, mode)


_VISUAL: dict[int, dict[str, KeySlice]] = {}


def key_slices(rec: Recommendation) -> dict[str, KeySlice]:
    """The key slices kept for ``rec`` (empty when it was not made in this process)."""
    return _VISUAL.get(id(rec), {})


def _keep(rec: Recommendation, visual: dict[str, KeySlice]) -> None:
    key = id(rec)
    _VISUAL[key] = visual
    weakref.finalize(rec, _VISUAL.pop, key, None)


def copy_key_slices(source: Recommendation, dest: Recommendation) -> Recommendation:
    """Let ``dest`` (e.g. ``source.model_copy(update=...)``) share ``source``'s key slices."""
    if id(source) in _VISUAL:
        _keep(dest, _VISUAL[id(source)])
    return dest


def attach_visual(rec: Recommendation, images: Mapping[Phase, PhaseImage],
                  spec: PreprocessSpec) -> Recommendation:
    """Keep the key slices for ``rec`` (beside it, see the module doc) for the report."""
    visual: dict[str, KeySlice] = {}
    for name, img in images.items():
        if img.key_hu is None or img.key_labels is None:
            continue
        visual[name] = KeySlice(hu=img.key_hu, labels=img.key_labels,
                                model_image=np.asarray(img.image[0]),
                                geometry=geometry_of(img, spec),
                                liver_label=spec.liver_label, tumour_label=spec.tumour_label)
    _keep(rec, visual)
    return rec


__all__ = [
    "KeySlice",
    "attach_visual",
    "copy_key_slices",
    "explain_recommendation",
    "geometry_of",
    "key_slices",
]
