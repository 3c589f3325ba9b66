"""ATOM decision logic: four SELECTION scores + thresholds + policy -> a treatment decision.

Pure (standard library + pydantic). ``decide(scores)`` applies the default policy ``atom-v1``
with the paper's median survival scores (MSS) as thresholds; a bundle supplies its own
thresholds and policy. ``atom-v1`` and ``atom-v1-responder`` are two readings of the paper's
Fig. 3b / Table 3 / discussion (what each adds to the paper: ``CHOICES_NOT_IN_PAPER``);
``compare_policies`` tabulates where two policies disagree on a cohort. Neither policy is
clinically validated: research use only.
"""

from hccatom.atom.compare import PolicyComparison, compare_policies
from hccatom.atom.decision import Decision, ModelAssessment, RuleFiring, Stage1, Stage2, decide
from hccatom.atom.policy import (
    CHOICES_NOT_IN_PAPER,
    MODELS,
    NAMED_POLICIES,
    PAPER_MSS,
    PLANS,
    AtomPolicy,
    PolicyChoice,
)

__all__ = [
    "CHOICES_NOT_IN_PAPER",
    "MODELS",
    "NAMED_POLICIES",
    "PAPER_MSS",
    "PLANS",
    "AtomPolicy",
    "Decision",
    "ModelAssessment",
    "PolicyChoice",
    "PolicyComparison",
    "RuleFiring",
    "Stage1",
    "Stage2",
    "compare_policies",
    "decide",
]
