"""ATOM policy as data: the parameters of the two-stage decision, stored in a bundle.

The rule *structure* (stage 1 picks the intra-arterial therapy from the two response models,
stage 2 decides on adding systemic therapy from the matching combination survival model) is
fixed by the paper (Fig. 3b, Table 3). What the paper does not print — how to compare two
favourable scores, what happens at a tie, whether a rejected intra-arterial therapy can be
rescued by a favourable combination model — is a choice, so it lives here as data and every
bundle states the choice it was built with.

``atom-v1`` (:meth:`AtomPolicy.atom_v1`) is hccatom's reconstruction of the paper's policy.
It is **not clinically validated**; it exists so that a recommendation is reproducible and
every fired rule can be named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

#: The four SELECTION models, in the order ATOM reports them.
MODELS: Final[tuple[str, str, str, str]] = ("TACE", "HAIC", "TC", "HC")

#: Stage-1 response models (intra-arterial therapy alone) and their combination models.
RESPONSE_MODELS: Final[tuple[str, str]] = ("TACE", "HAIC")
COMBINATION_OF: Final[Mapping[str, str]] = {"TACE": "TC", "HAIC": "HC"}

#: What each model predicts (used in rationale sentences).
ENDPOINT: Final[Mapping[str, str]] = {
    "TACE": "TACE response",
    "HAIC": "HAIC response",
    "TC": "TACE + systemic 1-year survival",
    "HC": "HAIC + systemic 1-year survival",
}

#: Median survival scores (MSS) of the paper's training sets. Defaults ONLY for bundles
#: exported from the paper's own models; every bundle carries the thresholds of its models.
PAPER_MSS: Final[Mapping[str, float]] = {
    "TACE": 0.4035,
    "HAIC": 0.3368,
    "TC": 0.6130,
    "HC": 0.6458,
}

Plan = Literal["TACE", "HAIC", "TACE + systemic", "HAIC + systemic", "no intra-arterial therapy"]

#: The five final plans ATOM can recommend.
PLANS: Final[tuple[str, ...]] = (
    "TACE",
    "HAIC",
    "TACE + systemic",
    "HAIC + systemic",
    "no intra-arterial therapy",
)


class AtomPolicy(BaseModel):
    """The tunable parts of the ATOM decision (frozen, JSON-serialisable).

    * ``favourable_when``: ``">="`` (reaching the MSS counts as favourable, the paper's
      wording "reaches the MSS") or ``">"``.
    * ``margin``: how two favourable scores are compared. ``"relative"``: the distance to the
      threshold scaled by the room on that side, ``(s - m) / (1 - m)`` when favourable and
      ``(s - m) / m`` when not, so margins of models with different MSS are comparable;
      ``"absolute"``: ``s - m``.
    * ``tie_preference``: the therapy chosen when two margins are exactly equal.
    * ``rescue``: when neither response model is favourable, whether a favourable
      combination model may still recommend that therapy + systemic (a "rescue").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_id: str = Field(default="atom-v1", min_length=1, description="Name of this policy.")
    description: str = Field(
        default="ATOM two-stage policy reconstructed from the SELECTION/ATOM paper "
        "(Fig. 3b, Table 3). Not clinically validated; research use only.",
        description="What this policy is and where it comes from.",
    )
    favourable_when: Literal[">=", ">"] = Field(
        default=">=", description="Comparison of a score with its MSS that makes it favourable."
    )
    margin: Literal["relative", "absolute"] = Field(
        default="relative", description="How favourable scores of different models are compared."
    )
    tie_preference: Literal["TACE", "HAIC"] = Field(
        default="TACE", description="Therapy chosen when two compared margins are exactly equal."
    )
    rescue: bool = Field(
        default=True,
        description="Whether a favourable combination model may recommend therapy + systemic "
        "when neither response model is favourable.",
    )

    @classmethod
    def atom_v1(cls) -> AtomPolicy:
        """The default policy ``atom-v1`` (reconstructed, not clinically validated)."""
        return cls()

    def is_favourable(self, score: float, threshold: float) -> bool:
        """Whether ``score`` is on the favourable (low-risk) side of ``threshold``."""
        return score >= threshold if self.favourable_when == ">=" else score > threshold

    def margin_of(self, score: float, threshold: float) -> float:
        """Signed margin of ``score`` to ``threshold`` (>= 0 when favourable under ">=")."""
        diff = score - threshold
        if self.margin == "absolute":
            return diff
        if self.is_favourable(score, threshold):
            return diff / (1.0 - threshold)
        return diff / threshold


__all__ = [
    "COMBINATION_OF",
    "ENDPOINT",
    "MODELS",
    "PAPER_MSS",
    "PLANS",
    "RESPONSE_MODELS",
    "AtomPolicy",
    "Plan",
]
