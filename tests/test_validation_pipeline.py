"""Analyses, resumable scoring cache and threshold calibration of ``hccatom validate``."""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from scipy import stats

from hccatom.atom import MODELS
from hccatom.validation.analyses import ALL_SETS, analyse
from hccatom.validation.cohort import CohortCase
from hccatom.validation.errors import StatisticsInputError
from hccatom.validation.roc import auc_delong
from hccatom.validation.scoring import ScoredCase, cache_key, score_cohort

THR = dict.fromkeys(MODELS, 0.5)


def _case(line: int, treatment: str, scores: dict[str, float] | None = None,
          **kw: Any) -> CohortCase:
    return CohortCase(line=line, case_id=f"c{line}", treatment=treatment,  # type: ignore[arg-type]
                      scores=scores, **kw)


def _s(tace: float, haic: float, tc: float = 0.5, hc: float = 0.5) -> dict[str, float]:
    return {"TACE": tace, "HAIC": haic, "TC": tc, "HC": hc}


def test_table3_concordance_counts_and_fisher_both_policies() -> None:
    # TACE cases, thresholds 0.5: stage 1 picks TACE when only TACE is favourable
    cases = []
    line = 0
    for scores, n, responders in (
        (_s(0.9, 0.1), 6, 5),   # ATOM: TACE   -> consistent
        (_s(0.1, 0.9), 5, 1),   # ATOM: HAIC   -> inconsistent
        (_s(0.1, 0.1), 4, 0),   # ATOM: against intra-arterial therapy at stage 1
    ):
        for k in range(n):
            line += 1
            cases.append(ScoredCase(_case(line, "TACE", scores, response=int(k < responders),
                                          set="external"), scores, "table"))
    res = analyse(cases, THR)
    rows = {r["policy"]: r for r in res.table3 if r["model"] == "TACE"}
    assert set(rows) == {"atom-v1", "atom-v1-responder"}
    for r in rows.values():
        assert (r["consistent_events"], r["consistent_n"]) == (5, 6)
        assert (r["inconsistent_events"], r["inconsistent_n"]) == (1, 5)
        assert (r["against_events"], r["against_n"]) == (0, 4)
        assert r["p_consistent_vs_inconsistent"] == pytest.approx(
            stats.fisher_exact([[5, 1], [1, 4]]).pvalue)
        assert r["p_consistent_vs_against"] == pytest.approx(
            stats.fisher_exact([[5, 1], [0, 4]]).pvalue)
        assert r["set"] == "external" and r["total_n"] == 15


def test_table3_stage2_policies_differ() -> None:
    # TC case, TACE favourable and TC favourable: atom-v1 adds systemic (consistent with
    # "TACE + systemic"); atom-v1-responder gives TACE alone (inconsistent).
    scores = _s(0.9, 0.1, tc=0.9, hc=0.1)
    cases = [ScoredCase(_case(i, "TACE + systemic", scores, os_months=20.0, os_event=0), scores,
                        "table") for i in range(3)]
    res = analyse(cases, THR)
    rows = {r["policy"]: r for r in res.table3 if r["model"] == "TC"}
    assert rows["atom-v1"]["consistent_n"] == 3
    assert rows["atom-v1-responder"]["inconsistent_n"] == 3
    assert rows["atom-v1"]["set"] == "all"  # no external label: all cases, said in the row


def test_table2_per_set_and_pooled_rows_and_notes() -> None:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(60):
        y = int(i % 3 == 0)
        sc = float(np.clip(0.5 + 0.25 * (y - 0.4) + rng.normal(0, 0.15), 0.01, 0.99))
        scores = _s(sc, 0.3)
        cases.append(ScoredCase(_case(i, "TACE", scores, response=y if i != 59 else None,
                                      set="train" if i < 30 else "external",
                                      compare={"TACE": float(rng.random())}), scores, "table"))
    res = analyse(cases, THR)
    rows = {r["set"]: r for r in res.table2 if r["model"] == "TACE"}
    assert set(rows) == {"train", "external", ALL_SETS}
    train = [c for c in cases[:30]]
    expected = auc_delong([c.scores["TACE"] for c in train], [c.case.response for c in train])
    assert rows["train"]["auc"] == pytest.approx(expected.auc)
    assert rows["train"]["auc_ci_low"] == pytest.approx(expected.ci_low)
    assert rows["external"]["n"] == 29  # one without response
    assert rows["train"]["delong_p"] is not None
    assert any("1 case(s) without objective response" in n for n in res.notes)
    assert any(n.startswith("HAIC: no cases") for n in res.notes)
    mw = [r for r in res.mann_whitney if r["model"] == "TACE"]
    assert mw and mw[0]["p_value"] == pytest.approx(stats.mannwhitneyu(
        [c.scores["TACE"] for c in cases[:30]], [c.scores["TACE"] for c in cases[30:]],
        alternative="two-sided").pvalue)


def test_survival_rows_need_lifelines() -> None:
    pytest.importorskip("lifelines", reason="survival statistics need the validate extra")
    cases = []
    for i in range(20):
        high = i % 2 == 0
        scores = _s(0.2 if high else 0.8, 0.3)
        cases.append(ScoredCase(_case(i, "TACE", scores, response=int(not high),
                                      os_months=3.0 + i if high else 20.0 + i,
                                      os_event=1 if high or i % 4 == 1 else 0), scores, "table"))
    res = analyse(cases, THR)
    (row,) = res.survival
    assert row["n_high_risk"] == 10 and row["n_low_risk"] == 10
    assert row["logrank_p"] < 0.01 and row["hazard_ratio"] > 1


# --- scoring cache ------------------------------------------------------------------------
class _FakePredictor:
    """Stands in for Predictor: records which cases it was asked to score."""

    def __init__(self, digest: str, stop_after: int | None = None) -> None:
        self.bundle = SimpleNamespace(sha256=digest)
        self.asked: list[str] = []
        self.stop_after = stop_after

    def recommend_many(self, cases: Any, *, workers: int = 1, on_error: str = "raise") -> Any:
        from hccatom.errors import NoTumourError

        for i, c in enumerate(cases):
            if self.stop_after is not None and i >= self.stop_after:
                raise KeyboardInterrupt
            self.asked.append(c.case_id)
            if c.case_id == "bad":
                yield SimpleNamespace(index=i, recommendation=None,
                                      error=NoTumourError("no tumour found"))
                continue
            v = (int(hashlib.sha256(c.case_id.encode()).hexdigest(), 16) % 90 + 5) / 100
            rec = SimpleNamespace(scores={m: SimpleNamespace(score=v) for m in MODELS},
                                  final_plan="TACE")
            yield SimpleNamespace(index=i, recommendation=rec, error=None)


def test_scoring_cache_resumes_after_interrupt(tmp_path: Path) -> None:
    cases = [CohortCase(line=i + 2, case_id=cid, treatment="TACE")
             for i, cid in enumerate(["a", "b", "bad", "d", "e"])]
    first = _FakePredictor("digest-1", stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        score_cohort(cases, first, tmp_path)  # type: ignore[arg-type]
    assert sorted(p.name for p in (tmp_path / "cases").iterdir()) == sorted(
        f"{cache_key(c)}.json" for c in ("a", "b"))
    (tmp_path / "cases" / f"{cache_key('d')}.json").write_text("{trunc", encoding="utf-8")
    lines: list[str] = []
    second = _FakePredictor("digest-1")
    res = score_cohort(cases, second, tmp_path, note=lines.append)  # type: ignore[arg-type]
    assert second.asked == ["bad", "d", "e"]  # a, b from the cache; corrupt d rescored
    assert res.n_cached == 2 and res.n_new == 2
    assert [s.case.case_id for s in res.scored] == ["a", "b", "d", "e"]
    assert [(f.case.case_id, f.error_type) for f in res.failed] == [("bad", "NoTumourError")]
    assert "ETA" in lines[-1] and "5/5" in lines[-1]
    cached = json.loads((tmp_path / "cases" / f"{cache_key('a')}.json").read_text())
    assert cached["bundle_sha256"] == "digest-1" and cached["case_id"] == "a"
    third = _FakePredictor("digest-2")  # another bundle: nothing reused
    score_cohort(cases, third, tmp_path)  # type: ignore[arg-type]
    assert third.asked == ["a", "b", "bad", "d", "e"]


# --- calibration ------------------------------------------------------------------------------
def test_calibrated_bundle_is_new_version_and_source_untouched(tmp_path: Path) -> None:
    from hccatom.bundle.reader import load_bundle
    from hccatom.demo import demo_bundle_path
    from hccatom.validation.calibrate import write_calibrated_bundle

    src = demo_bundle_path()
    before = hashlib.sha256((src / "manifest.json").read_bytes()).hexdigest()
    scored = []
    for i, (_model, treatment) in enumerate([("TACE", "TACE"), ("HAIC", "HAIC"),
                                            ("TC", "TACE + systemic"),
                                            ("HC", "HAIC + systemic")] * 5):
        s = {m: 0.1 + 0.02 * i for m in MODELS}
        scored.append(ScoredCase(_case(i, treatment, s, set="train" if i < 16 else "external"),
                                 s, "table"))
    bundle = load_bundle(src)
    cal = write_calibrated_bundle(bundle, scored, "ab" * 32, tmp_path / "new")
    for m, t in [("TACE", "TACE"), ("HAIC", "HAIC"), ("TC", "TACE + systemic"),
                 ("HC", "HAIC + systemic")]:
        train = [s.scores[m] for s in scored if s.case.treatment == t and s.case.set == "train"]
        assert cal.thresholds[m] == pytest.approx(statistics.median(train))
        assert cal.n_train[m] == 4
    new = load_bundle(tmp_path / "new")
    assert new.manifest.thresholds == cal.thresholds
    assert new.manifest.version == bundle.manifest.version + "+site-calibrated"
    assert "ab" * 32 in new.manifest.provenance.notes
    assert not (tmp_path / "new" / "manifest.sig.json").exists()  # old signature dropped
    assert hashlib.sha256((src / "manifest.json").read_bytes()).hexdigest() == before
    with pytest.raises(StatisticsInputError, match="exists"):
        write_calibrated_bundle(bundle, scored, "ab" * 32, tmp_path / "new")
    with pytest.raises(StatisticsInputError, match="train"):
        write_calibrated_bundle(bundle, scored[16:], "ab" * 32, tmp_path / "other")
