"""``decide``: four SELECTION scores + thresholds + policy -> a :class:`Decision`.

Pure function of its inputs (standard library + pydantic). Every rule that fires is recorded
with a stable id and one plain sentence carrying the numbers, so a recommendation can be
audited without re-running anything.

Rule ids (``atom-v1`` and any :class:`~hccatom.atom.policy.AtomPolicy`):

* ``risk.<MODEL>`` — the risk group of each model (score vs its MSS).
* ``stage1.larger-margin`` — both response models favourable: the larger margin wins.
* ``stage1.tie`` — both favourable with exactly equal margins: the policy's tie preference.
* ``stage1.only-favourable`` — exactly one response model favourable: that therapy.
* ``stage1.none-favourable`` — neither favourable: against intra-arterial therapy alone.
* ``stage2.add-systemic`` — the chosen therapy's combination model is favourable.
* ``stage2.alone-high-risk`` — it is not: the therapy alone, flagged high risk.
* ``stage2.responder-alone`` — policy ``systemic_when="no-response"`` (``atom-v1-responder``):
  a therapy chosen at stage 1 is given alone, whatever its combination model says.
* ``stage2.rescue`` / ``stage2.rescue-tie`` — stage 1 chose none but a combination model is
  favourable (policy ``rescue``): that therapy + systemic.
* ``stage2.no-therapy`` — nothing favourable: no intra-arterial therapy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hccatom.atom.policy import (
    COMBINATION_OF,
    ENDPOINT,
    MODELS,
    PAPER_MSS,
    RESPONSE_MODELS,
    AtomPolicy,
    Plan,
)
from hccatom.errors import ScoreInputError

Therapy = Literal["TACE", "HAIC"]


class ModelAssessment(BaseModel):
    """One model's score against its threshold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    score: float = Field(description="SELECTION survival score in [0, 1].")
    threshold: float = Field(description="MSS of the model's training set, in (0, 1).")
    favourable: bool
    risk_group: Literal["low", "high"] = Field(
        description="'low' when the score is favourable for this plan, else 'high'."
    )
    margin: float = Field(description="Signed margin to the threshold, as the policy defines.")


class RuleFiring(BaseModel):
    """A rule that fired: its id and one plain sentence with the numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: str
    text: str


class Stage1(BaseModel):
    """Stage 1: which intra-arterial therapy (or none) from the two response models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    therapy: Therapy | None = Field(description="Chosen therapy, or None against it alone.")
    rule_id: str


class Stage2(BaseModel):
    """Stage 2: whether to add systemic therapy, from the combination survival models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    therapy: Therapy | None = Field(description="Intra-arterial therapy of the final plan.")
    add_systemic: bool
    combination_model: str | None = Field(description="The combination model that decided.")
    rescue: bool = Field(description="True when stage 1 chose none and stage 2 rescued.")
    high_risk: bool = Field(
        description="True when the plan carries a high-risk flag (for which intensive "
        "surveillance and multidisciplinary team review are suggested, not from the paper)."
    )
    rule_id: str


class Decision(BaseModel):
    """ATOM's decision: the final plan, both stages, each model's risk group, the rationale."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    final_plan: Plan
    stage1: Stage1
    stage2: Stage2
    assessments: dict[str, ModelAssessment] = Field(
        description="Per model (TACE, HAIC, TC, HC): score, threshold, risk group, margin."
    )
    rationale: list[RuleFiring] = Field(description="Every fired rule, in the order applied.")
    policy_id: str
    advice: str = Field(description="One sentence of follow-up advice for the final plan.")

    @property
    def fired_rules(self) -> list[str]:
        """Ids of every rule that fired, in order."""
        return [r.rule_id for r in self.rationale]


def _check_values(
    values: Mapping[str, float], what: str, *, open_interval: bool
) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise ScoreInputError(f"{what} must be a mapping from model name to a number.")
    unknown = sorted(set(values) - set(MODELS))
    missing = [m for m in MODELS if m not in values]
    problems: list[str] = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown model(s) {', '.join(map(str, unknown))}")
    out: dict[str, float] = {}
    for m in MODELS:
        if m not in values:
            continue
        raw = values[m]
        if isinstance(raw, bool):
            problems.append(f"{m} is a boolean, not a number")
            continue
        try:
            v = float(raw)  # int, float, numpy scalars
        except (TypeError, ValueError):
            problems.append(f"{m} is not a number ({type(raw).__name__})")
            continue
        if math.isnan(v) or math.isinf(v):
            problems.append(f"{m} is not finite ({v})")
        elif open_interval and not 0.0 < v < 1.0:
            problems.append(f"{m} = {v} is outside (0, 1)")
        elif not open_interval and not 0.0 <= v <= 1.0:
            problems.append(f"{m} = {v} is outside [0, 1]")
        else:
            out[m] = v
    if problems:
        raise ScoreInputError(
            f"Invalid {what}: {'; '.join(problems)}. ATOM needs one value for each of "
            f"{', '.join(MODELS)}"
            + (" strictly between 0 and 1." if open_interval else " in [0, 1].")
        )
    return out


def _assess(model: str, score: float, threshold: float, policy: AtomPolicy) -> ModelAssessment:
    fav = policy.is_favourable(score, threshold)
    return ModelAssessment(
        model=model,
        score=score,
        threshold=threshold,
        favourable=fav,
        risk_group="low" if fav else "high",
        margin=policy.margin_of(score, threshold),
    )


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _risk_sentence(a: ModelAssessment, policy: AtomPolicy) -> str:
    verb = (
        ("reaches" if policy.favourable_when == ">=" else "exceeds")
        if a.favourable
        else ("is below" if policy.favourable_when == ">=" else "does not exceed")
    )
    return (
        f"{ENDPOINT[a.model]} score {_fmt(a.score)} {verb} its MSS {_fmt(a.threshold)} "
        f"({policy.margin} margin {a.margin:+.3f}): {a.risk_group} risk."
    )


def _pick(
    candidates: list[ModelAssessment], keys: Mapping[str, Therapy], policy: AtomPolicy
) -> tuple[Therapy, bool]:
    """The therapy whose model has the larger margin; (therapy, was_tie)."""
    a, b = candidates
    if a.margin == b.margin:
        return policy.tie_preference, True
    best = a if a.margin > b.margin else b
    return keys[best.model], False


def decide(
    scores: Mapping[str, float],
    thresholds: Mapping[str, float] | None = None,
    policy: AtomPolicy | None = None,
) -> Decision:
    """Apply the ATOM policy to the four SELECTION scores.

    ``scores`` and ``thresholds`` map "TACE", "HAIC", "TC", "HC" to floats; thresholds default
    to the paper's MSS (:data:`~hccatom.atom.policy.PAPER_MSS`), ``policy`` to ``atom-v1``.
    Follow-up advice ("suggested: ...") is hccatom's wording, not the paper's.
    Raises :class:`~hccatom.errors.ScoreInputError` for a missing or unknown model, a NaN or
    infinite value, a score outside [0, 1] or a threshold outside (0, 1).
    """
    pol = policy if policy is not None else AtomPolicy.atom_v1()
    s = _check_values(scores, "scores", open_interval=False)
    t = _check_values(PAPER_MSS if thresholds is None else thresholds, "thresholds",
                      open_interval=True)
    assess = {m: _assess(m, s[m], t[m], pol) for m in MODELS}
    reach = "reaches" if pol.favourable_when == ">=" else "exceeds"
    below = "is below" if pol.favourable_when == ">=" else "does not exceed"
    rationale = [RuleFiring(rule_id=f"risk.{m}", text=_risk_sentence(assess[m], pol))
                 for m in MODELS]

    # ---- stage 1: intra-arterial therapy from the response models
    fav1 = [assess[m] for m in RESPONSE_MODELS if assess[m].favourable]
    stage1_choice: Therapy | None
    if len(fav1) == 2:
        stage1_choice, tie = _pick(fav1, {"TACE": "TACE", "HAIC": "HAIC"}, pol)
        a = fav1[0]
        if tie:
            rule1 = "stage1.tie"
            text1 = (
                f"Both response models are favourable with equal {pol.margin} margins "
                f"({a.margin:+.3f}); the policy's tie preference chooses {stage1_choice}."
            )
        else:
            other = "HAIC" if stage1_choice == "TACE" else "TACE"
            rule1 = "stage1.larger-margin"
            text1 = (
                f"Both response models are favourable; {stage1_choice} has the larger "
                f"{pol.margin} margin ({assess[stage1_choice].margin:+.3f} vs "
                f"{assess[other].margin:+.3f} for {other}): choose {stage1_choice}."
            )
    elif len(fav1) == 1:
        only = fav1[0]
        stage1_choice = "TACE" if only.model == "TACE" else "HAIC"
        other = "HAIC" if stage1_choice == "TACE" else "TACE"
        rule1 = "stage1.only-favourable"
        text1 = (
            f"Only the {stage1_choice} response score {reach} its MSS "
            f"({_fmt(only.score)} vs {_fmt(only.threshold)}; {other} "
            f"{_fmt(assess[other].score)} vs {_fmt(assess[other].threshold)}): "
            f"choose {stage1_choice}."
        )
    else:
        stage1_choice = None
        rule1 = "stage1.none-favourable"
        text1 = (
            f"Neither response score {reach} its MSS (TACE {_fmt(s['TACE'])} vs "
            f"{_fmt(t['TACE'])}, HAIC {_fmt(s['HAIC'])} vs {_fmt(t['HAIC'])}): "
            "against intra-arterial therapy alone."
        )
    rationale.append(RuleFiring(rule_id=rule1, text=text1))
    stage1 = Stage1(therapy=stage1_choice, rule_id=rule1)

    # ---- stage 2: add systemic therapy from the combination models
    plan: Plan
    if stage1_choice is not None:
        combo = assess[COMBINATION_OF[stage1_choice]]
        if pol.systemic_when == "no-response":
            rule2 = "stage2.responder-alone"
            plan = stage1_choice
            state = (f"{reach}" if combo.favourable else f"{below}")
            text2 = (
                f"A response model is favourable: {stage1_choice} alone, without systemic "
                f"therapy (policy {pol.policy_id}: predicted responders need not add it; the "
                f"{combo.model} score {_fmt(combo.score)} {state} its MSS "
                f"{_fmt(combo.threshold)} and is not used)."
            )
            advice = ("Predicted responder: the intra-arterial therapy alone; the usual "
                      "response assessment is suggested.")
            stage2 = Stage2(therapy=stage1_choice, add_systemic=False,
                            combination_model=None, rescue=False, high_risk=False,
                            rule_id=rule2)
        elif combo.favourable:
            rule2 = "stage2.add-systemic"
            plan = "TACE + systemic" if stage1_choice == "TACE" else "HAIC + systemic"
            text2 = (
                f"The {combo.model} model ({ENDPOINT[combo.model]}) score {_fmt(combo.score)} "
                f"{reach} its MSS {_fmt(combo.threshold)}: add systemic therapy to "
                f"{stage1_choice}."
            )
            advice = ("The combination; the usual response assessment is suggested.")
            stage2 = Stage2(therapy=stage1_choice, add_systemic=True,
                            combination_model=combo.model, rescue=False, high_risk=False,
                            rule_id=rule2)
        else:
            rule2 = "stage2.alone-high-risk"
            plan = stage1_choice
            text2 = (
                f"The {combo.model} model score {_fmt(combo.score)} {below} its MSS "
                f"{_fmt(combo.threshold)}: {stage1_choice} alone, flagged high risk "
                "(suggested: intensive surveillance and multidisciplinary team review)."
            )
            advice = ("High risk: intensive surveillance and multidisciplinary team review "
                      "are suggested.")
            stage2 = Stage2(therapy=stage1_choice, add_systemic=False,
                            combination_model=combo.model, rescue=False, high_risk=True,
                            rule_id=rule2)
    else:
        keys: dict[str, Therapy] = {"TC": "TACE", "HC": "HAIC"}
        fav2 = [assess[m] for m in ("TC", "HC") if assess[m].favourable]
        if pol.rescue and fav2:
            if len(fav2) == 2:
                therapy, tie = _pick(fav2, keys, pol)
            else:
                therapy, tie = keys[fav2[0].model], False
            combo = assess[COMBINATION_OF[therapy]]
            plan = "TACE + systemic" if therapy == "TACE" else "HAIC + systemic"
            if tie:
                rule2 = "stage2.rescue-tie"
                text2 = (
                    f"No response model is favourable, but both combination models are, with "
                    f"equal {pol.margin} margins ({combo.margin:+.3f}); the tie preference "
                    f"chooses {plan} (rescue)."
                )
            else:
                rule2 = "stage2.rescue"
                others = [a for a in fav2 if a.model != combo.model]
                vs = (f"; larger than {others[0].model}'s {others[0].margin:+.3f}"
                      if others else "")
                text2 = (
                    f"No response model is favourable, but the {combo.model} score "
                    f"{_fmt(combo.score)} {reach} its MSS {_fmt(combo.threshold)} "
                    f"({pol.margin} margin {combo.margin:+.3f}{vs}): {plan} as a rescue."
                )
            advice = ("Rescue recommendation (response models unfavourable): confirmation "
                      "at multidisciplinary team review is suggested.")
            stage2 = Stage2(therapy=therapy, add_systemic=True, combination_model=combo.model,
                            rescue=True, high_risk=True, rule_id=rule2)
        else:
            rule2 = "stage2.no-therapy"
            plan = "no intra-arterial therapy"
            if fav2:  # rescue disabled by the policy
                why = "the policy does not allow a rescue by a combination model"
            else:
                why = (f"neither combination score {reach} its MSS (TC {_fmt(s['TC'])} vs "
                       f"{_fmt(t['TC'])}, HC {_fmt(s['HC'])} vs {_fmt(t['HC'])})")
            text2 = (f"No response model is favourable and {why}: against intra-arterial "
                     "therapy (suggested: multidisciplinary team review of systemic therapy or "
                     "supportive care).")
            advice = ("Against intra-arterial therapy; multidisciplinary team review of systemic "
                      "therapy or supportive care is suggested.")
            stage2 = Stage2(therapy=None, add_systemic=False, combination_model=None,
                            rescue=False, high_risk=True, rule_id=rule2)
    rationale.append(RuleFiring(rule_id=rule2, text=text2))
    return Decision(
        final_plan=plan,
        stage1=stage1,
        stage2=stage2,
        assessments=assess,
        rationale=rationale,
        policy_id=pol.policy_id,
        advice=advice,
    )


__all__ = ["Decision", "ModelAssessment", "RuleFiring", "Stage1", "Stage2", "decide"]
