"""What an explanation returns (pydantic, JSON round trip; arrays made on demand)."""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
from pydantic import Field

from hccatom.explain.geometry import CropGeometry, grid_to_model_image, model_image_to_source
from hccatom.model_base import FrozenModel
from hccatom.phases import Phase

SENSITIVITY_NOTE: Final[str] = (
    "Attributions are model sensitivities: how this model's score changes when one input is "
    "replaced by a reference value. They are not causal effects of the variable on the "
    "patient's outcome."
)
ROLLOUT_NOTE: Final[str] = (
    "Relevance is attention rollout (head-averaged attention per layer, identity added for "
    "the residual, rows normalised, layers multiplied; the mean output token's row), a "
    "picture of where the model's attention flows, not proof of what drives the score."
)

class PhaseRelevance(FrozenModel):
    """Rollout relevance of one phase's tokens for one model."""

    grid: list[list[float]] = Field(
        description="(rows, columns) patch grid, each patch's share of the total relevance.")
    class_token: float = Field(description="Share of the phase's class token.")
    model_px: int = Field(description="Side of the model image, px.")
    geometry: CropGeometry | None = Field(
        default=None, description="How the model image was cut from the key slice.")

    @property
    def share(self) -> float:
        """Share of the whole phase (patches and class token) in the total relevance."""
        return float(np.sum(self.grid) + self.class_token)

    def on_model_image(self) -> np.ndarray:
        """(model_px, model_px) map: each pixel carries its patch's value."""
        return grid_to_model_image(np.asarray(self.grid), self.model_px)

    def on_source_slice(self) -> np.ndarray:
        """The map on the key slice's pixels (rows, columns); NaN outside the crop box."""
        if self.geometry is None:
            raise ValueError("this relevance map has no crop geometry")
        return model_image_to_source(self.on_model_image(), self.geometry)


class ClinicalTokenRelevance(FrozenModel):
    """Rollout relevance of one clinical token (one variable in its model group)."""

    group: str
    position: int
    variable: str
    relevance: float


class ModelExplanation(FrozenModel):
    """Rollout relevance for one SELECTION model."""

    score: float
    phases: dict[Phase, PhaseRelevance]
    clinical: list[ClinicalTokenRelevance] = Field(
        default_factory=list, description="Empty for image-only models.")


class Attribution(FrozenModel):
    """Score change when one variable (or one token group) is replaced by its reference."""

    variable: str = Field(description="The variable, or the group (lab, demo, iv).")
    value: str = Field(description="The patient's value, as entered.")
    reference: str = Field(description="The bundle's reference value.")
    delta: float = Field(description="score(patient) - score(variable at reference); "
                         "positive: this value raises the score (towards low risk).")
    equals_reference: bool = Field(
        default=False, description="The reference gives the model the same input (the "
        "value equals it): delta is exactly 0 and the model was not run for it.")
    variables: list[str] = Field(
        default_factory=list, description="For a group: the variables replaced together.")

    def text(self) -> str:
        """E.g. 'afp_ng_per_ml = 1210 (ref 35): -0.080 towards high risk'."""
        way = "towards low risk" if self.delta > 0 else (
            "towards high risk" if self.delta < 0 else "no change")
        if self.equals_reference:
            return f"{self.variable} = {self.value} (ref {self.reference}): 0, equals the reference"
        if self.variables:
            return (f"group {self.variable} ({len(self.variables)} variables) at reference: "
                    f"{self.delta:+.3f} {way}")
        return f"{self.variable} = {self.value} (ref {self.reference}): {self.delta:+.3f} {way}"


class Explanation(FrozenModel):
    """Rollout relevance and clinical attributions per model (TACE, HAIC, TC, HC)."""

    models: dict[str, ModelExplanation]
    attributions: dict[str, list[Attribution]] | None = Field(
        default=None, description="Per model, ranked by |delta|; None when the bundle stores "
        "no clinical reference values (see attribution_status).")
    attribution_status: str
    attribution_level: Literal["variables", "groups"] | None = Field(
        default=None, description="One row per variable or per token group; None when no "
        "attributions were computed.")
    rollout_note: str = ROLLOUT_NOTE
    sensitivity_note: str = SENSITIVITY_NOTE


__all__ = [
    "ROLLOUT_NOTE",
    "SENSITIVITY_NOTE",
    "Attribution",
    "ClinicalTokenRelevance",
    "Explanation",
    "ModelExplanation",
    "PhaseRelevance",
]
