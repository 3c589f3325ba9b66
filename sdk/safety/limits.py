"""``SafetyLimits``: the bundle's limits behind quality flags and plausibility errors.

A bundle stores them in the optional manifest section ``safety``; a bundle without it gets
:data:`DEFAULT_SAFETY_LIMITS` and every result says so (flag ``safety_limits_default``).
They are review aids and sanity limits, not model parameters: they never change a score or a
decision, they add flags to the result or stop the chain with a typed error. ``docs/safety.md``
states each limit, its default and what its flag means.

``training_population`` holds, per clinical variable, the range (numbers) or the categories
(strings, booleans) seen in the bundle's training cohort, recorded at export. Values outside
it are flagged "outside the training population"; a bundle without it cannot be checked
(flag ``training_population_unknown``).
"""

from __future__ import annotations

import math
from typing import Final

from pydantic import Field, model_validator

from hccatom.model_base import ManifestModel


class VariableRange(ManifestModel):
    """What one clinical variable looked like in the training cohort.

    Numbers: ``min``/``max`` (inclusive). Categories (sex, BCLC stage, yes/no fields):
    ``categories``, the values seen. Exactly one of the two kinds.
    """

    min: float | None = None
    max: float | None = None
    categories: list[str | bool] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> VariableRange:
        numeric = self.min is not None or self.max is not None
        if numeric == (self.categories is not None):
            raise ValueError("give min and max (numbers) or categories, not both or neither")
        if numeric:
            if self.min is None or self.max is None:
                raise ValueError("a numeric range needs both min and max")
            if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.min > self.max:
                raise ValueError(f"range {self.min}..{self.max} must be finite with min <= max")
        return self

    def contains(self, value: object) -> bool:
        """Whether ``value`` lies in the range / is one of the categories."""
        if self.categories is not None:
            v = value.value if hasattr(value, "value") else value  # enums -> their value
            return v in self.categories
        assert self.min is not None and self.max is not None
        return isinstance(value, int | float) and self.min <= float(value) <= self.max


class TrainingPopulation(ManifestModel):
    """Per-variable ranges / categories of the training cohort, and what cohort that was."""

    description: str = Field(default="", description="The cohort, in words (no patient data).")
    n_patients: int | None = Field(default=None, ge=0)
    variables: dict[str, VariableRange] = Field(default_factory=dict)


class SafetyLimits(ManifestModel):
    """Limits the runtime checks every result against (manifest section ``safety``)."""

    body_min_ml: float = Field(
        default=300.0, ge=0,
        description="Tissue (voxels above body_hu_min) below this volume, mL: NoBodyError.")
    body_hu_min: float = Field(
        default=-500.0, description="HU above which a voxel counts as tissue (not air/lung).")
    liver_volume_min_ml: float = Field(
        default=300.0, ge=0, description="Segmented liver (incl. tumour) below this, mL: error.")
    liver_volume_max_ml: float = Field(
        default=6000.0, gt=0, description="Segmented liver (incl. tumour) above this, mL: error.")
    tumour_volume_min_ml: float = Field(
        default=4.0, ge=0,
        description="Tumour volume per phase below this (about a 2 cm sphere), mL: flag.")
    tumour_distance_max_mm: float = Field(
        default=30.0, gt=0,
        description="Tumour centroids of the two phases further apart (patient mm): flag.")
    tumour_confidence_min: float = Field(
        default=0.85, ge=0, le=1,
        description="Mean max-probability inside the tumour below this: flag.")
    slice_tumour_area_min_mm2: float = Field(
        default=100.0, ge=0,
        description="Tumour area on the chosen slice below this (about an 11 mm disc): flag.")
    slice_distance_max_mm: float = Field(
        default=20.0, gt=0,
        description="Chosen slices of the two phases further apart (z, mm): flag.")
    training_population: TrainingPopulation | None = Field(
        default=None, description="Clinical ranges of the training cohort (recorded at export).")

    @model_validator(mode="after")
    def _ordered(self) -> SafetyLimits:
        if self.liver_volume_min_ml >= self.liver_volume_max_ml:
            raise ValueError(
                f"liver_volume_min_ml ({self.liver_volume_min_ml}) must be below "
                f"liver_volume_max_ml ({self.liver_volume_max_ml})")
        return self


DEFAULT_SAFETY_LIMITS: Final[SafetyLimits] = SafetyLimits()
"""The limits used for bundles whose manifest has no ``safety`` section."""


__all__ = ["DEFAULT_SAFETY_LIMITS", "SafetyLimits", "TrainingPopulation", "VariableRange"]
