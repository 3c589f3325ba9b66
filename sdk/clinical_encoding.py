"""``ClinicalEncoding``: how ClinicalVariables become the model's three float32 vectors.

A SELECTION model reads the 20 clinical values as three groups (``lab`` 8, ``demo`` 6,
``iv`` 6) in the authors' order. A trained model depends on the exact order, the coding of
categories and any scaling it was trained with, so the encoding is a spec stored in the
bundle, not code. Each of the 20 slots says::

    value = (transform(clinical.<source>) - offset) / scale

with ``transform`` one of ``identity`` (numbers), ``log1p`` (skewed non-negative numbers such
as AFP), ``bool01`` (False -> 0, True -> 1) or ``enum`` (``mapping`` from the category's
value, e.g. ``{"A": 0, "B": 1, "C": 2}``), then optionally clipped to ``clip``
(``[low, high]`` applied after the transform, before offset/scale; e.g. tumour number capped
at 3 for "3 or more").

:meth:`ClinicalEncoding.raw_values` feeds hccatom's 20 fields as they are (offset 0, scale 1)
in the authors' group order. It is *not* the paper's encoding and not quite the authors'
loader; the differences:

* tumour size: it feeds the maximum tumour *diameter* in mm; the authors' loader feeds the
  maximum tumour *radius* (``MaximumRadius``; its unit is not in their code, and Table 1
  reports diameters in cm);
* AFP and tumour number: fed raw, as the authors' loader does, whereas the paper's Table 1
  groups them (AFP <= 400 / > 400 ng/mL, tumour number <= 3 / > 3; diameter < 5, 5-10,
  > 10 cm); the groups are a table's, no model input in the public code uses them;
* the coding of categories is published nowhere (neither the paper nor the code): sex
  male=1/female=0, BCLC A=0/B=1/C=2, booleans 0/1 and ECOG as its integer are assumptions.

:meth:`ClinicalEncoding.authors_loader` matches the authors' loader field by field (their
``Data.__getitem__`` in ``SELECTION.py``, github.com/banterlin/SELECTION): the same 20 columns
in the same order, raw, with the tumour radius derived from the diameter in the unit you
state; its category coding is the same assumption as above. A bundle built from a real
checkpoint must record the coding its model was trained with.
:meth:`ClinicalEncoding.fit_standardise` builds a standardising encoding (offset = mean,
scale = standard deviation of the training data) for continuous variables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from hccatom.clinical import GROUPS, BclcStage, ClinicalVariables, Sex
from hccatom.errors import ClinicalInputError
from hccatom.model_base import FrozenModel

__all__ = ["GROUP_SIZES", "ClinicalEncoding", "EncodingSlot", "Group", "Transform"]

Group = Literal["lab", "demo", "iv"]
Transform = Literal["identity", "log1p", "bool01", "enum"]
GROUP_SIZES: dict[str, int] = {name: len(fields) for name, fields in GROUPS.items()}

_BOOL_FIELDS = frozenset(
    n for n, f in ClinicalVariables.model_fields.items() if f.annotation in (bool, "bool")
)
_ENUM_FIELDS: dict[str, type[Enum]] = {"sex": Sex, "bclc_stage": BclcStage}


class EncodingSlot(FrozenModel):
    """One model input position: where it comes from and how it is transformed."""

    group: Group
    position: int = Field(ge=0, description="Index inside the group's vector")
    source: str = Field(description="ClinicalVariables field name")
    transform: Transform = "identity"
    mapping: dict[str, float] | None = Field(
        default=None, description="For transform 'enum': category value -> number"
    )
    clip: tuple[float, float] | None = Field(
        default=None, description="Optional [low, high] applied after the transform"
    )
    offset: float = 0.0
    scale: float = 1.0

    @field_validator("offset", "scale")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must be non-zero")
        return v

    @model_validator(mode="after")
    def _check_source(self) -> EncodingSlot:
        if self.source not in ClinicalVariables.model_fields:
            raise ValueError(f"unknown source field {self.source!r}")
        if self.transform == "bool01" and self.source not in _BOOL_FIELDS:
            raise ValueError(f"transform bool01 needs a true/false field, {self.source} is not")
        if self.source in _BOOL_FIELDS and self.transform not in ("bool01", "enum"):
            raise ValueError(f"{self.source} is true/false: use transform bool01")
        if self.source in _ENUM_FIELDS:
            if self.transform != "enum":
                raise ValueError(f"{self.source} is a category: use transform 'enum'")
            allowed = {m.value for m in _ENUM_FIELDS[self.source]}
            if self.mapping is None or set(self.mapping) != allowed:
                raise ValueError(f"{self.source} needs a mapping for exactly {sorted(allowed)}")
        elif self.transform == "enum":
            if self.source not in _BOOL_FIELDS:
                raise ValueError(f"transform enum is only for categories, not {self.source}")
            if self.mapping is None or set(self.mapping) != {"false", "true"}:
                raise ValueError(f"{self.source} enum mapping needs keys 'false' and 'true'")
        elif self.mapping is not None:
            raise ValueError("mapping is only used with transform 'enum'")
        if self.clip is not None and not self.clip[0] <= self.clip[1]:
            raise ValueError("clip must be [low, high] with low <= high")
        return self

    def raw(self, clinical: ClinicalVariables) -> float:
        """The slot's value after transform and clip, before offset/scale."""
        value: Any = getattr(clinical, self.source)
        if self.transform == "enum":
            assert self.mapping is not None
            key = value.value if isinstance(value, Enum) else str(value).lower()
            out = float(self.mapping[key])
        elif self.transform == "bool01":
            out = 1.0 if value else 0.0
        elif self.transform == "log1p":
            out = math.log1p(float(value))
        else:
            out = float(value)
        if self.clip is not None:
            out = min(max(out, self.clip[0]), self.clip[1])
        return out

    def encode(self, clinical: ClinicalVariables) -> float:
        """The slot's final value: ``(raw - offset) / scale``."""
        return (self.raw(clinical) - self.offset) / self.scale


class ClinicalEncoding(FrozenModel):
    """The 20 slots that turn ClinicalVariables into ``lab`` (8), ``demo`` (6), ``iv`` (6)."""

    slots: tuple[EncodingSlot, ...]
    description: str = ""

    @model_validator(mode="after")
    def _check_complete(self) -> ClinicalEncoding:
        problems: list[str] = []
        for group, size in GROUP_SIZES.items():
            positions = sorted(s.position for s in self.slots if s.group == group)
            if positions != list(range(size)):
                problems.append(
                    f"group {group} needs positions 0..{size - 1} exactly once, got {positions}"
                )
        sources = [s.source for s in self.slots]
        dups = sorted({s for s in sources if sources.count(s) > 1})
        if dups:
            problems.append(f"fields used more than once: {dups}")
        missing = sorted(set(ClinicalVariables.model_fields) - set(sources))
        if missing:
            problems.append(f"fields not encoded: {missing}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def ordered(self, group: str) -> list[EncodingSlot]:
        """The slots of one group sorted by position."""
        return sorted((s for s in self.slots if s.group == group), key=lambda s: s.position)

    def encode(self, clinical: ClinicalVariables) -> dict[str, np.ndarray]:
        """Encode one patient: float32 vectors ``lab`` (8,), ``demo`` (6,), ``iv`` (6,)."""
        return {
            group: np.asarray([s.encode(clinical) for s in self.ordered(group)], np.float32)
            for group in GROUP_SIZES
        }

    def encode_batch(self, clinicals: Sequence[ClinicalVariables]) -> dict[str, np.ndarray]:
        """Encode several patients: float32 arrays ``(B, 8)``, ``(B, 6)``, ``(B, 6)``."""
        rows = [self.encode(c) for c in clinicals]
        return {
            g: np.stack([r[g] for r in rows]) if rows else np.zeros((0, n), np.float32)
            for g, n in GROUP_SIZES.items()
        }

    @classmethod
    def raw_values(cls) -> ClinicalEncoding:
        """hccatom's fields as they are, in the authors' group order, no scaling.

        Not the authors' loader (tumour diameter, not radius) and not the paper's Table 1
        groups; see the module docstring for each difference.
        """
        slots = []
        for group, fields in GROUPS.items():
            for position, name in enumerate(fields):
                slots.append(_default_slot(group, position, name))
        return cls(
            slots=tuple(slots),
            description=(
                "Raw values: hccatom's fields unscaled in the authors' group order (maximum "
                "tumour diameter in mm, where the authors' loader feeds the radius); sex "
                "male=1/female=0, BCLC A=0/B=1/C=2, booleans 0/1 (category coding assumed)."
            ),
        )

    @classmethod
    def authors_loader(cls, radius_unit: Literal["mm", "cm"]) -> ClinicalEncoding:
        """The authors' loader, field by field (``SELECTION.py``, ``Data.__getitem__``).

        Their columns, in order: ``lab`` = ALB, ALT, AST, TBIL, PT, INR, PLT,
        ``child-pugh (5 or 6 or 7)``; ``demo`` = age, sex, ECOG, comorbidity, hepatitis,
        ascites; ``IV`` = AFP, ``tumour_n``, ``MaximumRadius``, ``BCLC``, metastasis, PVTT;
        all fed raw (no normalisation). hccatom's fields map one to one, except that
        ``MaximumRadius`` = ``max_tumour_diameter_mm`` / 2, in ``radius_unit`` (not stated in
        their code; Table 1 gives diameters in cm): scale 2 for mm, 20 for cm. The coding of
        sex, BCLC and the yes/no columns is not published: assumed as in :meth:`raw_values`.
        """
        if radius_unit not in ("mm", "cm"):
            raise ClinicalInputError(
                f"authors_loader: radius_unit must be 'mm' or 'cm', got {radius_unit!r}."
            )
        scale = 2.0 if radius_unit == "mm" else 20.0
        slots = [
            s.model_copy(update={"scale": scale}) if s.source == "max_tumour_diameter_mm" else s
            for s in cls.raw_values().slots
        ]
        return cls(
            slots=tuple(slots),
            description=(
                "Authors' loader (SELECTION.py Data.__getitem__, github.com/banterlin/SELECTION):"
                f" raw values in their column order, MaximumRadius = diameter / 2 in "
                f"{radius_unit}; sex male=1/female=0, BCLC A=0/B=1/C=2, booleans 0/1 (category "
                "coding assumed)."
            ),
        )

    @classmethod
    def fit_standardise(
        cls,
        clinicals: Sequence[ClinicalVariables],
        *,
        base: ClinicalEncoding | None = None,
        log1p_fields: Iterable[str] = (),
        standardise_categorical: bool = False,
    ) -> ClinicalEncoding:
        """An encoding whose continuous slots have mean 0 / std 1 on ``clinicals``.

        Starts from ``base`` (default :meth:`raw_values`); fields in ``log1p_fields``
        get the ``log1p`` transform first. Boolean and category slots are standardised only
        if ``standardise_categorical``. A constant slot keeps scale 1 (offset = its value).
        """
        if len(clinicals) < 2:
            raise ClinicalInputError(
                f"fit_standardise needs at least 2 patients, got {len(clinicals)}."
            )
        base = base or cls.raw_values()
        log_set = set(log1p_fields)
        unknown = log_set - set(ClinicalVariables.model_fields)
        if unknown:
            raise ClinicalInputError(
                f"fit_standardise: unknown log1p_fields {sorted(unknown)}; use ClinicalVariables "
                "field names."
            )
        slots = []
        for slot in base.slots:
            categorical = slot.transform in ("bool01", "enum")
            if slot.source in log_set:
                if categorical:
                    raise ClinicalInputError(
                        f"fit_standardise: {slot.source} is categorical; log1p does not apply."
                    )
                slot = slot.model_copy(update={"transform": "log1p"})
            if categorical and not standardise_categorical:
                slots.append(slot.model_copy(update={"offset": 0.0, "scale": 1.0}))
                continue
            values = np.asarray([slot.raw(c) for c in clinicals], dtype=np.float64)
            mean, std = float(values.mean()), float(values.std())
            slots.append(
                slot.model_copy(update={"offset": mean, "scale": std if std > 1e-12 else 1.0})
            )
        return cls(
            slots=tuple(slots),
            description=f"Standardised on {len(clinicals)} patients "
            f"(log1p: {sorted(log_set) or 'none'}).",
        )


#: The authors' codes of the categorical variables (the raw-values default encoding).
_DEFAULT_ENUM_CODES: dict[str, dict[str, float]] = {
    "sex": {"male": 1.0, "female": 0.0},
    "bclc_stage": {"A": 0.0, "B": 1.0, "C": 2.0},
}


def _default_slot(group: str, position: int, name: str) -> EncodingSlot:
    transform: Transform = ("enum" if name in _DEFAULT_ENUM_CODES
                            else "bool01" if name in _BOOL_FIELDS else "identity")
    return EncodingSlot(
        group=group,  # type: ignore[arg-type]
        position=position,
        source=name,
        transform=transform,
        mapping=_DEFAULT_ENUM_CODES.get(name),
    )
