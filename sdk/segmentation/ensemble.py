"""Ensembles of nnU-Net configurations, as ``nnUNetv2_ensemble`` combines them.

``nnunetv2/ensembling/ensemble.py``: every member (a configuration with its own folds, patch
and spacing) predicts softmax probabilities on the input grid (``--save_probabilities``:
resampled back, un-cropped with background 1 outside the crop box, transposed back); the
ensemble is their float32 mean (``average_probabilities``), the labels its argmax
(``LabelManager.convert_probabilities_to_segmentation``). Postprocessing, when
``nnUNetv2_find_best_configuration`` chose one for the ensemble, applies to those labels.

Also: how a spec's engines (one per fold, :meth:`SegmentationSpec.all_folds` order) split
into its stages and members.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from hccatom.segmentation.spec import SegmentationSpec

T = TypeVar("T")


def average_probabilities(members: Iterable[np.ndarray]) -> np.ndarray:
    """Float32 mean of members' ``(C, z, y, x)`` probabilities (``average_probabilities``).

    Sums as the members arrive (an iterable: one member's array in memory at a time)."""
    total: np.ndarray | None = None
    n = 0
    for probs in members:
        if total is None:
            total = np.array(probs, dtype=np.float32, copy=True)
        elif probs.shape != total.shape:
            raise ValueError(f"member probabilities {probs.shape} and {total.shape} differ")
        else:
            total += probs
        n += 1
    if total is None:
        raise ValueError("an ensemble needs at least one member's probabilities")
    total /= n
    return total


def tumour_confidence(probs: np.ndarray, index: np.ndarray, tumour_channel: int) -> float | None:
    """Mean max-probability over the voxels whose argmax is the tumour channel (input grid);
    None when there are none."""
    mask = index == tumour_channel
    if not mask.any():
        return None
    return float(probs.max(axis=0)[mask].mean())


@dataclass(frozen=True)
class StageParts(Generic[T]):
    """One item per fold (engines, paths) split as :meth:`SegmentationSpec.all_folds` orders
    them: the previous stage's, this configuration's, each ensemble member's."""

    previous: list[T]
    own: list[T]
    members: list[list[T]]


def split_by_stage(spec: SegmentationSpec, items: Sequence[T]) -> StageParts[T]:
    """Split ``items`` (one per fold of every stage and member) into :class:`StageParts`."""
    expected = len(spec.all_folds())
    if len(items) != expected:
        raise ValueError(f"{len(items)} items given for {expected} fold models")
    rest = list(items)
    n_prev = 0 if spec.previous_stage is None else len(spec.previous_stage.all_folds())
    previous, rest = rest[:n_prev], rest[n_prev:]
    own, rest = rest[: len(spec.folds)], rest[len(spec.folds) :]
    members = []
    for member in spec.ensemble:
        n = len(member.all_folds())
        members.append(rest[:n])
        rest = rest[n:]
    return StageParts(previous=previous, own=own, members=members)


def single_stage(spec: SegmentationSpec) -> SegmentationSpec:
    """This configuration alone: ``spec`` without its ensemble members, postprocessing kept."""
    return spec.model_copy(update={"ensemble": []})
