"""ATOM policy as data: the parameters of the two-stage decision, stored in a bundle.

The rule *structure* (stage 1 picks the intra-arterial therapy from the two response models,
stage 2 decides on adding systemic therapy from the matching combination survival model) is
fixed by the paper (Fig. 3b, Table 3). What the paper does not print — how to compare two
favourable scores, what happens at a tie, whether a rejected intra-arterial therapy can be
rescued by a favourable combination model — is a choice, so it lives here as data and every
bundle states the choice it was built with.

Two named policies ship with hccatom; both are **not clinically validated** readings of the
paper, kept so that a recommendation is reproducible and every fired rule can be named:

* ``atom-v1`` (:meth:`AtomPolicy.atom_v1`): after stage 1 picks a therapy, systemic therapy
  is added whenever that therapy's combination model is favourable, even for a predicted
  responder; "against intra-arterial therapy" is reached at stage 2 only when stage 1 also
  said against and no combination model rescues.
* ``atom-v1-responder`` (:meth:`AtomPolicy.atom_v1_responder`): the reading of the paper's
  discussion (patients predicted to respond to intra-arterial therapy alone need not add
  systemic therapy; high-risk patients get the combination). A favourable response model ->
  that therapy alone; none favourable -> the favourable combination model's therapy +
  systemic; none of those -> against intra-arterial therapy.

:data:`CHOICES_NOT_IN_PAPER` lists every choice each policy makes that the paper does not print;
:meth:`AtomPolicy.choices_not_in_paper` gives the list for one policy, with its values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

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
    * ``systemic_when``: when stage 2 adds systemic therapy. ``"combination-favourable"``
      (``atom-v1``): whenever the chosen therapy's combination model is favourable, responder
      or not. ``"no-response"`` (``atom-v1-responder``): a therapy chosen at stage 1 (a
      predicted responder) is given alone; systemic therapy is added only on the rescue path
      (no response model favourable, a combination model favourable).
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
    systemic_when: Literal["combination-favourable", "no-response"] = Field(
        default="combination-favourable",
        description="When stage 2 adds systemic therapy: 'combination-favourable' (whenever "
        "the chosen therapy's combination model is favourable) or 'no-response' (only when "
        "no response model is favourable and a combination model is; a predicted responder "
        "gets the intra-arterial therapy alone).",
    )

    @classmethod
    def atom_v1(cls) -> AtomPolicy:
        """The default policy ``atom-v1`` (reconstructed, not clinically validated)."""
        return cls()

    @model_serializer(mode="wrap")
    def _omit_default_systemic_when(self, handler: SerializerFunctionWrapHandler
                                    ) -> dict[str, Any]:
        # the default is what schema 1.0 readers do; written only when it differs, so that
        # they still load atom-v1 bundles and refuse a policy they would misapply
        data: dict[str, Any] = handler(self)
        if data.get("systemic_when") == "combination-favourable":
            data.pop("systemic_when")
        return data

    @classmethod
    def atom_v1_responder(cls) -> AtomPolicy:
        """``atom-v1-responder``: responders get the therapy alone (not clinically validated)."""
        return cls(
            policy_id="atom-v1-responder",
            description="ATOM two-stage policy read from the SELECTION/ATOM paper's discussion: "
            "a favourable response model -> that intra-arterial therapy alone; none favourable "
            "-> the favourable combination model's therapy + systemic; none of those -> against "
            "intra-arterial therapy. Not clinically validated; research use only.",
            systemic_when="no-response",
        )

    def choices_not_in_paper(self) -> tuple[str, ...]:
        """One sentence per choice this policy makes that the paper does not print."""
        return tuple(f"{c.field} = {getattr(self, c.field)!r}: {c.question}"
                     for c in CHOICES_NOT_IN_PAPER)

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


class PolicyChoice(BaseModel):
    """A choice the paper leaves open, the field that records it, and each policy's answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str = Field(description="The AtomPolicy field that records the choice.")
    question: str = Field(description="What the paper does not print.")
    atom_v1: str = Field(description="The answer of atom-v1.")
    atom_v1_responder: str = Field(description="The answer of atom-v1-responder.")


#: Every choice the two named policies make that the paper (Fig. 3b, Table 3, discussion) does
#: not print. The paper prints the two-stage structure and the four MSS thresholds only.
CHOICES_NOT_IN_PAPER: Final[tuple[PolicyChoice, ...]] = (
    PolicyChoice(
        field="favourable_when",
        question="whether a score exactly at its MSS counts as favourable (the paper says a "
        "score that 'reaches' the MSS is low risk; equality is not discussed).",
        atom_v1="'>=': at the MSS is favourable.",
        atom_v1_responder="'>=': at the MSS is favourable.",
    ),
    PolicyChoice(
        field="margin",
        question="how two favourable scores of models with different MSS are compared when "
        "both response (or both combination) models are favourable.",
        atom_v1="'relative': (s - m) / (1 - m) above the MSS, (s - m) / m below.",
        atom_v1_responder="'relative', as atom-v1.",
    ),
    PolicyChoice(
        field="tie_preference",
        question="which therapy is chosen when the compared margins are exactly equal.",
        atom_v1="TACE.",
        atom_v1_responder="TACE.",
    ),
    PolicyChoice(
        field="rescue",
        question="whether a favourable combination model may still recommend that therapy + "
        "systemic when neither response model is favourable.",
        atom_v1="yes (a 'rescue').",
        atom_v1_responder="yes: it is the only way this policy adds systemic therapy.",
    ),
    PolicyChoice(
        field="systemic_when",
        question="whether a predicted responder (favourable response model) also gets "
        "systemic therapy when the matching combination model is favourable; the "
        "discussion suggests responders need not add it, Fig. 3b runs stage 2 for everyone.",
        atom_v1="'combination-favourable': add systemic whenever the combination model is "
        "favourable, responder or not.",
        atom_v1_responder="'no-response': a responder gets the therapy alone.",
    ),
)

#: The named policies shipped with hccatom, by id.
NAMED_POLICIES: Final[Mapping[str, AtomPolicy]] = {
    "atom-v1": AtomPolicy.atom_v1(),
    "atom-v1-responder": AtomPolicy.atom_v1_responder(),
}


__all__ = [
    "CHOICES_NOT_IN_PAPER",
    "COMBINATION_OF",
    "ENDPOINT",
    "MODELS",
    "NAMED_POLICIES",
    "PAPER_MSS",
    "PLANS",
    "RESPONSE_MODELS",
    "AtomPolicy",
    "Plan",
    "PolicyChoice",
]
