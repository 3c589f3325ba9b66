"""Flags on the clinical variables: outside the training population, internal inconsistency.

Nothing here corrects a value: the model sees what the caller gave, and the result says what
looks wrong. Rules (``docs/safety.md``):

* Child-Pugh score vs its components. Bilirubin (< 34 / 34-50 / > 50 umol/L), albumin
  (> 35 / 28-35 / < 28 g/L) and INR (< 1.7 / 1.7-2.3 / > 2.3) give 1-3 points each; ascites
  present gives 2 or 3, absent 1; encephalopathy is not among the inputs (1-3). A score
  outside the sum's possible range is flagged.
* BCLC stage vs ECOG, metastasis and vascular invasion (BCLC 2022): any of ECOG >= 1,
  extrahepatic metastasis or portal vein invasion makes the stage C (or D); stage A or B
  with one of them, or C with none of them, is flagged. ECOG >= 3 is stage D, which no
  cohort of the model holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path

from hccatom.clinical import FIELD_RANGES, ClinicalVariables, clinical_records, read_clinical_json
from hccatom.errors import ClinicalInputError
from hccatom.recommendation import QualityFlag
from hccatom.safety.limits import TrainingPopulation, VariableRange


def _plain(value: object) -> str | bool | float | int:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def training_population(clinicals: Sequence[ClinicalVariables], description: str
                        ) -> TrainingPopulation:
    """Per-variable min/max (numbers) or categories seen in a training cohort."""
    if not clinicals:
        raise ValueError("a training population needs at least one patient")
    variables: dict[str, VariableRange] = {}
    for name in ClinicalVariables.model_fields:
        values = [_plain(getattr(c, name)) for c in clinicals]
        if name in FIELD_RANGES:
            nums = [float(v) for v in values]
            variables[name] = VariableRange(min=min(nums), max=max(nums))
        else:
            cats = sorted({v for v in values if isinstance(v, str | bool)}, key=str)
            variables[name] = VariableRange(categories=cats)
    return TrainingPopulation(description=description, n_patients=len(clinicals),
                              variables=variables)


def training_population_from_json(path: str | Path, description: str = "") -> TrainingPopulation:
    """:func:`training_population` of a JSON file holding a list of clinical records."""
    p = Path(path)
    data = read_clinical_json(p, "Training cohort file", "a JSON list of clinical records")
    if not isinstance(data, list) or not data:
        raise ClinicalInputError(
            f"training cohort file {p} must hold a non-empty JSON list of clinical records.")
    records = clinical_records(data, f"training cohort file {p}")
    return training_population(records, description or f"{len(records)} patients ({p.name})")


def population_flags(clinical: ClinicalVariables, population: TrainingPopulation | None
                     ) -> list[QualityFlag]:
    """One ``outside_training_population`` flag per variable outside the cohort's range."""
    if population is None or not population.variables:
        return [QualityFlag(
            code="training_population_unknown", severity="info",
            message="the bundle does not record its training cohort's clinical ranges; "
            "whether this patient resembles the training population was not checked.")]
    flags: list[QualityFlag] = []
    for name, rng in population.variables.items():
        if name not in ClinicalVariables.model_fields:
            continue  # a variable this runtime does not know (newer bundle)
        value = _plain(getattr(clinical, name))
        if rng.contains(value):
            continue
        if rng.categories is not None:
            seen = ", ".join(str(c) for c in rng.categories)
            text = f"{name} = {value} was not seen in the training cohort (seen: {seen})"
            values: dict[str, float | int | str | bool | None] = {
                "variable": name, "value": value, "categories": seen}
        else:
            text = (f"{name} = {value:g} is outside the training cohort's range "
                    f"{rng.min:g}..{rng.max:g}") if isinstance(value, int | float) else (
                    f"{name} = {value} is outside the training cohort's range")
            values = {"variable": name, "value": value, "min": rng.min, "max": rng.max}
        flags.append(QualityFlag(
            code="outside_training_population", severity="warning", values=values,
            message=f"outside the training population: {text}; the models never saw such "
            "a patient."))
    return flags


# --- internal consistency --------------------------------------------------------------
def _points(value: float, low: float, high: float, *, rising: bool = True) -> int:
    """1-3 Child-Pugh points: ``rising`` = higher is worse (bilirubin, INR)."""
    if rising:
        return 1 if value < low else (2 if value <= high else 3)
    return 1 if value > high else (2 if value >= low else 3)


def child_pugh_range(clinical: ClinicalVariables) -> tuple[int, int]:
    """The Child-Pugh scores the recorded components allow (encephalopathy unknown: 1-3)."""
    known = (
        _points(clinical.total_bilirubin_umol_per_l, 34.0, 50.0)
        + _points(clinical.albumin_g_per_l, 28.0, 35.0, rising=False)
        + _points(clinical.inr, 1.7, 2.3)
    )
    ascites = (2, 3) if clinical.ascites else (1, 1)
    return known + ascites[0] + 1, known + ascites[1] + 3


def _child_pugh_class(score: int) -> str:
    return "A" if score <= 6 else ("B" if score <= 9 else "C")


def consistency_flags(clinical: ClinicalVariables) -> list[QualityFlag]:
    """Child-Pugh score vs components; BCLC stage vs ECOG, metastasis, vascular invasion."""
    flags: list[QualityFlag] = []
    lo, hi = child_pugh_range(clinical)
    score = clinical.child_pugh_score
    if not lo <= score <= hi:
        flags.append(QualityFlag(
            code="child_pugh_inconsistent", severity="warning",
            values={"child_pugh_score": score, "possible_min": lo, "possible_max": hi,
                    "total_bilirubin_umol_per_l": clinical.total_bilirubin_umol_per_l,
                    "albumin_g_per_l": clinical.albumin_g_per_l, "inr": clinical.inr,
                    "ascites": clinical.ascites},
            message=f"Child-Pugh score {score} (class {_child_pugh_class(score)}) does not "
            f"match its components: bilirubin {clinical.total_bilirubin_umol_per_l:g} umol/L, "
            f"albumin {clinical.albumin_g_per_l:g} g/L, INR {clinical.inr:g}, ascites "
            f"{'yes' if clinical.ascites else 'no'} allow {lo}..{hi} "
            f"(class {_child_pugh_class(lo)}..{_child_pugh_class(hi)}); check the record."))
    stage = clinical.bclc_stage.value
    reasons = [r for r, present in (
        (f"ECOG {clinical.ecog}", clinical.ecog >= 1),
        ("extrahepatic metastasis", clinical.metastasis),
        ("portal vein invasion", clinical.pvtt),
    ) if present]
    values: dict[str, float | int | str | bool | None] = {
        "bclc_stage": stage, "ecog": clinical.ecog, "metastasis": clinical.metastasis,
        "pvtt": clinical.pvtt}
    if reasons and stage in ("A", "B"):
        flags.append(QualityFlag(
            code="bclc_inconsistent", severity="warning", values=values,
            message=f"BCLC stage {stage} with {', '.join(reasons)}: these make the stage C "
            "(or D) under BCLC; check the record."))
    elif not reasons and stage == "C":
        flags.append(QualityFlag(
            code="bclc_inconsistent", severity="warning", values=values,
            message="BCLC stage C without ECOG >= 1, extrahepatic metastasis or portal vein "
            "invasion; check the record."))
    if clinical.ecog >= 3:
        flags.append(QualityFlag(
            code="bclc_stage_d", severity="warning", values=values,
            message=f"ECOG {clinical.ecog} means BCLC stage D (best supportive care), a "
            "stage none of the models' cohorts holds."))
    return flags


__all__ = [
    "child_pugh_range",
    "consistency_flags",
    "population_flags",
    "training_population",
    "training_population_from_json",
]
