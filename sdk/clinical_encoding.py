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

:meth:`ClinicalEncoding.paper_default` reproduces the authors' public code, which feeds the
raw values without any normalisation (offset 0, scale 1). The coding of categories is not
published; the default uses sex male=1/female=0, BCLC A=0/B=1/C=2, booleans 0/1 and ECOG as
its integer. A bundle built from a real checkpoint must record the coding its model was
trained with. :meth:`ClinicalEncoding.fit_standardise` builds a standardising encoding
(offset = mean, scale = standard deviation of the training data) for continuous variables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hccatom.clinical import GROUPS, BclcStage, ClinicalVariables, Sex
from hccatom.errors import ClinicalInputError

__all__ = ["GROUP_SIZES", "ClinicalEncoding", "EncodingSlot", "Group", "Transform"]

Group = Literal["lab", "demo", "iv"]
Transform = Literal["identity", "log1p", "bool01", "enum"]
GROUP_SIZES: dict[str, int] = {name: len(fields) for name, fields in GROUPS.items()}

_BOOL_FIELDS = frozenset(
    n for n, f in ClinicalVariables.model_fields.items() if f.annotation in (bool, "bool")
)
_ENUM_FIELDS: dict[str, type[Enum]] = {"sex": Sex, "bclc_stage": BclcStage}


class EncodingSlot(BaseModel):
    """One model input position: where it comes from and how it is transformed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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


class ClinicalEncoding(BaseModel):
    """The 20 slots that turn ClinicalVariables into ``lab`` (8), ``demo`` (6), ``iv`` (6)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    def paper_default(cls) -> ClinicalEncoding:
        """Raw values in the authors' group order, no scaling (as their public code)."""
        slots = []
        for group, fields in GROUPS.items():
            for position, name in enumerate(fields):
                slots.append(_default_slot(group, position, name))
        return cls(
            slots=tuple(slots),
            description=(
                "Paper default: raw values in the authors' group order, no normalisation; "
                "sex male=1/female=0, BCLC A=0/B=1/C=2, booleans 0/1 (category coding assumed)."
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

        Starts from ``base`` (default :meth:`paper_default`); fields in ``log1p_fields``
        get the ``log1p`` transform first. Boolean and category slots are standardised only
        if ``standardise_categorical``. A constant slot keeps scale 1 (offset = its value).
        """
        if len(clinicals) < 2:
            raise ClinicalInputError(
                f"fit_standardise needs at least 2 patients, got {len(clinicals)}."
            )
        base = base or cls.paper_default()
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


def _default_slot(group: str, position: int, name: str) -> EncodingSlot:
    if name == "sex":
        return EncodingSlot(
            group=group,  # type: ignore[arg-type]
            position=position,
            source=name,
            transform="enum",
            mapping={"male": 1.0, "female": 0.0},
        )
    if name == "bclc_stage":
        return EncodingSlot(
            group=group,  # type: ignore[arg-type]
            position=position,
            source=name,
            transform="enum",
            mapping={"A": 0.0, "B": 1.0, "C": 2.0},
        )
    transform: Transform = "bool01" if name in _BOOL_FIELDS else "identity"
    return EncodingSlot(
        group=group,  # type: ignore[arg-type]
        position=position,
        source=name,
        transform=transform,
    )
