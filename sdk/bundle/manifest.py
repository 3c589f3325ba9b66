"""The bundle manifest (``manifest.json``): a versioned pydantic schema.

A bundle is a directory (or a zip of one) holding ``manifest.json`` at its root and the
model files it lists. The manifest is the single source of truth for everything a trained
model depends on: CT preprocessing, the segmentation model's plan values, the SELECTION input
contract (image size, normalisation, clinical encoding), the MSS thresholds, the ATOM policy
and the export parity reports. Every file carries its sha256 and size.

Schema versions are ``"MAJOR.MINOR"``. This runtime reads major version
:data:`SUPPORTED_MAJOR`; a newer minor version of the same major adds optional fields only
(older readers ignore them), a new major version is refused.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any, Final

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from hccatom.atom import MODELS, AtomPolicy
from hccatom.bundle.explain_spec import ExplainSpec
from hccatom.bundle.specs import (
    ClinicalEncoding,
    PreprocessSpec,
    SafetyLimits,
    SegmentationSpec,
)
from hccatom.model_base import ManifestModel, without_absent

#: The schema version this runtime writes.
SCHEMA_VERSION: Final[str] = "1.1"
#: The schema major versions this runtime reads.
SUPPORTED_MAJOR: Final[tuple[int, ...]] = (1,)

RESEARCH_USE_ONLY: Final[str] = (
    "Research use only. Not a medical device; not validated for clinical decisions."
)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^(\d+)\.(\d+)$")


def parse_schema_version(value: str) -> tuple[int, int]:
    """``"1.0"`` -> ``(1, 0)``; raises ValueError for anything else."""
    m = _VERSION.match(str(value))
    if not m:
        raise ValueError(f"schema_version must look like 'MAJOR.MINOR', got {value!r}")
    return int(m.group(1)), int(m.group(2))


def safe_relative_path(value: str) -> str:
    """Validate a bundle-relative POSIX path: no absolute path, no '..', no backslash."""
    if not value or "\\" in value or value.startswith("/") or ":" in value.split("/")[0]:
        raise ValueError(f"bundle paths must be relative POSIX paths, got {value!r}")
    parts = PurePosixPath(value).parts
    if any(p in ("..", ".", "") for p in parts):
        raise ValueError(f"bundle paths may not contain '.' or '..' parts, got {value!r}")
    return str(PurePosixPath(*parts))


class FileEntry(ManifestModel):
    """One file of the bundle, with its checksum."""

    path: str = Field(description="Relative POSIX path inside the bundle.")
    sha256: str = Field(description="Lower-case hex sha256 of the file's bytes.")
    size_bytes: int = Field(ge=0)
    role: str = Field(
        description="What the file is: 'segmentation', 'selection.TACE', 'selection.fused', "
        "'parity', 'spec', ..."
    )

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return safe_relative_path(v)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        if not _SHA256.match(v):
            raise ValueError(f"sha256 must be 64 lower-case hex digits, got {v!r}")
        return v


class Provenance(ManifestModel):
    """Who made which model from what; free text, never patient identifiers."""

    trained_by: str = Field(default="unspecified", description="Site or team that trained.")
    training_data: str = Field(default="unspecified", description="Cohorts / data, in words.")
    models: dict[str, str] = Field(
        default_factory=dict, description="Per model (TACE, ..., segmentation): a description."
    )
    exported_with: str = Field(default="", description="Tool and version that built it.")
    notes: str = ""


class SelectionIO(ManifestModel):
    """Tensor names of the SELECTION ONNX graphs (the export's contract)."""

    arterial: str = "arterial"
    portal: str = "portal"
    lab: str = "lab"
    demo: str = "demo"
    iv: str = "iv"
    score: str = Field(default="score", description="Per-model output (B, 1), in [0, 1].")
    fused_scores: str = Field(
        default="scores", description="Fused graph output (B, 4) in the order TACE, HAIC, TC, HC."
    )


class SelectionModel(ManifestModel):
    """One SELECTION model file (one cohort) or the fused four-model file."""

    path: str = Field(description="Bundle-relative path of the ONNX file.")
    parity: str | None = Field(default=None, description="Path of its parity report, if any.")
    path_fp16: str | None = Field(
        default=None, description="Optional fp16 twin (fp32 inputs/outputs), kept only after "
        "its parity gate against the fp32 graph passed."
    )
    parity_fp16: str | None = Field(default=None, description="The fp16 gate's report.")

    @model_serializer(mode="wrap")
    def _omit_absent_fp16(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # fp32-only entries serialise exactly as before
        return without_absent(handler(self), ("path_fp16", "parity_fp16"))

    @field_validator("path", "parity", "path_fp16", "parity_fp16")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return None if v is None else safe_relative_path(v)


class SelectionSpec(ManifestModel):
    """The SELECTION input contract and model files.

    Either ``fused`` (one graph returning the four scores) or ``models`` with all four
    cohorts, or both (the fused graph is then preferred at runtime).
    """

    image_size_px: int = Field(default=224, gt=0, description="Square input image side (px).")
    image_channels: int = Field(default=3, gt=0)
    norm_mean: float = Field(default=0.5, description="Per-channel mean after [0,1] scaling.")
    norm_std: float = Field(default=0.5, gt=0)
    clinical_encoding: ClinicalEncoding
    io: SelectionIO = Field(default_factory=SelectionIO)
    models: dict[str, SelectionModel] = Field(
        default_factory=dict, description="Separate per-cohort graphs, keyed TACE/HAIC/TC/HC."
    )
    fused: SelectionModel | None = None
    fused_order: tuple[str, ...] = Field(default=MODELS, description="Order of fused scores.")
    explain: ExplainSpec | None = Field(
        default=None, description="Optional explain graphs and clinical reference values "
        "(hccatom.bundle.explain_spec); absent in bundles exported without --explain.")

    @model_serializer(mode="wrap")
    def _omit_absent_explain(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # bundles without it serialise as before
        return without_absent(handler(self), ("explain",))

    @model_validator(mode="after")
    def _complete(self) -> SelectionSpec:
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown:
            raise ValueError(f"unknown SELECTION model(s) {unknown}; expected {list(MODELS)}")
        if self.fused is None:
            missing = [m for m in MODELS if m not in self.models]
            if missing:
                raise ValueError(
                    f"SELECTION models missing: {missing}; give all four or a fused model"
                )
        if sorted(self.fused_order) != sorted(MODELS):
            raise ValueError(f"fused_order must be a permutation of {list(MODELS)}")
        return self


class SegmentationSection(ManifestModel):
    """Where the segmentation export lives in the bundle, and its spec."""

    directory: str = Field(
        default="segmentation", description="Bundle-relative folder of the segmentation export."
    )
    spec: SegmentationSpec

    @field_validator("directory")
    @classmethod
    def _dir(cls, v: str) -> str:
        return safe_relative_path(v)


class Manifest(ManifestModel):
    """``manifest.json``: everything the runtime needs to know about a bundle."""

    schema_version: str = Field(default=SCHEMA_VERSION, description="'MAJOR.MINOR'.")
    name: str = Field(min_length=1)
    version: str = Field(min_length=1, description="The bundle's own version.")
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    intended_use: str = RESEARCH_USE_ONLY
    synthetic: bool = Field(
        default=False, description="True when the models were trained on synthetic data only."
    )
    provenance: Provenance = Field(default_factory=Provenance)
    files: list[FileEntry]
    preprocessing: PreprocessSpec
    segmentation: SegmentationSection
    selection: SelectionSpec
    thresholds: dict[str, float] = Field(description="MSS per model (TACE, HAIC, TC, HC).")
    policy: AtomPolicy = Field(default_factory=AtomPolicy.atom_v1)
    parity: dict[str, Any] = Field(
        default_factory=dict, description="Export parity reports keyed by model role."
    )
    safety: SafetyLimits | None = Field(
        default=None, description="Limits behind quality flags and plausibility errors, and "
        "the training cohort's clinical ranges (docs/safety.md); None: runtime defaults."
    )

    @field_validator("schema_version")
    @classmethod
    def _schema(cls, v: str) -> str:
        parse_schema_version(v)
        return v

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != set(MODELS):
            raise ValueError(f"thresholds must have exactly {list(MODELS)}, got {sorted(v)}")
        for k, x in v.items():
            if not (math.isfinite(x) and 0.0 < x < 1.0):
                raise ValueError(f"threshold {k} = {x} must be strictly between 0 and 1")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        paths = [f.path for f in self.files]
        dupes = sorted({p for p in paths if paths.count(p) > 1})
        if dupes:
            raise ValueError(f"files listed twice: {dupes}")
        listed = set(paths)
        sel_models = [*self.selection.models.values(),
                      *([self.selection.fused] if self.selection.fused is not None else [])]
        refs = [p for m in sel_models for p in (m.path, m.parity, m.path_fp16, m.parity_fp16)
                if p]
        if self.selection.explain is not None:  # explain graphs are checksummed files too
            refs += list(self.selection.explain.graphs.values())
        missing = sorted(set(refs) - listed)
        if missing:
            raise ValueError(f"SELECTION files not listed in 'files': {missing}")
        seg_dir = self.segmentation.directory + "/"
        if not any(p.startswith(seg_dir) for p in listed):
            raise ValueError(f"no files listed under the segmentation folder {seg_dir!r}")
        by_path = {f.path: f for f in self.files}
        for fold in self.segmentation.spec.all_folds():  # every stage and ensemble member
            rel = f"{self.segmentation.directory}/{fold.onnx}"
            entry = by_path.get(rel)
            if entry is None:
                raise ValueError(f"segmentation fold {fold.fold} file {rel!r} is not listed")
            if entry.sha256 != fold.sha256:
                raise ValueError(
                    f"segmentation fold {fold.fold}: the spec's sha256 differs from {rel!r}'s"
                )
            if fold.onnx_fp16 is not None:
                rel16 = f"{self.segmentation.directory}/{fold.onnx_fp16}"
                entry16 = by_path.get(rel16)
                if entry16 is None or entry16.sha256 != fold.sha256_fp16:
                    raise ValueError(
                        f"segmentation fold {fold.fold}: fp16 file {rel16!r} is not listed "
                        "or its sha256 differs from the spec's"
                    )
        for name in ("image_size_px", "norm_mean", "norm_std"):
            pre = getattr(self.preprocessing, name, None)
            if pre is not None and pre != getattr(self.selection, name):
                raise ValueError(
                    f"preprocessing.{name} = {pre} but selection.{name} = "
                    f"{getattr(self.selection, name)}: the model image must match the model input"
                )
        return self

    @property
    def schema_major(self) -> int:
        """Major part of ``schema_version``."""
        return parse_schema_version(self.schema_version)[0]

    def file(self, path: str) -> FileEntry:
        """The entry of ``path`` (KeyError when not listed)."""
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    def files_with_role(self, prefix: str) -> list[FileEntry]:
        """Entries whose role equals ``prefix`` or starts with ``prefix + '.'``."""
        return [f for f in self.files if f.role == prefix or f.role.startswith(prefix + ".")]


__all__ = [
    "RESEARCH_USE_ONLY",
    "SCHEMA_VERSION",
    "SUPPORTED_MAJOR",
    "FileEntry",
    "Manifest",
    "Provenance",
    "SegmentationSection",
    "SelectionIO",
    "SelectionModel",
    "SelectionSpec",
    "parse_schema_version",
    "safe_relative_path",
]
