"""Scoring a cohort with :meth:`Predictor.recommend_many`, with a resumable per-case cache.

Each scored case is written as ``<out>/cases/<key>.json`` (key: sha256 of the case id, so
file names carry no identifiers) the moment it finishes, atomically (temporary file +
rename), together with the bundle digest and a digest of the case's image inputs (CT paths,
or DICOM study folder and chosen series UIDs): an entry is reused only when both match. A
rerun with the same bundle reuses every cached case and scores only the rest, so an
interrupted run of thousands of cases continues where it stopped. Cases with precomputed
scores in the table are not scored. Failed cases are returned with their error (never
dropped) and are retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hccatom.atom import MODELS
from hccatom.safe_json import JSONLimits, load_limited
from hccatom.validation.cohort import CohortCase

if TYPE_CHECKING:
    from hccatom.predictor import Predictor


@dataclass(frozen=True)
class ScoredCase:
    """The four scores of one case and where they came from."""

    case: CohortCase
    scores: dict[str, float]
    source: str  # "table", "cache" or "scored"


@dataclass(frozen=True)
class FailedCase:
    """A case that could not be scored, with its typed error's class and message."""

    case: CohortCase
    error_type: str
    message: str


@dataclass(frozen=True)
class ScoringResult:
    """Scored and failed cases, in table order."""

    scored: list[ScoredCase]
    failed: list[FailedCase]
    n_cached: int
    n_new: int
    seconds: float


CACHE_JSON_LIMITS = JSONLimits(max_bytes=64 << 10, max_depth=4, max_number_chars=40)
"""A cache entry is one flat object of a few hundred bytes; anything else is scored again."""


def cache_key(case_id: str) -> str:
    """File stem of a case's cache entry (no identifier in the name)."""
    return hashlib.sha256(case_id.encode("utf-8")).hexdigest()[:24]


def inputs_digest(case: CohortCase) -> str:
    """Digest of what a case's scores depend on besides the bundle: its image inputs."""
    parts = [str(case.arterial), str(case.portal), str(case.study),
             str(case.arterial_series_uid), str(case.portal_series_uid)]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:24]


def _read_cache(path: Path, case: CohortCase, bundle_sha256: str) -> dict[str, float] | None:
    try:
        data = load_limited(path, CACHE_JSON_LIMITS)
    except (OSError, ValueError):  # JSONLimitError is a ValueError
        return None  # absent or half-written by an interrupted run: score again
    if not isinstance(data, dict) or data.get("case_id") != case.case_id \
            or data.get("bundle_sha256") != bundle_sha256 \
            or data.get("inputs") != inputs_digest(case):
        return None
    scores = data.get("scores")
    if not isinstance(scores, dict) or set(scores) != set(MODELS):
        return None
    return {m: float(scores[m]) for m in MODELS}


def _write_cache(path: Path, case: CohortCase, bundle_sha256: str, scores: dict[str, float],
                 final_plan: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"case_id": case.case_id, "bundle_sha256": bundle_sha256,
                               "inputs": inputs_digest(case), "scores": scores,
                               "final_plan": final_plan}, indent=1),
                   encoding="utf-8")
    os.replace(tmp, path)


class EtaProgress:
    """``scored 12/40 cases (3 cached, 1 failed), 2.1 s/case, ETA 59 s``.

    With ``live`` (a terminal's status line, redrawn in place) every case redraws it and
    only the last count is also written as a line through ``note``; without it, plain
    ``note`` lines, at most one per ``every_s`` (always the last).
    """

    def __init__(self, total: int, note: Callable[[str], None], every_s: float = 2.0,
                 live: Callable[[str], None] | None = None) -> None:
        self.total, self.note, self.every_s, self.live = total, note, every_s, live
        self.t0 = time.monotonic()
        self.last = -1e9

    def __call__(self, done: int, failed: int, cached: int) -> None:
        """Report after each case."""
        now = time.monotonic()
        new = done - cached
        rate = (now - self.t0) / new if new else 0.0
        eta = rate * (self.total - done)
        text = (f"scored {done}/{self.total} cases ({cached} cached, {failed} failed), "
                f"{rate:.1f} s/case, ETA {eta:.0f} s")
        if self.live is not None:
            self.live(text if done < self.total else "")
            if done < self.total:
                return
        elif done < self.total and now - self.last < self.every_s:
            return
        self.last = now
        self.note(text)


def score_cohort(
    cases: tuple[CohortCase, ...] | list[CohortCase],
    predictor: Predictor | None,
    out_dir: Path,
    *,
    workers: int = 1,
    note: Callable[[str], None] = lambda _t: None,
    live: Callable[[str], None] | None = None,
) -> ScoringResult:
    """Scores for every case: the table's, the cache's, or new ones from ``predictor``.

    ``note`` gets progress lines; ``live`` (on a terminal) a status text redrawn in place.
    """
    t0 = time.perf_counter()
    cache_dir = out_dir / "cases"
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = predictor.bundle.sha256 if predictor is not None else ""
    by_line: dict[int, ScoredCase] = {}
    todo: list[CohortCase] = []
    n_cached = 0
    for c in cases:
        if c.scores is not None:
            by_line[c.line] = ScoredCase(c, dict(c.scores), "table")
            continue
        hit = _read_cache(cache_dir / f"{cache_key(c.case_id)}.json", c, digest) \
            if predictor is not None else None
        if hit is not None:
            by_line[c.line] = ScoredCase(c, hit, "cache")
            n_cached += 1
        else:
            todo.append(c)
    failed: list[FailedCase] = []
    if todo and predictor is None:
        failed = [FailedCase(c, "NoBundle", "no bundle to score this case (no score_* columns)")
                  for c in todo]
        todo = []
    progress = EtaProgress(len(todo) + n_cached, note, live=live)
    if todo:
        assert predictor is not None
        from hccatom.predictor import Case

        def items() -> Iterator[Case]:
            for c in todo:
                if c.study is not None:
                    yield Case(ct=None, study=c.study, arterial=c.arterial_series_uid,
                               portal=c.portal_series_uid, clinical=c.clinical,  # type: ignore[arg-type]
                               case_id=c.case_id)
                else:
                    yield Case(ct={"arterial": c.arterial, "portal": c.portal},
                               clinical=c.clinical, case_id=c.case_id)  # type: ignore[arg-type]

        done = n_cached
        for res in predictor.recommend_many(items(), workers=workers, on_error="yield"):
            c = todo[res.index]
            if res.recommendation is not None:
                rec = res.recommendation
                scores = {m: float(rec.scores[m].score) for m in MODELS}
                _write_cache(cache_dir / f"{cache_key(c.case_id)}.json", c, digest,
                             scores, rec.final_plan)
                by_line[c.line] = ScoredCase(c, scores, "scored")
            else:
                err = res.error
                failed.append(FailedCase(c, type(err).__name__, str(err)))
            done += 1
            progress(done, len(failed), n_cached)
    scored = [by_line[c.line] for c in cases if c.line in by_line]
    return ScoringResult(scored, failed, n_cached, len(todo) - len(failed),
                         time.perf_counter() - t0)


__all__ = ["EtaProgress", "FailedCase", "ScoredCase", "ScoringResult", "cache_key",
           "inputs_digest", "score_cohort"]
