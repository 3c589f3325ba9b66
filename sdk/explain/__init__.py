"""Explanations of SELECTION scores, off the fast path (no torch).

* attention rollout from the bundle's explain graphs (:mod:`hccatom.explain.rollout` holds
  the definition), per model and phase on the patch grid, the model image and the key
  slice (:mod:`hccatom.explain.geometry`), plus the relevance of each clinical token;
* clinical-variable attributions against the bundle's reference values
  (:mod:`hccatom.explain.attributions`): model sensitivities, not causal effects.

Use ``Predictor.explain(ct, clinical)`` or ``Predictor.recommend(..., explain=True)``.
"""

from hccatom.explain.geometry import CropGeometry, grid_to_model_image, model_image_to_source
from hccatom.explain.result import (
    ROLLOUT_NOTE,
    SENSITIVITY_NOTE,
    Attribution,
    ClinicalTokenRelevance,
    Explanation,
    ModelExplanation,
    PhaseRelevance,
)
from hccatom.explain.rollout import ExplainLayout, joint_attention, rollout, token_relevance

__all__ = [
    "ROLLOUT_NOTE",
    "SENSITIVITY_NOTE",
    "Attribution",
    "ClinicalTokenRelevance",
    "CropGeometry",
    "ExplainLayout",
    "Explanation",
    "ModelExplanation",
    "PhaseRelevance",
    "grid_to_model_image",
    "joint_attention",
    "model_image_to_source",
    "rollout",
    "token_relevance",
]
