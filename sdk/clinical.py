"""``ClinicalVariables``: the 20 clinical inputs of SELECTION, with units and plausible ranges.

The variables and their grouping follow the SELECTION paper and the authors' public code:
``lab`` (8), ``demo`` (6) and ``iv`` (6); ``docs/inputs.md`` tabulates them with units and
ranges. Units are part of every field name. Ranges are *plausibility* limits that catch
typing and unit errors, not clinical reference ranges.

Conventions worth knowing:

* ``tumour_number`` is the count of intrahepatic lesions (integer >= 1). When a record only
  says "multiple", enter the smallest count you know (at least 2); a bundle whose model was
  trained with a capped count (e.g. "3 or more") caps it in its
  :class:`~hccatom.clinical_encoding.ClinicalEncoding`, not here.
* ``max_tumour_diameter_mm`` is the largest lesion's diameter (not radius), in mm.
* ``pvtt`` is portal-vein tumour thrombus / macrovascular invasion; ``metastasis`` is
  extrahepatic spread; ``hbv`` is hepatitis B infection.

Invalid input raises :class:`~hccatom.errors.ClinicalInputError` listing *every* bad field
at once (``problems``), each with its allowed range and, where the value looks like a
different unit (albumin in g/dL, bilirubin in mg/dL, platelets per uL, diameter in cm, ...),
a hint saying so. Construction through the class (``ClinicalVariables(**values)``),
``from_mapping`` and ``from_json`` all behave the same way.

Hostile or careless input:

* Types are strict: numbers must be JSON numbers and booleans JSON ``true``/``false``. Text
  such as ``"38.5"``, ``"yes"`` or ``"off"`` and 0/1 for a boolean are refused with a message
  saying how to write the value (a mis-mapped spreadsheet column must not pass silently).
  Integer fields accept an integral float (``2.0``); ``sex``/``bclc_stage`` are text.
* Unknown keys are reported together in one problem; the metadata keys in
  :data:`METADATA_KEYS` (``patient_id``, ``case_id``, ``notes``) are accepted and dropped
  (never stored, never logged). ``extra="ignore"`` on ``from_mapping``/``from_json`` drops
  every unknown key.
* ``from_json`` reads at most :data:`CLINICAL_JSON_LIMITS` (size, nesting depth, digits per
  number); a record with more than ``MAX_KEYS`` keys is refused before validation; messages
  echo at most a few dozen characters of any value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from hccatom.errors import ClinicalInputError
from hccatom.model_base import FrozenModel
from hccatom.path_checks import check_input_file
from hccatom.safe_json import JSONLimitError, JSONLimits, load_limited

__all__ = [
    "CLINICAL_JSON_LIMITS",
    "FIELD_RANGES",
    "GROUPS",
    "METADATA_KEYS",
    "BclcStage",
    "ClinicalVariables",
    "Sex",
    "clinical_records",
    "read_clinical_json",
]

METADATA_KEYS: frozenset[str] = frozenset({"patient_id", "case_id", "notes"})
"""Keys a record may carry beside the 20 variables; accepted, never used, never logged."""

CLINICAL_JSON_LIMITS = JSONLimits(max_bytes=256 * 1024, max_depth=8, max_number_chars=40)
"""A clinical file is about 1 kB; these limits refuse anything that is not one, fast."""

CLINICAL_COHORT_JSON_LIMITS = JSONLimits(max_bytes=16 << 20, max_depth=8, max_number_chars=40)
"""A file of many clinical records (a training cohort, about 1 kB a record): room for
about 16,000 patients; the depth and number limits are those of one record."""

MAX_KEYS = 200
"""More keys than this in one record is not a clinical record (refused before validation)."""

_ECHO_CHARS = 60
_MAX_LISTED = 10


def _echo(value: Any) -> str:
    """``repr`` of a value for a message, cut to a few dozen characters."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    if isinstance(value, str | bytes | list | dict | tuple) and len(value) > 4 * _ECHO_CHARS:
        return f"a {type(value).__name__} of length {len(value):,}"
    text = repr(value)
    return text if len(text) <= _ECHO_CHARS else text[: _ECHO_CHARS - 3] + "..."


class Sex(str, Enum):
    """Sex as recorded in the clinical record."""

    male = "male"
    female = "female"


class BclcStage(str, Enum):
    """Barcelona Clinic Liver Cancer stage (the cohorts are A, B or C)."""

    A = "A"
    B = "B"
    C = "C"


# name -> (low, high, unit) for every numeric field; used for Field constraints and messages.
FIELD_RANGES: dict[str, tuple[float, float, str]] = {
    "albumin_g_per_l": (10.0, 70.0, "g/L"),
    "alt_u_per_l": (1.0, 5000.0, "U/L"),
    "ast_u_per_l": (1.0, 5000.0, "U/L"),
    "total_bilirubin_umol_per_l": (2.0, 1000.0, "umol/L"),
    "prothrombin_time_s": (8.0, 60.0, "s"),
    "inr": (0.7, 8.0, "ratio"),
    "platelets_10e9_per_l": (5.0, 1500.0, "10^9/L"),
    "child_pugh_score": (5, 15, "points"),
    "age_years": (18.0, 100.0, "years"),
    "ecog": (0, 4, "ECOG performance status"),
    "afp_ng_per_ml": (0.0, 5.0e6, "ng/mL"),
    "tumour_number": (1, 50, "lesions"),
    "max_tumour_diameter_mm": (10.0, 300.0, "mm"),
}

GROUPS: dict[str, tuple[str, ...]] = {
    "lab": (
        "albumin_g_per_l",
        "alt_u_per_l",
        "ast_u_per_l",
        "total_bilirubin_umol_per_l",
        "prothrombin_time_s",
        "inr",
        "platelets_10e9_per_l",
        "child_pugh_score",
    ),
    "demo": ("age_years", "sex", "ecog", "comorbidity", "hbv", "ascites"),
    "iv": (
        "afp_ng_per_ml",
        "tumour_number",
        "max_tumour_diameter_mm",
        "bclc_stage",
        "metastasis",
        "pvtt",
    ),
}
"""The paper's three groups, each in the authors' order (lab 8, demo 6, IV 6)."""


def _num(name: str, description: str) -> Any:
    lo, hi, unit = FIELD_RANGES[name]
    return Field(ge=lo, le=hi, description=f"{description} [{unit}], {lo:g}..{hi:g}")


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return number if math.isfinite(number) else None


_NUMERIC_FIELDS = tuple(FIELD_RANGES)
_BOOL_FIELDS = ("comorbidity", "hbv", "ascites", "metastasis", "pvtt")


# field -> function(value) returning a unit hint or None (only consulted for bad values).
_UNIT_HINTS: dict[str, Callable[[float], str | None]] = {
    "albumin_g_per_l": lambda v: (
        f"{v:g} looks like g/dL; g/L = g/dL x 10 (e.g. {v * 10:g})" if 1.0 <= v <= 7.0 else None
    ),
    "total_bilirubin_umol_per_l": lambda v: (
        f"{v:g} looks like mg/dL; umol/L = mg/dL x 17.1 (e.g. {v * 17.1:.1f})"
        if 0.0 < v < 2.0
        else None
    ),
    "platelets_10e9_per_l": lambda v: (
        f"{v:g} looks like a count per uL (per mm^3); 10^9/L = per uL / 1000 (e.g. {v / 1000:g})"
        if v >= 5000
        else None
    ),
    "max_tumour_diameter_mm": lambda v: (
        f"{v:g} looks like cm; mm = cm x 10 (e.g. {v * 10:g})" if 0.1 <= v < 10.0 else None
    ),
    "alt_u_per_l": lambda v: (
        f"{v:g} looks like ukat/L; U/L = ukat/L x 60 (e.g. {v * 60:g})" if 0 < v < 1 else None
    ),
    "ast_u_per_l": lambda v: (
        f"{v:g} looks like ukat/L; U/L = ukat/L x 60 (e.g. {v * 60:g})" if 0 < v < 1 else None
    ),
    "prothrombin_time_s": lambda v: (
        f"{v:g} looks like an INR, not a time in seconds" if 0.5 <= v < 8.0 else None
    ),
    "inr": lambda v: (
        f"{v:g} looks like a prothrombin time in seconds, not an INR" if 8.0 < v <= 60 else None
    ),
    "age_years": lambda v: f"{v:g} looks like months, not years" if 216 <= v <= 1200 else None,
}


class ClinicalVariables(FrozenModel):
    """The 20 clinical variables of one patient (paper units; see the module doc)."""

    model_config = ConfigDict(  # frozen and strict from FrozenModel
        use_enum_values=False,
        allow_inf_nan=False,
        json_schema_extra={"title": "hccatom clinical variables (SELECTION, 20 fields)"},
    )

    # lab group
    albumin_g_per_l: float = _num("albumin_g_per_l", "Serum albumin")
    alt_u_per_l: float = _num("alt_u_per_l", "Alanine aminotransferase")
    ast_u_per_l: float = _num("ast_u_per_l", "Aspartate aminotransferase")
    total_bilirubin_umol_per_l: float = _num("total_bilirubin_umol_per_l", "Total bilirubin")
    prothrombin_time_s: float = _num("prothrombin_time_s", "Prothrombin time")
    inr: float = _num("inr", "International normalised ratio")
    platelets_10e9_per_l: float = _num("platelets_10e9_per_l", "Platelet count")
    child_pugh_score: int = _num("child_pugh_score", "Child-Pugh score (integer)")
    # demo group
    age_years: float = _num("age_years", "Age")
    sex: Sex = Field(description="Sex: 'male' or 'female'")
    ecog: int = _num("ecog", "ECOG performance status (integer)")
    comorbidity: bool = Field(description="Any relevant comorbidity (true/false)")
    hbv: bool = Field(description="Hepatitis B virus infection (true/false)")
    ascites: bool = Field(description="Ascites present (true/false)")
    # IV (tumour) group
    afp_ng_per_ml: float = _num("afp_ng_per_ml", "Alpha-fetoprotein")
    tumour_number: int = _num(
        "tumour_number",
        "Count of intrahepatic lesions (integer; for 'multiple' enter the smallest known "
        "count, >= 2)",
    )
    max_tumour_diameter_mm: float = _num(
        "max_tumour_diameter_mm", "Largest tumour diameter (not radius)"
    )
    bclc_stage: BclcStage = Field(description="BCLC stage: 'A', 'B' or 'C'")
    metastasis: bool = Field(description="Extrahepatic metastasis (true/false)")
    pvtt: bool = Field(description="Portal vein tumour thrombus / vascular invasion (true/false)")

    GROUPS: ClassVar[dict[str, tuple[str, ...]]] = GROUPS

    # Strict types (documented in the module doc): a clinical value typed as text ("38.5",
    # "yes", "off") is refused, not converted, so that a mis-mapped spreadsheet column
    # cannot pass silently.
    @field_validator(*_NUMERIC_FIELDS, mode="before")
    @classmethod
    def _number_not_text(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("not a number")
        return value

    @field_validator(*_BOOL_FIELDS, mode="before")
    @classmethod
    def _bool_not_text(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError("not a boolean")
        return value

    def __init__(self, **data: Any) -> None:
        """Validate; on failure raise :class:`ClinicalInputError` listing every bad field.

        The metadata keys :data:`METADATA_KEYS` (``patient_id``, ``case_id``, ``notes``) are
        accepted and dropped; any other unknown key is an error (see :meth:`from_mapping`
        for ``extra="ignore"``).
        """
        _check_key_count(data)
        values = {k: v for k, v in data.items() if k not in METADATA_KEYS}
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _to_clinical_error(exc, values) from None

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], *, extra: Literal["forbid", "ignore"] = "forbid"
    ) -> ClinicalVariables:
        """Build from a dict (e.g. parsed JSON); missing fields are errors.

        Unknown keys: ``extra="forbid"`` (default) reports them all in one error;
        ``extra="ignore"`` drops them (e.g. a viewer's own fields). The metadata keys
        :data:`METADATA_KEYS` are always accepted and dropped.
        """
        if extra not in ("forbid", "ignore"):
            raise ValueError(f"extra must be 'forbid' or 'ignore', got {extra!r}")
        if not isinstance(values, Mapping):
            raise ClinicalInputError(
                f"Clinical variables must be a mapping of field -> value, got "
                f"{type(values).__name__}."
            )
        _check_key_count(values)
        bad_keys = [k for k in values if not isinstance(k, str)]
        if bad_keys:
            shown = ", ".join(_echo(k) for k in bad_keys[:_MAX_LISTED])
            raise ClinicalInputError(
                f"Clinical variable names must be strings; got {shown}.",
                [(_echo(k), "not a string field name") for k in bad_keys[:_MAX_LISTED]],
            )
        data = dict(values)
        if extra == "ignore":
            data = {k: v for k, v in data.items() if k in cls.model_fields}
        return cls(**data)

    @classmethod
    def from_json(
        cls, path: str | Path, *, extra: Literal["forbid", "ignore"] = "forbid"
    ) -> ClinicalVariables:
        """Read a JSON object of the 20 fields from a file (size, depth and number length
        limited by :data:`CLINICAL_JSON_LIMITS`); ``extra`` as in :meth:`from_mapping`."""
        p = Path(path)
        data = read_clinical_json(p, "Clinical file", "one JSON object of the 20 clinical "
                                  "variables", CLINICAL_JSON_LIMITS)
        if not isinstance(data, dict):
            raise ClinicalInputError(
                f"Clinical file {p} must hold a JSON object of field -> value, got "
                f"{type(data).__name__}."
            )
        return cls.from_mapping(data, extra=extra)

    def group_values(self, group: str) -> tuple[Any, ...]:
        """Raw values of one group (``lab``, ``demo`` or ``iv``) in the authors' order."""
        if group not in GROUPS:
            raise KeyError(f"unknown group {group!r}; expected one of {sorted(GROUPS)}")
        return tuple(getattr(self, name) for name in GROUPS[group])


def _allowed(name: str) -> str:
    if name in FIELD_RANGES:
        lo, hi, unit = FIELD_RANGES[name]
        kind = "integer" if isinstance(lo, int) else "number"
        return f"allowed: {kind} {lo:g}..{hi:g} {unit}"
    if name == "sex":
        return "allowed: 'male' or 'female'"
    if name == "bclc_stage":
        return "allowed: 'A', 'B' or 'C'"
    return "allowed: true or false"


def _check_key_count(values: Mapping[Any, Any]) -> None:
    if len(values) > MAX_KEYS:
        raise ClinicalInputError(
            f"Clinical variables: {len(values):,} keys given; a record holds the 20 variables "
            f"(and at most {MAX_KEYS} keys in all). Pass one patient's record."
        )


def _to_clinical_error(exc: ValidationError, data: Mapping[str, Any]) -> ClinicalInputError:
    problems: dict[str, str] = {}
    fields = ClinicalVariables.model_fields
    unknown: list[str] = []
    for err in exc.errors():
        loc = err["loc"]
        name = str(loc[0]) if loc else "<input>"
        if err["type"] == "extra_forbidden":
            unknown.append(name)
            continue
        if err["type"] == "missing":
            problems[name] = f"missing; {_allowed(name)}"
            continue
        value = data.get(name, err.get("input"))
        msg = f"got {_echo(value)}; {_allowed(name)}"
        if isinstance(value, str) and name not in ("sex", "bclc_stage"):
            msg += (
                " (text is not accepted for numbers or booleans: write 38.5, not \"38.5\"; "
                "true/false, not \"yes\"/\"off\"/1)"
            )
        elif isinstance(value, int | float) and not isinstance(value, bool) and (
            name in _BOOL_FIELDS
        ):
            msg += " (write true or false, not 1 or 0)"
        number = _finite_number(value)
        hint = _UNIT_HINTS.get(name)
        if number is not None and hint is not None:
            text = hint(number)
            if text:
                msg += f" (unit mix-up? {text})"
        if name not in fields:
            msg = f"{err['msg']}"
        problems[name] = msg
    for name in unknown[:_MAX_LISTED]:
        short = name if len(name) <= 40 else name[:37] + "..."
        problems[short] = (
            "not a known clinical variable (check the spelling and units in the name; see "
            "ClinicalVariables.model_json_schema(); the metadata keys "
            f"{', '.join(sorted(METADATA_KEYS))} are accepted; extra='ignore' on "
            "from_mapping/from_json drops unknown keys)"
        )
    if len(unknown) > _MAX_LISTED:
        problems["<more unknown keys>"] = (
            f"{len(unknown) - _MAX_LISTED} more unknown key(s), not listed"
        )
    ordered = sorted(problems.items(), key=lambda kv: _field_order(kv[0]))
    listing = "; ".join(f"{name}: {msg}" for name, msg in ordered)
    return ClinicalInputError(
        f"Invalid clinical variables ({len(ordered)} problem(s)): {listing}.", ordered
    )


def _field_order(name: str) -> tuple[int, str]:
    names = list(ClinicalVariables.model_fields)
    return (names.index(name) if name in names else len(names), name)


def read_clinical_json(path: str | Path, what: str, expected: str,
                       limits: JSONLimits = CLINICAL_COHORT_JSON_LIMITS) -> Any:
    """The parsed JSON of a user's clinical file, read within ``limits`` (size, depth, digits
    per number: :mod:`hccatom.safe_json`). Any failure is a :class:`ClinicalInputError` that
    names ``what`` (e.g. "Training cohort file") and the path, and says what to pass
    (``expected``); no file content is echoed."""
    p = Path(path)
    if os.path.lexists(p) and not os.path.isdir(p):  # FIFO, device, link loop, size: unopened
        check_input_file(p, what, error=ClinicalInputError, max_bytes=limits.max_bytes)
    try:
        return load_limited(p, limits, what=what, error=ClinicalInputError)
    except FileNotFoundError:
        raise ClinicalInputError(f"{what} not found: {p}. Pass {expected}.") from None
    except IsADirectoryError:
        raise ClinicalInputError(f"{what} {p} is a folder; pass {expected}.") from None
    except OSError as exc:
        raise ClinicalInputError(
            f"Cannot read {what.lower()} {p}: {exc.strerror or type(exc).__name__}."
        ) from None
    except JSONLimitError as exc:
        raise ClinicalInputError(f"{what} {p} cannot be used: {exc}. Pass {expected}.") from None


def clinical_records(items: list[Any], where: str) -> list[ClinicalVariables]:
    """Every item of a JSON list of clinical records as :class:`ClinicalVariables`; the first
    bad one raises :class:`ClinicalInputError` naming ``where`` and its index."""
    records = []
    for i, rec in enumerate(items):
        try:
            records.append(ClinicalVariables.from_mapping(rec))
        except ClinicalInputError as exc:
            raise ClinicalInputError(f"{where}, record {i}: {exc}", exc.problems) from None
    return records
