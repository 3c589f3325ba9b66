"""nnU-Net v2 postprocessing as data: keep only the largest connected component.

``nnUNetv2_find_best_configuration`` (``determine_postprocessing`` in nnU-Net's
``postprocessing/remove_connected_components.py``) may decide, on cross-validation results,
to keep only the largest connected component of the foreground and/or of single labels.
nnU-Net stores the decision as a pickle of functions (``postprocessing.pkl``) plus a JSON
summary; ``hccatom export nnunet --postprocessing`` reads it once at export time and the spec
stores it as the data below, so the runtime never unpickles.

Semantics, as nnU-Net's ``remove_all_but_largest_component_from_segmentation`` (applied by
``apply_postprocessing`` step by step, in order): the mask is the union of the step's label
values; its connected components are found with full connectivity (skimage's
``label(connectivity=None)``: 8-neighbourhood in 2-D, 26 in 3-D); every component whose size
equals the largest is kept (ties keep all of them); mask voxels of the other components become
background (0). Labels are nnU-Net's (dataset.json values = network channels); the runtime
maps them through the spec's channel -> hccatom label table, which the spec checks is exact
for every step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field, field_validator
from scipy import ndimage

from hccatom.model_base import FrozenModel

NNUNET_FUNCTION = "remove_all_but_largest_component_from_segmentation"


class KeepLargestComponent(FrozenModel):
    """One step: in the union of ``labels``, keep only the largest connected component(s)."""

    labels: list[int] = Field(
        min_length=1,
        description="nnU-Net label values (dataset.json) whose union is the mask; all "
        "foreground labels for nnU-Net's 'keep largest foreground' step, one for a per-label step.",
    )

    @field_validator("labels")
    @classmethod
    def _foreground(cls, v: list[int]) -> list[int]:
        if any(label < 1 for label in v):
            raise ValueError(f"postprocessing labels must be foreground (>= 1), got {v}")
        return sorted(set(v))


class Postprocessing(FrozenModel):
    """The postprocessing nnU-Net chose for a model, as data (applied in order)."""

    steps: list[KeepLargestComponent] = Field(default_factory=list)
    source: str = Field(
        default="",
        description="Where it was read from at export (file name), for provenance.",
    )


def keep_largest_component(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """A copy of ``labels`` where only the largest component(s) of ``isin(labels, values)``
    keep their labels; the other mask voxels become 0 (nnU-Net's function, see module doc)."""
    mask = np.isin(labels, np.asarray(values, dtype=labels.dtype))
    out = np.array(labels, copy=True)
    if not mask.any():
        return out
    # label inside the mask's bounding box only (components never leave it)
    box = tuple(
        slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(mask)
    )
    sub = mask[box]
    structure = np.ones((3,) * labels.ndim, dtype=bool)
    components, n = ndimage.label(sub, structure=structure)
    if n <= 1:
        return out
    sizes = np.bincount(components.ravel())[1:]
    keep = np.flatnonzero(sizes == sizes.max()) + 1
    drop = sub & ~np.isin(components, keep)
    region = out[box]
    region[drop] = 0
    return out


def hccatom_values(step: KeepLargestComponent, channel_to_label: Sequence[int]) -> list[int]:
    """The hccatom label values of a step's nnU-Net labels (via the channel -> label table)."""
    return sorted({int(channel_to_label[v]) for v in step.labels})


def check_mappable(post: Postprocessing, channel_to_label: Sequence[int]) -> None:
    """Raise ValueError unless every step's mask is the same in nnU-Net and hccatom labels.

    That holds when no channel outside the step maps to a label of the step (and none of the
    step's channels maps to background).
    """
    n = len(channel_to_label)
    for step in post.steps:
        if any(v >= n for v in step.labels):
            raise ValueError(f"postprocessing labels {step.labels} exceed the {n} output channels")
        ours = hccatom_values(step, channel_to_label)
        if 0 in ours:
            raise ValueError(
                f"postprocessing labels {step.labels} include a channel mapped to background"
            )
        others = [c for c in range(n) if c not in step.labels and channel_to_label[c] in ours]
        if others:
            raise ValueError(
                f"postprocessing labels {step.labels} share hccatom labels with channels "
                f"{others}; the step cannot be applied exactly after the label mapping"
            )


def apply_postprocessing(
    labels: np.ndarray, post: Postprocessing | None, channel_to_label: Sequence[int]
) -> np.ndarray:
    """Apply every step in order to an hccatom label map (returns ``labels`` when none)."""
    if post is None or not post.steps:
        return labels
    out = labels
    for step in post.steps:
        out = keep_largest_component(out, hccatom_values(step, channel_to_label))
    return out


__all__ = [
    "NNUNET_FUNCTION",
    "KeepLargestComponent",
    "Postprocessing",
    "apply_postprocessing",
    "check_mappable",
    "hccatom_values",
    "keep_largest_component",
]
