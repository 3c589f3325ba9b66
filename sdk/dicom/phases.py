"""Choose the arterial and portal-venous series of a CT study with explicit rules.

The rule set (ids appear in every choice's ``rules`` and in error messages):

Eligibility (a series failing one is excluded, with the rule id as reason):

* ``E1-modality``: Modality must be CT.
* ``E2-sop-class``: CT Image Storage only (Secondary Capture, SR, SEG, ... are excluded).
* ``E3-localizer``: Image Type contains LOCALIZER (scout, topogram).
* ``E4-derived``: Image Type is DERIVED or SECONDARY (MPRs, MIPs, reformats, dose screens).
* ``E5-not-axial``: slice normal more than ~25 degrees from the patient's z axis.
* ``E6-multi-frame``: enhanced multi-frame images are not read.
* ``E7-geometry``: positions/orientation missing, mixed, or two images at one position.
* ``E8-too-few``: fewer than :data:`MIN_SLICES` images.

Evidence per eligible series (each vote is a phase class: non-contrast, arterial, portal,
delayed; weights are the confidence one piece of evidence gives):

* ``R1-keyword`` (0.7): Series Description words in several vendors' and languages' usual
  terms (:data:`KEYWORDS`: arterial/arteriell/artériel/arteriale/AP/LAP/HAP/late arterial,
  portal/PV/PVP/venous/venös/veineux/venoso/Pfortader, delayed/equilibrium/spät/tardif,
  non-contrast/plain/nativ/native/unenhanced/NC/pre-contrast/sans/senza/sin contraste).
  A description matching two classes is no evidence.
* ``R2-protocol`` (0.4): the same keywords in Protocol Name, used only where the description
  has none and the protocol differs between series (one study-wide protocol says nothing).
* ``R3-bolus-timing`` (0.7): Acquisition Time minus Contrast/Bolus Start Time: before
  injection non-contrast, 10-50 s arterial (typical 25-45 s), 50-110 s portal (typical 60-80
  s), 110-900 s delayed.
* ``R4-no-contrast-tag`` (0.3): no Contrast/Bolus Agent while other series of the study
  have one: non-contrast.
* ``R5-order`` (0.35): acquisition-time order of the still unclassified contrast
  acquisitions after the non-contrast one: with no phase known, exactly two such
  acquisitions are arterial then portal (three or more is ambiguous); with one phase known,
  the nearest unclassified acquisition after the arterial one is portal, before the portal
  one is arterial.

Series acquired together (Acquisition Time within :data:`SAME_ACQUISITION_S`) are one
*acquisition* (thin and thick reconstructions, other kernels); their votes are pooled.
Evidence that disagrees leaves the acquisition unclassified (``conflict``). A phase needs
exactly one acquisition; two (e.g. early and late arterial) or none raise
:class:`PhaseAmbiguityError`, which lists the candidates and says how to choose.

Reconstruction (``P1-recon``), inside the chosen acquisition: slice thickness <= 1.5 mm,
then <= 3 mm, then thicker; then a soft-tissue kernel before an unknown one before a
sharp/lung/bone one; then the thinner; then the lower series number.

Confidence of a choice = 1 - prod(1 - w) over its agreeing evidence (R5 alone: 0.35).

Explicit choices (``arterial=SeriesInstanceUID``, ``portal=...``) win over every rule
except that they must be CT image volumes: derived (E4) and non-axial (E5) series are
accepted with a note, any other exclusion (localiser, too few images, ...) is an error;
the two must differ.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hccatom.dicom.errors import PhaseAmbiguityError, PhaseConflictError, PhaseSelectionError
from hccatom.dicom.index import (
    CT_IMAGE_STORAGE,
    SAME_SPACING_MM,
    SeriesInfo,
    StudyIndex,
    index_study,
)
from hccatom.phases import PHASES, Phase
from hccatom.progress_events import ProgressCallback

__all__ = [
    "KEYWORDS",
    "MIN_SLICES",
    "PhaseChoice",
    "PhaseSelection",
    "classify_description",
    "eligibility",
    "find_phases",
]

Klass = Literal["noncontrast", "arterial", "portal", "delayed"]

MIN_SLICES = 8
"""A series with fewer images is not a phase volume (E8)."""
SAME_ACQUISITION_S = 3.0
"""Series whose acquisition times differ by at most this are one acquisition."""
W_KEYWORD, W_PROTOCOL, W_TIMING, W_NO_AGENT, W_ORDER = 0.7, 0.4, 0.7, 0.3, 0.35

_ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"

KEYWORDS: dict[Klass, tuple[str, ...]] = {
    "arterial": (
        r"arteri", r"art[ée]ri", r"\bart\b", r"\bap\b", r"\blap\b", r"\bhap\b", r"\beap\b",
        r"late[\s_-]*art", r"early[\s_-]*art", r"動脈",
    ),
    "portal": (
        r"portal", r"\bpv\b", r"\bpvp\b", r"\bvp\b", r"ven[oö]s", r"venous", r"veineu",
        r"pfortader", r"門脈", r"\bven\b",
    ),
    "delayed": (
        r"delay", r"\blate\b(?![\s_-]*art)", r"equilib", r"sp[äa]t", r"tardi", r"ritard",
        r"平衡", r"\bdel\b", r"\beq\b",
    ),
    "noncontrast": (
        r"non[\s_-]*contrast", r"non[\s_-]*enhanced", r"\bplain\b", r"\bnativ", r"unenhanced",
        r"\bnc\b", r"pre[\s_-]*contrast", r"\bpre\b", r"sans[\s_-]*(?:injection|contraste|iv)",
        r"senza[\s_-]*(?:contrasto|mdc)", r"sin[\s_-]*contraste", r"ohne[\s_-]*km",
        r"\bw/?o\b", r"単純", r"\bleer\b",
    ),
}
_COMPILED = {k: [re.compile(p, re.IGNORECASE) for p in v] for k, v in KEYWORDS.items()}

_SOFT_KERNEL = re.compile(
    r"^(?:[bi]r?[1-4]\d|d[1-4]\d|fc0\d|fc1[0-8]|standard|std|soft|body|abdomen|smooth|"
    r"a|b|c|ub|fl0\d)", re.IGNORECASE)
_SHARP_KERNEL = re.compile(
    r"(?:lung|bone|sharp|detail|edge|[bi]r?[5-9]\d|d[5-9]\d|fc[3-9]\d|fc5|yc|yd|ya|ye|"
    r"hr|ultra)", re.IGNORECASE)


def classify_description(text: str) -> list[Klass]:
    """The phase classes whose keywords ``text`` contains (any order, no duplicates)."""
    text = text.replace("_", " ")
    return [k for k, pats in _COMPILED.items() if any(p.search(text) for p in pats)]


def eligibility(series: SeriesInfo) -> str | None:
    """The exclusion rule id (with a short reason) or None when eligible."""
    if series.modality != "CT":
        return f"E1-modality ({series.modality or 'missing'})"
    if series.sop_class_uid not in (CT_IMAGE_STORAGE, _ENHANCED_CT_STORAGE):
        return "E2-sop-class (not a CT image)"
    if "LOCALIZER" in series.image_type:
        return "E3-localizer"
    if series.image_type[:1] == ("DERIVED",) or series.image_type[1:2] == ("SECONDARY",):
        return "E4-derived"
    if series.multi_frame:
        return "E6-multi-frame"
    if series.orientation is None or series.problems:
        return "E7-geometry (" + ("; ".join(series.problems) or "no orientation") + ")"
    if not series.is_axial:
        return "E5-not-axial"
    if series.n_slices < MIN_SLICES:
        return f"E8-too-few ({series.n_slices} < {MIN_SLICES} images)"
    return None


def _kernel_class(kernel: str) -> int:
    """0 soft tissue, 1 unknown, 2 sharp (lung, bone)."""
    k = kernel.split("\\")[0].strip()
    if not k:
        return 1
    if _SHARP_KERNEL.search(k):
        return 2
    return 0 if _SOFT_KERNEL.search(k) else 1


def _recon_key(s: SeriesInfo) -> tuple[int, int, float, int]:
    t = s.slice_thickness_mm if s.slice_thickness_mm is not None else (
        s.slice_spacing_mm or math.inf)
    tier = 0 if t <= 1.5 else 1 if t <= 3.0 else 2
    return (tier, _kernel_class(s.kernel), t, s.series_number or 0)


@dataclass
class _Vote:
    klass: Klass
    weight: float
    rule: str
    reason: str


@dataclass
class _Acquisition:
    """Series acquired together (thin/thick reconstructions, kernels)."""

    time_s: float | None
    series: list[SeriesInfo]
    votes: list[_Vote] = field(default_factory=list)

    @property
    def classes(self) -> set[Klass]:
        return {v.klass for v in self.votes}

    @property
    def klass(self) -> Klass | None:
        c = self.classes
        return next(iter(c)) if len(c) == 1 else None

    @property
    def conflict(self) -> bool:
        return len(self.classes) > 1

    def confidence(self) -> float:
        rest = 1.0
        for v in self.votes:
            rest *= 1.0 - v.weight
        return 1.0 - rest


@dataclass(frozen=True)
class PhaseChoice:
    """The series chosen for one phase, why, and how sure."""

    phase: Phase
    series: SeriesInfo
    confidence: float
    rules: tuple[str, ...]
    reasons: tuple[str, ...]
    """Human-readable, sanitised: rule ids, keyword classes, seconds; no free text."""

    def record(self) -> dict[str, Any]:
        """JSON-ready record without free text (for the Recommendation)."""
        return {
            "series_instance_uid": self.series.series_instance_uid,
            "series_number": self.series.series_number,
            "n_slices": self.series.n_slices,
            "slice_thickness_mm": self.series.slice_thickness_mm,
            "slice_spacing_mm": (None if self.series.slice_spacing_mm is None
                                 else round(self.series.slice_spacing_mm, 6)),
            "confidence": round(self.confidence, 3),
            "rules": list(self.rules),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class PhaseSelection:
    """Both phases of a study, plus what was excluded and why."""

    arterial: PhaseChoice
    portal: PhaseChoice
    index: StudyIndex
    excluded: dict[str, str]
    """Series Instance UID -> exclusion rule."""

    def choice(self, phase: Phase) -> PhaseChoice:
        """The choice for ``phase``."""
        return self.arterial if phase == "arterial" else self.portal


def _relative(t: float | None, t0: float | None) -> str:
    if t is None or t0 is None:
        return "time ?"
    return f"t{t - t0:+.0f} s"


def _listing(acqs: Sequence[_Acquisition], t0: float | None) -> str:
    lines = []
    for a in acqs:
        what = ("conflicting evidence " + "/".join(sorted(a.classes)) if a.conflict
                else a.klass or "unclassified")
        for s in a.series:
            lines.append(f"  - {s.brief()}, {_relative(a.time_s, t0)}, evidence: {what}")
    return "\n".join(lines)


def _how_to_choose() -> str:
    return ("Choose explicitly: find_phases(study, arterial='<SeriesInstanceUID>', "
            "portal='<SeriesInstanceUID>') / Predictor.recommend(study=..., arterial=..., "
            "portal=...) / hccatom recommend --study DIR --arterial UID --portal UID; or, "
            "without --study, give each phase's series folder or image file: hccatom "
            "recommend --arterial DIR --portal DIR (also when a series has no UID). "
            "Descriptions and clock times are on the exception's .candidates (not printed: "
            "free text may identify the patient).")


def _timing_vote(s: SeriesInfo, acq_s: float | None) -> _Vote | None:
    if s.contrast_start_s is None or acq_s is None:
        return None
    delay = acq_s - s.contrast_start_s
    if delay < -43200.0:
        delay += 86400.0  # over midnight
    if delay < 0:
        return _Vote("noncontrast", W_TIMING, "R3-bolus-timing", f"acquired {-delay:.0f} s "
                     "before the contrast bolus start")
    if 10.0 <= delay < 50.0:
        k: Klass = "arterial"
    elif 50.0 <= delay < 110.0:
        k = "portal"
    elif 110.0 <= delay <= 900.0:
        k = "delayed"
    else:
        return None
    return _Vote(k, W_TIMING, "R3-bolus-timing", f"{delay:.0f} s after the contrast bolus "
                 f"start ({k})")


def _group(eligible: Sequence[SeriesInfo]) -> list[_Acquisition]:
    timed = sorted((s for s in eligible if s.acquisition_time_s is not None),
                   key=lambda s: s.acquisition_time_s or 0.0)
    acqs: list[_Acquisition] = []
    for s in timed:
        t = s.acquisition_time_s
        assert t is not None
        if acqs and acqs[-1].time_s is not None and t - acqs[-1].time_s <= SAME_ACQUISITION_S:
            acqs[-1].series.append(s)
        else:
            acqs.append(_Acquisition(t, [s]))
    acqs += [_Acquisition(None, [s]) for s in eligible if s.acquisition_time_s is None]
    return acqs


def _collect_votes(acqs: Sequence[_Acquisition], eligible: Sequence[SeriesInfo]) -> None:
    protocols = {s.protocol for s in eligible}
    any_agent = any(s.contrast_agent for s in eligible)
    for a in acqs:
        seen: set[tuple[str, str]] = set()
        for s in a.series:
            cls = classify_description(s.description)
            if len(cls) == 1 and ("R1", cls[0]) not in seen:
                seen.add(("R1", cls[0]))
                a.votes.append(_Vote(cls[0], W_KEYWORD, "R1-keyword",
                                     f"series description has {cls[0]} keywords"))
            elif not cls and len(protocols) > 1:
                pcls = classify_description(s.protocol)
                if len(pcls) == 1 and ("R2", pcls[0]) not in seen:
                    seen.add(("R2", pcls[0]))
                    a.votes.append(_Vote(pcls[0], W_PROTOCOL, "R2-protocol",
                                         f"protocol name has {pcls[0]} keywords"))
            tv = _timing_vote(s, a.time_s)
            if tv is not None and ("R3", tv.klass) not in seen:
                seen.add(("R3", tv.klass))
                a.votes.append(tv)
        if any_agent and not any(s.contrast_agent for s in a.series) and (
            not a.votes or a.classes == {"noncontrast"}
        ):
            a.votes.append(_Vote("noncontrast", W_NO_AGENT, "R4-no-contrast-tag",
                                 "no Contrast/Bolus Agent while other series have one"))


def _order_votes(acqs: Sequence[_Acquisition]) -> None:
    """R5: classify unclassified timed contrast acquisitions by their order."""
    timed = [a for a in acqs if a.time_s is not None]
    nc_times = [a.time_s for a in timed if a.klass == "noncontrast" and a.time_s is not None]
    after = max(nc_times) if nc_times else -math.inf
    free = [a for a in timed if not a.votes and (a.time_s or 0.0) > after]
    art = [a for a in timed if a.klass == "arterial"]
    por = [a for a in timed if a.klass == "portal"]
    if not art and not por:
        if len(free) == 2:
            free[0].votes.append(_Vote("arterial", W_ORDER, "R5-order",
                                       "first of two contrast acquisitions"))
            free[1].votes.append(_Vote("portal", W_ORDER, "R5-order",
                                       "second of two contrast acquisitions"))
        return
    if len(art) == 1 and not por:
        t_art = art[0].time_s or 0.0
        later = [a for a in free if (a.time_s or 0.0) > t_art]
        if later:
            later[0].votes.append(_Vote("portal", W_ORDER, "R5-order",
                                        "next contrast acquisition after the arterial one"))
    if len(por) == 1 and not art:
        t_por = por[0].time_s or 0.0
        earlier = [a for a in free if (a.time_s or 0.0) < t_por]
        if earlier:
            earlier[-1].votes.append(_Vote("arterial", W_ORDER, "R5-order",
                                           "last contrast acquisition before the portal one"))


def _choose_recon(phase: Phase, acq: _Acquisition) -> PhaseChoice:
    ranked = sorted(acq.series, key=_recon_key)
    best = ranked[0]
    t, spacing = best.slice_thickness_mm, best.slice_spacing_mm
    every = (f" every {round(spacing, 3):g} mm" if t is not None and spacing is not None
             and abs(t - spacing) > SAME_SPACING_MM else "")  # overlapping or gapped slices
    recon = (f"P1-recon: {len(ranked)} reconstruction(s) of this acquisition; chose "
             f"{f'{t:g}' if t is not None else '?'} mm slices{every}, kernel class "
             f"{('soft', 'unknown', 'sharp')[_kernel_class(best.kernel)]}")
    return PhaseChoice(
        phase=phase, series=best, confidence=acq.confidence(),
        rules=(*dict.fromkeys(v.rule for v in acq.votes), "P1-recon"),
        reasons=(*(f"{v.rule}: {v.reason}" for v in acq.votes), recon),
    )


def _explicit(phase: Phase, index: StudyIndex, uid: str) -> PhaseChoice:
    s = index.by_uid(uid)
    why = eligibility(s)
    if why is not None and not why.startswith(("E4", "E5")):
        raise PhaseSelectionError(
            f"--{phase} {s.brief()} cannot be used as a phase volume: {why}.", [s])
    reasons = ["chosen by the caller"] + ([f"note: would be excluded by {why}"] if why else [])
    return PhaseChoice(phase=phase, series=s, confidence=1.0, rules=("explicit",),
                       reasons=tuple(reasons))


def find_phases(
    study: str | Path | StudyIndex,
    *,
    arterial: str | None = None,
    portal: str | None = None,
    progress: bool | ProgressCallback | None = False,
) -> PhaseSelection:
    """Pick the arterial and portal-venous series of a study (see the module doc).

    ``study``: a folder (indexed with :func:`index_study`, which reports to ``progress``)
    or an index. ``arterial`` / ``portal``: Series Instance UIDs that override the rules.
    Raises :class:`PhaseAmbiguityError` (with ``candidates``) when a phase cannot be told
    apart, :class:`PhaseConflictError` when both would be the same series.
    """
    index = study if isinstance(study, StudyIndex) else index_study(study, progress=progress)
    if arterial is not None and arterial == portal:
        s = index.by_uid(arterial)
        raise PhaseConflictError(
            f"arterial and portal are the same series ({s.brief()}); the two phases must be "
            "different acquisitions.", [s])
    excluded = {s.series_instance_uid: why for s in index.series
                if (why := eligibility(s)) is not None}
    eligible = [s for s in index.series if s.series_instance_uid not in excluded]
    chosen: dict[Phase, PhaseChoice] = {}
    if arterial is not None:
        chosen["arterial"] = _explicit("arterial", index, arterial)
    if portal is not None:
        chosen["portal"] = _explicit("portal", index, portal)
    if len(chosen) < 2:
        acqs = _group(eligible)
        t0 = min((a.time_s for a in acqs if a.time_s is not None), default=None)
        taken = {c.series.series_instance_uid for c in chosen.values()}
        for a in acqs:  # an explicit choice fixes its acquisition's phase
            uids = {s.series_instance_uid for s in a.series}
            for name, c in chosen.items():
                if c.series.series_instance_uid in uids:
                    a.votes = [_Vote(name, 1.0, "explicit", "chosen by the caller")]
        _collect_votes([a for a in acqs if not (taken & {
            s.series_instance_uid for s in a.series})], eligible)
        _order_votes(acqs)
        for name in PHASES:
            if name in chosen:
                continue
            hits = [a for a in acqs if a.klass == name
                    and not (taken & {s.series_instance_uid for s in a.series})]
            if len(hits) != 1:
                n_excl = len(excluded)
                head = (f"No series of the study looks like the {name} phase" if not hits else
                        f"{len(hits)} acquisitions look like the {name} phase")
                raise PhaseAmbiguityError(
                    f"{head} ({len(eligible)} eligible series, {n_excl} excluded as "
                    f"localiser/derived/non-axial/non-CT/too few images). Candidates "
                    f"(times relative to the first acquisition):\n{_listing(acqs, t0)}\n"
                    + _how_to_choose(), eligible)
            chosen[name] = _choose_recon(name, hits[0])
    art, por = chosen["arterial"], chosen["portal"]
    if art.series.series_instance_uid == por.series.series_instance_uid:
        raise PhaseConflictError(
            f"arterial and portal would be the same series ({art.series.brief()}); choose "
            "two different acquisitions.", [art.series])
    return PhaseSelection(arterial=art, portal=por, index=index, excluded=excluded)
