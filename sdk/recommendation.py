"""``Recommendation``: what one run of the chain returns (pydantic, JSON round trip).

It carries the ATOM decision (final plan, both stages, rationale), the four scores with
their thresholds and risk groups, per phase the slice the model saw, quality flags, per-stage
timings, the engine providers, which bundle produced it, and the research-use notice. It
holds no patient identifiers: nothing from the CT headers or the clinical record is copied
into it except what the decision needs (the scores).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, PrivateAttr

from hccatom.atom import MODELS, Decision, ModelAssessment
from hccatom.atom.policy import Plan
from hccatom.explain.result import Explanation
from hccatom.model_base import FrozenModel
from hccatom.phases import Phase

RESEARCH_USE_NOTICE: Final[str] = (
    "Research use only: hccatom is not a medical device and its recommendations are not "
    "validated for clinical decisions. ATOM's policy is a reconstruction of a published "
    "flowchart; every decision must be made by the treating team."
)


class SourceImage(FrozenModel):
    """The source DICOM image nearest to the chosen slice (DICOM input only)."""

    series_instance_uid: str
    sop_instance_uid: str
    instance_number: int | None = None
    distance_mm: float = Field(description="From the chosen slice centre to this image, mm.")


class InputSeries(FrozenModel):
    """Which series of a DICOM study was used for one phase, and why (no free text)."""

    series_instance_uid: str
    series_number: int | None = None
    n_slices: int
    slice_thickness_mm: float | None = Field(
        default=None, description="The Slice Thickness tag (may exceed the spacing: overlap).")
    slice_spacing_mm: float | None = Field(
        default=None, description="Distance between slice positions, mm: the volume's z "
        "spacing (None when positions are missing).")
    confidence: float = Field(description="0..1; 1 for an explicit choice.")
    rules: list[str] = Field(description="Rule ids of hccatom.dicom.phases that decided.")
    reasons: list[str]


class PhaseReport(FrozenModel):
    """The slice the SELECTION models saw for one phase, and how it was cropped."""

    slice_index: int = Field(description="z index in the resampled CT (slice_thickness_mm).")
    slice_position_mm: float = Field(description="Superior (z) LPS coordinate, mm.")
    tumour_area_mm2: float
    liver_area_mm2: float = Field(description="Liver including tumour on the slice, mm^2.")
    box_mm: float = Field(description="Side of the square crop box actually used, mm.")
    liver_extent_mm: tuple[float, float] = Field(description="(y, x) liver extent, mm.")
    liver_touches_border: bool
    box_enlarged: bool = Field(description="The liver was wider than the crop box.")
    padded: bool = Field(description="Part of the box was outside the image.")
    segmentation_voxels: dict[str, int] = Field(
        default_factory=dict, description="Voxel count per label in the whole phase."
    )
    segmentation_transfer_bytes: dict[str, int] = Field(
        default_factory=dict,
        description="Bytes the segmentation moved host -> device ('host_to_device', of "
        "which 'constant_inputs') and device -> host ('device_to_host'); on the CPU "
        "provider, what would cross the bus on a GPU.",
    )
    liver_volume_ml: float | None = Field(
        default=None, description="Segmented liver including tumour, whole phase, mL.")
    tumour_volume_ml: float | None = Field(
        default=None, description="Segmented tumour, whole phase, mL.")
    tumour_centroid_mm: tuple[float, float, float] | None = Field(
        default=None, description="Tumour centroid in patient coordinates (LPS mm, z y x).")
    tumour_confidence: float | None = Field(
        default=None, description="Mean max-probability inside the tumour (network grid).")
    synthetic_phantom: bool | None = Field(
        default=None, description="The input carries hccatom's synthetic-phantom marker.")
    source_image: SourceImage | None = Field(
        default=None, description="DICOM input: the source image of the chosen slice (the slice "
        "index above counts on the internal resampled grid)."
    )


Severity = Literal["info", "warning", "critical"]
"""``critical``: the result must not be read as clinical (e.g. synthetic models on a real
scan); ``warning``: check the input or the segmentation before using the result; ``info``:
context (e.g. default limits in use)."""


class QualityFlag(FrozenModel):
    """Something a reader of the recommendation should check; never blocks the result.

    Codes, severities and the limits behind them: ``docs/safety.md``.
    """

    code: str = Field(description="Stable identifier, e.g. 'liver_touches_border'.")
    phase: Phase | None = None
    message: str
    severity: Severity = "warning"
    values: dict[str, float | int | str | bool | None] = Field(
        default_factory=dict,
        description="The measured values and the limit behind the flag (units in the keys).")


class EngineInfo(FrozenModel):
    """Which execution providers ran the models."""

    device: str = Field(description="The device asked for ('auto', 'cpu', 'cuda', ...).")
    segmentation: list[str]
    selection: list[str]
    selection_layout: Literal["fused", "separate"]


class BundleRef(FrozenModel):
    """The bundle that produced the recommendation."""

    name: str
    version: str
    sha256: str = Field(description="The bundle digest: sha256 of the canonical manifest "
                        "bytes (names all files; hccatom.bundle.signature).")
    synthetic: bool = Field(description="True for bundles of models trained on synthetic data.")
    intended_use: str
    signature: Literal["unsigned", "untrusted", "verified"] = Field(
        default="unsigned", description="'verified': a trusted key's signature over this "
        "manifest was checked; 'untrusted': validly signed by a key not given as trusted; "
        "'unsigned': no signature. Only 'verified' attests thresholds and policy.")
    signature_verified: bool = Field(
        default=False, description="True when a trusted key's signature was verified.")
    signing_key_id: str | None = Field(default=None, description="Short id of the signer.")
    demo_key: bool = Field(
        default=False, description="Signed with the public demo key: proves nothing.")


class Recommendation(FrozenModel):
    """ATOM's recommendation for one patient, with everything needed to audit it."""

    final_plan: Plan
    decision: Decision
    scores: dict[str, ModelAssessment] = Field(
        description="TACE, HAIC, TC, HC: score, threshold (MSS), risk group, margin."
    )
    phases: dict[Phase, PhaseReport]
    quality_flags: list[QualityFlag] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(
        default_factory=dict, description="Wall time per stage in ms (plus 'total')."
    )
    engine: EngineInfo
    bundle: BundleRef
    notice: str = RESEARCH_USE_NOTICE
    hccatom_version: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    input_series: dict[Phase, InputSeries] | None = Field(
        default=None, description="DICOM study input: the series chosen per phase and why."
    )
    explanation: Explanation | None = Field(
        default=None, description="recommend(..., explain=True): attention rollout and "
        "clinical attributions per model (hccatom.explain).")
    _dicom: Any = PrivateAttr(default=None)
    """DICOM study input: labels and source geometry for :meth:`to_dicom` (not serialised)."""

    def to_dicom(self, out_dir: str | Path) -> list[Path]:
        """Write DICOM SEG (per phase), SR (TID 1500) and a report image into ``out_dir``.

        Only for a recommendation made from a DICOM study (``recommend(study=...)``) in
        this process; needs the dicom extra. Returns the files written.
        """
        from hccatom.dicom import require_extra

        require_extra()
        from hccatom.dicom.outputs import write_dicom

        return write_dicom(self, out_dir)

    def report(self, path: str | Path) -> Path:
        """Write the one-page visual report to ``path`` (``.pdf`` or ``.png``); needs the
        report extra (matplotlib). See :mod:`hccatom.report`."""
        from hccatom.report import write_report

        return write_report(self, path)

    # --- serialisation ---------------------------------------------------------------
    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """JSON text; also written to ``path`` when given."""
        text = self.model_dump_json(indent=indent)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> Recommendation:
        """Parse JSON text, or read it from a ``.json`` path (at most 64 MB; pydantic's
        parser bounds depth and numbers). Raises :class:`InputError` naming the file."""
        from hccatom.errors import InputError
        from hccatom.safe_json import JSONLimits, read_limited

        where = "the recommendation JSON text"
        text: str | bytes = source if isinstance(source, str) else ""
        try:
            if isinstance(source, Path) or not source.lstrip().startswith("{"):
                where = f"recommendation file {source}"
                text = read_limited(source, JSONLimits(max_bytes=64 << 20))
            return cls.model_validate_json(text)
        except (OSError, ValueError) as exc:  # JSONLimitError and ValidationError included
            raise InputError(f"{where} cannot be used: {exc}. Pass what "
                             "Recommendation.to_json wrote.") from None

    def comparable(self) -> dict[str, object]:
        """The content without run-dependent fields (timings, creation time)."""
        return self.model_dump(exclude={"timings_ms", "created_at"})

    # --- text --------------------------------------------------------------------------
    def summary(self, *, timings: bool = True) -> str:
        """A short readable summary: plan, scores vs thresholds, rationale, flags, timings."""
        d = self.decision
        lines = [f"WARNING: {f.message}" for f in self.quality_flags if f.severity == "critical"]
        lines.append(f"Recommendation: {self.final_plan}")
        if d.advice:
            lines.append(f"  {d.advice}")
        lines.append("Scores (vs MSS):")
        for m in MODELS:
            a = self.scores[m]
            lines.append(
                f"  {m:<5} {a.score:.3f}  {'>=' if a.favourable else '< '} {a.threshold:.4f}"
                f"  {a.risk_group} risk  (margin {a.margin:+.3f})"
            )
        lines.append(f"Why ({d.policy_id}):")
        lines += [f"  - [{r.rule_id}] {r.text}" for r in d.rationale if
                  not r.rule_id.startswith("risk.")]
        for name, ph in self.phases.items():
            src = ph.source_image
            where = (f"image {src.instance_number if src.instance_number is not None else '?'}"
                     f" (SOP {src.sop_instance_uid})" if src is not None
                     else f"slice {ph.slice_index}")
            lines.append(
                f"{name.capitalize()} {where} (z {ph.slice_position_mm:.1f} mm): "
                f"tumour {ph.tumour_area_mm2:.0f} mm^2, liver {ph.liver_area_mm2:.0f} mm^2"
            )
        others = [f for f in self.quality_flags if f.severity != "critical"]
        if others:
            lines.append("Quality flags:")
            lines += [f"  {'!' if f.severity == 'warning' else '-'} {f.message}" for f in others]
        if timings and self.timings_ms:
            total = self.timings_ms.get("total")
            parts = [f"{k} {v:.0f}" for k, v in self.timings_ms.items() if k != "total"]
            lines.append(
                "Timings (ms): " + ", ".join(parts)
                + (f"; total {total:.0f}" if total is not None else "")
            )
        lines.append(
            f"Bundle {self.bundle.name} {self.bundle.version} ({self.bundle.sha256[:12]}), "
            f"providers: segmentation {', '.join(self.engine.segmentation)}; "
            f"SELECTION {', '.join(self.engine.selection)}"
        )
        if self.bundle.synthetic:
            lines.append("NOTE: this bundle's models were trained on synthetic data only.")
        lines.append(f"Bundle signature: {self.bundle.signature}"
                     + (" (public demo key: proves nothing)" if self.bundle.demo_key else "")
                     + ("" if self.bundle.signature_verified else
                        "; thresholds and policy are not attested"))
        lines.append(self.notice)
        return "\n".join(lines)


__all__ = [
    "RESEARCH_USE_NOTICE",
    "BundleRef",
    "EngineInfo",
    "InputSeries",
    "PhaseReport",
    "QualityFlag",
    "Recommendation",
    "Severity",
    "SourceImage",
]
