"""ATOM decision policy: every rule, ties, scores at the MSS, invalid input, custom policies."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hccatom.atom import (
    CHOICES_NOT_IN_PAPER,
    MODELS,
    NAMED_POLICIES,
    PAPER_MSS,
    PLANS,
    AtomPolicy,
    Decision,
    compare_policies,
    decide,
)
from hccatom.errors import InputError, ScoreInputError

MSS = dict(PAPER_MSS)


def scores(tace: float, haic: float, tc: float, hc: float) -> dict[str, float]:
    return {"TACE": tace, "HAIC": haic, "TC": tc, "HC": hc}


def test_paper_defaults_are_the_published_mss() -> None:
    assert MSS == {"TACE": 0.4035, "HAIC": 0.3368, "TC": 0.6130, "HC": 0.6458}
    pol = AtomPolicy.atom_v1()
    assert pol.policy_id == "atom-v1"
    assert pol.tie_preference == "TACE"
    assert "not clinically validated" in pol.description.lower()


def test_relative_margin_definition() -> None:
    d = decide(scores(0.7, 0.2, 0.7, 0.5))
    a = d.assessments
    assert a["TACE"].margin == pytest.approx((0.7 - 0.4035) / (1 - 0.4035))
    assert a["HAIC"].margin == pytest.approx((0.2 - 0.3368) / 0.3368)
    assert a["TACE"].risk_group == "low" and a["HAIC"].risk_group == "high"
    assert a["HC"].margin == pytest.approx((0.5 - 0.6458) / 0.6458)


def test_stage1_larger_relative_margin_wins_even_with_smaller_raw_score() -> None:
    # TACE raw score is higher, but HAIC is further above its (lower) MSS in relative terms?
    # TACE: (0.55-0.4035)/0.5965 = 0.2456 ; HAIC: (0.53-0.3368)/0.6632 = 0.2913
    d = decide(scores(0.55, 0.53, 0.7, 0.7))
    assert d.stage1.therapy == "HAIC"
    assert d.stage1.rule_id == "stage1.larger-margin"
    assert d.final_plan == "HAIC + systemic"
    assert d.stage2.rule_id == "stage2.add-systemic"
    assert d.stage2.combination_model == "HC"
    text = next(r.text for r in d.rationale if r.rule_id == "stage1.larger-margin")
    assert "+0.291" in text and "+0.246" in text


def test_absolute_margin_policy_changes_the_stage1_choice() -> None:
    pol = AtomPolicy(policy_id="abs", margin="absolute")
    th = {"TACE": 0.2, "HAIC": 0.8, "TC": 0.5, "HC": 0.5}
    s = scores(0.5, 0.9, 0.6, 0.6)
    # relative: TACE 0.3/0.8 = 0.375 < HAIC 0.1/0.2 = 0.5 ; absolute: TACE 0.3 > HAIC 0.1
    assert decide(s, th).stage1.therapy == "HAIC"
    d = decide(s, th, pol)
    assert d.stage1.therapy == "TACE"
    assert d.assessments["TACE"].margin == pytest.approx(0.3)
    assert d.assessments["HAIC"].margin == pytest.approx(0.1)
    assert "absolute margin" in d.rationale[0].text


def test_stage1_only_one_favourable() -> None:
    d = decide(scores(0.30, 0.52, 0.9, 0.2))
    assert d.stage1.therapy == "HAIC"
    assert d.stage1.rule_id == "stage1.only-favourable"
    assert d.final_plan == "HAIC"
    assert d.stage2.rule_id == "stage2.alone-high-risk"
    assert d.stage2.high_risk and not d.stage2.add_systemic
    text = next(r.text for r in d.rationale if r.rule_id == "stage1.only-favourable")
    assert "0.52" in text and "0.3368" in text


def test_stage1_tace_only_then_add_systemic() -> None:
    d = decide(scores(0.45, 0.30, 0.62, 0.1))
    assert d.final_plan == "TACE + systemic"
    assert d.fired_rules[-2:] == ["stage1.only-favourable", "stage2.add-systemic"]
    assert d.stage2.combination_model == "TC"
    assert not d.stage2.high_risk and not d.stage2.rescue


def test_rescue_picks_the_larger_combination_margin() -> None:
    # TC rel margin (0.65-.613)/.387 = .0956 ; HC (0.70-.6458)/.3542 = .153 -> HAIC
    d = decide(scores(0.1, 0.1, 0.65, 0.70))
    assert d.stage1.therapy is None
    assert d.stage1.rule_id == "stage1.none-favourable"
    assert d.final_plan == "HAIC + systemic"
    assert d.stage2.rule_id == "stage2.rescue"
    assert d.stage2.rescue and d.stage2.add_systemic


def test_rescue_with_one_favourable_combination() -> None:
    d = decide(scores(0.1, 0.1, 0.62, 0.2))
    assert d.final_plan == "TACE + systemic"
    assert d.stage2.rule_id == "stage2.rescue"
    assert d.stage2.combination_model == "TC"


def test_rescue_disabled_by_policy() -> None:
    pol = AtomPolicy(policy_id="no-rescue", rescue=False)
    d = decide(scores(0.1, 0.1, 0.9, 0.9), policy=pol)
    assert d.final_plan == "no intra-arterial therapy"
    assert d.stage2.rule_id == "stage2.no-therapy"
    assert d.policy_id == "no-rescue"
    assert "does not allow a rescue" in d.rationale[-1].text


def test_nothing_favourable_means_no_intra_arterial_therapy() -> None:
    d = decide(scores(0.0, 0.0, 0.0, 0.0))
    assert d.final_plan == "no intra-arterial therapy"
    assert d.fired_rules == [
        "risk.TACE", "risk.HAIC", "risk.TC", "risk.HC",
        "stage1.none-favourable", "stage2.no-therapy",
    ]
    assert "suggested" in d.rationale[-1].text and "MDT" not in d.rationale[-1].text
    assert "suggested" in d.advice
    assert all(a.risk_group == "high" for a in d.assessments.values())
    assert d.stage2.therapy is None


def test_scores_exactly_at_mss_are_favourable_and_tie_goes_to_tace() -> None:
    d = decide(dict(MSS))
    assert all(a.favourable and a.margin == 0.0 for a in d.assessments.values())
    assert d.stage1.rule_id == "stage1.tie"
    assert d.final_plan == "TACE + systemic"


def test_strict_policy_makes_score_at_mss_unfavourable() -> None:
    pol = AtomPolicy(policy_id="strict", favourable_when=">")
    d = decide(dict(MSS), policy=pol)
    assert not any(a.favourable for a in d.assessments.values())
    assert d.final_plan == "no intra-arterial therapy"
    assert "does not exceed" in d.rationale[0].text


def test_tie_preference_haic() -> None:
    th = {"TACE": 0.5, "HAIC": 0.5, "TC": 0.5, "HC": 0.5}
    s = scores(0.7, 0.7, 0.6, 0.4)
    assert decide(s, th).final_plan == "TACE + systemic"
    d = decide(s, th, AtomPolicy(policy_id="h", tie_preference="HAIC"))
    assert d.stage1.rule_id == "stage1.tie"
    assert d.final_plan == "HAIC"  # HC 0.4 < 0.5
    assert d.stage2.rule_id == "stage2.alone-high-risk"


def test_rescue_tie() -> None:
    th = {"TACE": 0.5, "HAIC": 0.5, "TC": 0.5, "HC": 0.5}
    d = decide(scores(0.1, 0.1, 0.8, 0.8), th)
    assert d.stage2.rule_id == "stage2.rescue-tie"
    assert d.final_plan == "TACE + systemic"
    d2 = decide(scores(0.1, 0.1, 0.8, 0.8), th, AtomPolicy(tie_preference="HAIC"))
    assert d2.final_plan == "HAIC + systemic"


def test_custom_thresholds_are_used() -> None:
    s = scores(0.45, 0.30, 0.62, 0.1)
    th = {"TACE": 0.5, "HAIC": 0.25, "TC": 0.6, "HC": 0.6}
    d = decide(s, th)
    assert d.assessments["TACE"].threshold == 0.5
    assert d.stage1.therapy == "HAIC"
    assert d.final_plan == "HAIC"


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"TACE": 0.5, "HAIC": 0.5, "TC": 0.5}, "missing HC"),
        ({"TACE": 0.5, "HAIC": 0.5, "TC": 0.5, "HC": math.nan}, "HC is not finite"),
        ({"TACE": 1.2, "HAIC": 0.5, "TC": 0.5, "HC": 0.5}, "TACE = 1.2 is outside [0, 1]"),
        ({"TACE": -0.01, "HAIC": 0.5, "TC": 0.5, "HC": 0.5}, "outside [0, 1]"),
        ({"TACE": 0.5, "HAIC": "x", "TC": 0.5, "HC": 0.5}, "HAIC is not a number"),
        ({"TACE": 0.5, "HAIC": True, "TC": 0.5, "HC": 0.5}, "boolean"),
        ({"TACE": 0.5, "HAIC": 0.5, "TC": 0.5, "HC": 0.5, "XX": 0.1}, "unknown model(s) XX"),
        ({"TACE": 0.5, "HAIC": 0.5, "TC": math.inf, "HC": 0.5}, "TC is not finite"),
    ],
)
def test_invalid_scores_are_typed_errors(bad: dict[str, object], needle: str) -> None:
    with pytest.raises(ScoreInputError) as info:
        decide(bad)  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert isinstance(info.value, InputError)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ScoreInputError) as info:
        decide({"TACE": 2.0, "HAIC": math.nan})
    msg = str(info.value)
    assert "missing TC, HC" in msg and "TACE = 2.0" in msg and "HAIC is not finite" in msg


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, math.nan])
def test_invalid_thresholds(value: float) -> None:
    th = dict(MSS, TC=value)
    with pytest.raises(ScoreInputError, match="thresholds"):
        decide(dict(MSS), th)


def test_numpy_like_scalars_are_accepted() -> None:
    class Scalar:
        def __init__(self, v: float) -> None:
            self.v = v

        def __float__(self) -> float:
            return self.v

    d = decide({m: Scalar(0.9) for m in MODELS})  # type: ignore[misc]
    # relative margins: HAIC (0.9 - 0.3368) / 0.6632 = 0.849 > TACE 0.832
    assert d.final_plan == "HAIC + systemic"
    assert d.assessments["TACE"].score == 0.9


def test_policy_and_decision_json_round_trip() -> None:
    pol = AtomPolicy(policy_id="custom", tie_preference="HAIC", rescue=False, margin="absolute")
    assert AtomPolicy.model_validate_json(pol.model_dump_json()) == pol
    d = decide(scores(0.3, 0.52, 0.9, 0.7), policy=pol)
    again = Decision.model_validate_json(d.model_dump_json())
    assert again == d
    assert json.loads(d.model_dump_json())["final_plan"] == "HAIC + systemic"


def test_policy_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        AtomPolicy.model_validate({"policy_id": "x", "surprise": 1})


unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(unit, unit, unit, unit)
def test_decision_is_consistent_with_the_risk_groups(
    t: float, h: float, c: float, d_: float
) -> None:
    d = decide(scores(t, h, c, d_))
    assert d.final_plan in PLANS
    fav = {m: a.favourable for m, a in d.assessments.items()}
    for m, a in d.assessments.items():
        assert fav[m] == (a.score >= MSS[m])
        assert (a.margin >= 0) == a.favourable
        assert -1.0 <= a.margin <= 1.0
    if fav["TACE"] or fav["HAIC"]:
        assert d.final_plan != "no intra-arterial therapy"
        chosen = d.stage1.therapy
        assert chosen is not None and fav[chosen]
        combo = {"TACE": "TC", "HAIC": "HC"}[chosen]
        assert d.final_plan == (f"{chosen} + systemic" if fav[combo] else chosen)
    elif fav["TC"] or fav["HC"]:
        assert d.stage2.rescue and d.final_plan.endswith("+ systemic")
    else:
        assert d.final_plan == "no intra-arterial therapy"
    # every decision explains itself: 4 risk sentences + one per stage
    assert len(d.rationale) == 6
    assert all(r.text.endswith(".") for r in d.rationale)


# ---- atom-v1-responder and compare_policies -----------------------------------------------

RESP = AtomPolicy.atom_v1_responder()


def test_responder_policy_is_named_and_not_validated() -> None:
    assert RESP.policy_id == "atom-v1-responder"
    assert RESP.systemic_when == "no-response"
    assert "not clinically validated" in RESP.description.lower()
    assert AtomPolicy.atom_v1().systemic_when == "combination-favourable"
    assert NAMED_POLICIES["atom-v1-responder"] == RESP


def test_responder_gets_therapy_alone_even_with_favourable_combination() -> None:
    d = decide(scores(0.9, 0.1, 0.9, 0.1), policy=RESP)
    assert d.final_plan == "TACE"
    assert d.stage2.rule_id == "stage2.responder-alone"
    assert not d.stage2.add_systemic and not d.stage2.high_risk
    # the same scores under atom-v1 add systemic therapy
    assert decide(scores(0.9, 0.1, 0.9, 0.1)).final_plan == "TACE + systemic"


def test_responder_policy_rescue_and_against() -> None:
    d = decide(scores(0.1, 0.1, 0.1, 0.9), policy=RESP)
    assert d.final_plan == "HAIC + systemic"
    assert d.stage2.rule_id == "stage2.rescue"
    d = decide(scores(0.1, 0.1, 0.1, 0.1), policy=RESP)
    assert d.final_plan == "no intra-arterial therapy"
    assert d.stage2.rule_id == "stage2.no-therapy"


def test_every_policy_choice_not_in_the_paper_is_listed_for_both_policies() -> None:
    fields = {c.field for c in CHOICES_NOT_IN_PAPER}
    # every decision field of AtomPolicy (not its name/description) is a listed choice
    assert fields == set(AtomPolicy.model_fields) - {"policy_id", "description"}
    listed = RESP.choices_not_in_paper()
    assert len(listed) == len(CHOICES_NOT_IN_PAPER)
    assert any(line.startswith("systemic_when = 'no-response'") for line in listed)


def test_compare_policies_known_answer() -> None:
    table = [
        scores(0.9, 0.1, 0.9, 0.1),  # v1: TACE + systemic, responder: TACE
        scores(0.1, 0.1, 0.9, 0.1),  # both: TACE + systemic (rescue)
        scores(0.9, 0.1, 0.1, 0.1),  # both: TACE
        scores(0.0, 0.0, 0.0, 0.0),  # both: no intra-arterial therapy
        {**scores(0.1, 0.9, 0.1, 0.9), "patient": "row-4"},  # v1: HAIC + sys, resp: HAIC
    ]
    c = compare_policies(table)
    assert (c.policy_a, c.policy_b) == ("atom-v1", "atom-v1-responder")
    assert c.n_patients == 5 and c.n_disagree == 2
    assert c.disagreeing_rows == [0, 4]
    assert c.disagreement_fraction == pytest.approx(0.4)
    assert c.plans_a == {"TACE": 1, "HAIC": 0, "TACE + systemic": 2, "HAIC + systemic": 1,
                         "no intra-arterial therapy": 1}
    assert c.plans_b == {"TACE": 2, "HAIC": 1, "TACE + systemic": 1, "HAIC + systemic": 0,
                         "no intra-arterial therapy": 1}
    assert c.cross_table["TACE + systemic"]["TACE"] == 1
    assert c.cross_table["HAIC + systemic"]["HAIC"] == 1
    assert sum(sum(r.values()) for r in c.cross_table.values()) == 5
    # columns give the same answer as rows
    cols = {m: [r[m] for r in table] for m in MODELS}
    assert compare_policies(cols) == c
    assert "disagree on 2 of 5" in c.to_text()
    # a policy compared with itself never disagrees
    assert compare_policies(table, RESP, RESP).n_disagree == 0


def test_compare_policies_names_the_bad_row() -> None:
    with pytest.raises(ScoreInputError, match="row 1"):
        compare_policies([scores(0.5, 0.5, 0.5, 0.5), scores(0.5, 2.0, 0.5, 0.5)])
    with pytest.raises(ScoreInputError, match="row 0: score"):
        compare_policies([{"TACE": 0.5}])
    with pytest.raises(ScoreInputError, match="different lengths"):
        compare_policies({"TACE": [0.1], "HAIC": [0.1, 0.2], "TC": [0.1], "HC": [0.1]})
