"""Clinical-variable attributions: score change when inputs take their reference values.

Per variable (``level="variables"``, the default): the patient's record is copied with that
one variable replaced by the bundle's reference value (cohort median / most frequent
category, stored at export). Per group (``level="groups"``): all variables of one of the
model's clinical token groups (lab, demo, IV, as the bundle's encoding feeds them) are
replaced at once: 3 rows instead of up to 20, a coarser answer for less time.

The four fast SELECTION graphs score the copies in one batched call, and
``delta = score(patient) - score(copy)`` against the case's own scores: positive means the
patient's value raises the score (towards the favourable, low-risk side of the threshold).
A copy whose encoded clinical vectors equal the patient's (the value already equals the
reference) gives the model the same input, so its delta is exactly 0 and it is not run
(reported with ``equals_reference``). These are model sensitivities, not causal effects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import numpy as np

from hccatom.atom import MODELS
from hccatom.bundle.explain_spec import ReferenceValue
from hccatom.clinical import ClinicalVariables
from hccatom.clinical_encoding import GROUP_SIZES, ClinicalEncoding
from hccatom.explain.result import Attribution

AttributionLevel = Literal["variables", "groups"]
ATTRIBUTION_LEVELS: tuple[AttributionLevel, ...] = ("variables", "groups")

RowScorer = Callable[[list[ClinicalVariables]], list[dict[str, float]]]
"""Scores of the four models for several clinical records on the case's images."""


def _show(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass(frozen=True)
class Replacement:
    """One copy of the patient's record with some variables at their reference values."""

    name: str
    """The variable, or the group (lab, demo, iv)."""
    variables: tuple[str, ...]
    record: ClinicalVariables


def _replaced(clinical: ClinicalVariables, reference: Mapping[str, ReferenceValue],
              names: Sequence[str]) -> ClinicalVariables:
    # validated: categories become their enum, bad values raise
    return ClinicalVariables.model_validate({**clinical.model_dump(),
                                             **{n: reference[n] for n in names}})


def variants(clinical: ClinicalVariables, reference: Mapping[str, ReferenceValue]
             ) -> list[tuple[str, ClinicalVariables]]:
    """(variable, the record with that variable at its reference), in field order."""
    return [(name, _replaced(clinical, reference, [name]))
            for name in ClinicalVariables.model_fields if name in reference]


def replacements(clinical: ClinicalVariables, reference: Mapping[str, ReferenceValue],
                 encoding: ClinicalEncoding, level: AttributionLevel) -> list[Replacement]:
    """The copies to score: one per variable with a reference, or one per token group
    (the group's variables that have a reference, in the encoding's order)."""
    if level == "variables":
        return [Replacement(name, (name,), record)
                for name, record in variants(clinical, reference)]
    out: list[Replacement] = []
    for group in GROUP_SIZES:
        names = tuple(s.source for s in encoding.ordered(group) if s.source in reference)
        if names:
            out.append(Replacement(group, names, _replaced(clinical, reference, names)))
    return out


def _same_input(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    return all(np.array_equal(a[g], b[g]) for g in GROUP_SIZES)


def attribute(clinical: ClinicalVariables, reference: Mapping[str, ReferenceValue],
              encoding: ClinicalEncoding, base: Mapping[str, float], score_rows: RowScorer,
              level: AttributionLevel = "variables") -> dict[str, list[Attribution]]:
    """Ranked attributions per model (module doc); ``base`` = the case's four scores,
    ``score_rows`` runs the fast graphs once on all copies that change the model's input."""
    items = replacements(clinical, reference, encoding, level)
    own = encoding.encode(clinical)
    run = [r for r in items if not _same_input(encoding.encode(r.record), own)]
    scored = dict(zip((r.name for r in run), score_rows([r.record for r in run]) if run
                      else [], strict=True))
    out: dict[str, list[Attribution]] = {}
    for m in MODELS:
        rows = []
        for r in items:
            row = scored.get(r.name)
            if level == "variables":
                value, ref = _show(getattr(clinical, r.name)), _show(reference[r.name])
            else:
                value, ref = "as entered", "reference values"
            rows.append(Attribution(
                variable=r.name, value=value, reference=ref,
                delta=0.0 if row is None else float(base[m] - row[m]),
                equals_reference=row is None,
                variables=list(r.variables) if level == "groups" else []))
        out[m] = sorted(rows, key=lambda a: -abs(a.delta))
    return out


def batch_feeds(arterial: np.ndarray, portal: np.ndarray, clinical: list[ClinicalVariables],
                encoding: ClinicalEncoding, names: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Feeds for one batched call: the two images repeated, one clinical row per record.

    ``names`` maps arterial, portal, lab, demo, iv to the graphs' input names."""
    n = len(clinical)
    enc = encoding.encode_batch(clinical)
    return {
        names["arterial"]: np.ascontiguousarray(np.repeat(arterial[None], n, axis=0)),
        names["portal"]: np.ascontiguousarray(np.repeat(portal[None], n, axis=0)),
        **{names[g]: np.asarray(v, np.float32) for g, v in enc.items()},
    }


__all__ = [
    "ATTRIBUTION_LEVELS",
    "AttributionLevel",
    "Replacement",
    "RowScorer",
    "attribute",
    "batch_feeds",
    "replacements",
    "variants",
]
