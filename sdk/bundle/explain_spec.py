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
from pathlib import Path

from pydantic import Field, field_validator

from hccatom.clinical import ClinicalVariables, clinical_records, read_clinical_json
from hccatom.errors import ClinicalInputError
from hccatom.model_base import ManifestModel

ReferenceValue = float | int | bool | str


class ExplainSpec(ManifestModel):
    """Explain graphs and clinical reference values of a bundle (all optional)."""

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




def reference_from_json(path: str | Path) -> tuple[dict[str, ReferenceValue], str]:
    """Reference values from a JSON file: an object (variable -> value) as it is, or a list
    of clinical records (the training cohort) -> :func:`reference_values`. Returns the
    values and a description of their source."""
    p = Path(path)
    data = read_clinical_json(p, "Clinical reference file", "a JSON object (variable -> "
                              "value) or a list of clinical records")
    if isinstance(data, dict):
        try:
            spec = ExplainSpec(clinical_reference=data)
        except ValueError as exc:
            raise ClinicalInputError(f"clinical reference file {p}: {exc}") from None
        return dict(spec.clinical_reference or {}), f"values given in {p.name}"
    if not isinstance(data, list) or not data:
        raise ClinicalInputError(f"clinical reference file {p} must hold an object (variable "
                                 "-> value) or a non-empty list of clinical records.")
    records = clinical_records(data, f"clinical reference file {p}")
    return reference_values(records), (f"medians / most frequent values of {len(records)} "
                                       f"training records ({p.name})")


EXPLAIN_MARK = ".explain."


def explain_cohort(filename: str) -> str | None:
    """``selection_tace.explain.onnx`` (or its ``.explain.parity.json``) -> ``TACE``; None
    for any other file."""
    if EXPLAIN_MARK not in filename:
        return None
    stem = filename.split(EXPLAIN_MARK, 1)[0]
    return stem.removeprefix("selection_").upper()


__all__ = ["EXPLAIN_MARK", "ExplainSpec", "ReferenceValue", "explain_cohort",
           "reference_from_json", "reference_values"]
