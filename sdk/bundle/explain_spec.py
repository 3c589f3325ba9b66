"""The optional ``selection.explain`` section of a bundle manifest.

``graphs``: per cohort (TACE, HAIC, TC, HC), the bundle-relative path of its explain graph
(``hccatom export selection ... --explain``; the fast graphs stay unchanged).
``clinical_reference``: per clinical variable the reference value the attributions replace
it with (cohort median for numbers, the most frequent category otherwise), stored at build
time (``hccatom bundle build --clinical-reference``). Both are optional: a bundle without
this section loads as before.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hccatom.clinical import ClinicalVariables

ReferenceValue = float | int | bool | str


class ExplainSpec(BaseModel):
    """Explain graphs and clinical reference values of a bundle (all optional)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    graphs: dict[str, str] = Field(
        default_factory=dict, description="Cohort -> bundle-relative explain graph path.")
    clinical_reference: dict[str, ReferenceValue] | None = Field(
        default=None, description="ClinicalVariables field -> reference value (attributions).")
    reference_source: str = Field(
        default="", description="Where the reference values come from, in words.")

    @field_validator("graphs")
    @classmethod
    def _paths(cls, v: dict[str, str]) -> dict[str, str]:
        from hccatom.bundle.manifest import safe_relative_path  # manifest imports this module

        return {k: safe_relative_path(p) for k, p in v.items()}

    @field_validator("clinical_reference")
    @classmethod
    def _fields(cls, v: dict[str, ReferenceValue] | None) -> dict[str, ReferenceValue] | None:
        if v is None:
            return v
        unknown = sorted(set(v) - set(ClinicalVariables.model_fields))
        if unknown:
            raise ValueError(f"clinical_reference names unknown variables {unknown}")
        return v


def reference_values(cohort: Sequence[ClinicalVariables]) -> dict[str, ReferenceValue]:
    """Per variable: the median (numbers; integers: the lower median, an observed value)
    or the most frequent value (booleans, categories) of a training cohort."""
    if not cohort:
        raise ValueError("reference values need at least one patient")
    out: dict[str, ReferenceValue] = {}
    for name, field in ClinicalVariables.model_fields.items():
        values = [getattr(c, name) for c in cohort]
        first = values[0]
        if isinstance(first, bool | Enum):
            common = Counter(values).most_common(1)[0][0]
            out[name] = common.value if isinstance(common, Enum) else bool(common)
        elif field.annotation is int:
            out[name] = int(statistics.median_low(values))
        else:
            out[name] = float(statistics.median(values))
    return out




EXPLAIN_MARK = ".explain."


def explain_cohort(filename: str) -> str | None:
    """``selection_tace.explain.onnx`` (or its ``.explain.parity.json``) -> ``TACE``; None
    for any other file."""
    if EXPLAIN_MARK not in filename:
        return None
    stem = filename.split(EXPLAIN_MARK, 1)[0]
    return stem.removeprefix("selection_").upper()


__all__ = ["EXPLAIN_MARK", "ExplainSpec", "ReferenceValue", "explain_cohort", "reference_values"]
