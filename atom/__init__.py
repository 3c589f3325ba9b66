"""ATOM decision logic: four SELECTION scores + thresholds + policy -> a treatment decision.

Pure (standard library + pydantic). ``decide(scores)`` applies the default policy ``atom-v1``
with the paper's median survival scores (MSS) as thresholds; a bundle supplies its own
thresholds and policy. ``atom-v1`` is a reconstruction of the paper's published flowchart and
is not clinically validated: research use only.
"""

from hccatom.atom.decision import Decision, ModelAssessment, RuleFiring, Stage1, Stage2, decide
from hccatom.atom.policy import MODELS, PAPER_MSS, PLANS, AtomPolicy

__all__ = [
    "MODELS",
    "PAPER_MSS",
    "PLANS",
    "AtomPolicy",
    "Decision",
    "ModelAssessment",
    "RuleFiring",
    "Stage1",
    "Stage2",
    "decide",
]
