"""Clinical-variable attributions: score change when one variable takes its reference value.

For each of the 20 variables, the patient's record is copied with that variable replaced by
the bundle's reference value (cohort median / most frequent category, stored at export),
and the four fast SELECTION graphs score the original and all copies in one batched call.
``delta = score(patient) - score(copy)``: positive means the patient's value raises the
score (towards the favourable, low-risk side of the threshold). These are model
sensitivities, not causal effects.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import numpy as np

from hccatom.atom import MODELS
from hccatom.bundle.explain_spec import ReferenceValue
from hccatom.clinical import ClinicalVariables
from hccatom.clinical_encoding import ClinicalEncoding
from hccatom.explain.result import Attribution


def _show(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def variants(clinical: ClinicalVariables, reference: Mapping[str, ReferenceValue]
             ) -> list[tuple[str, ClinicalVariables]]:
    """(variable, the record with that variable at its reference), in field order."""
    out = []
    record = clinical.model_dump()
    for name in ClinicalVariables.model_fields:
        if name in reference:  # validated: categories become their enum, bad values raise
            out.append((name, ClinicalVariables.model_validate({**record,
                                                                name: reference[name]})))
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


def rank(clinical: ClinicalVariables, reference: Mapping[str, ReferenceValue],
         names: list[str], scores: list[dict[str, float]]) -> dict[str, list[Attribution]]:
    """Ranked attributions per model from the scores of [patient, *variants]."""
    base = scores[0]
    out: dict[str, list[Attribution]] = {}
    for m in MODELS:
        items = [Attribution(variable=name, value=_show(getattr(clinical, name)),
                             reference=_show(reference[name]),
                             delta=float(base[m] - row[m]))
                 for name, row in zip(names, scores[1:], strict=True)]
        out[m] = sorted(items, key=lambda a: -abs(a.delta))
    return out


__all__ = ["batch_feeds", "rank", "variants"]
