"""One A4 page per study: what the models saw, what they scored, what ATOM decided, why.

Contents, top to bottom: the research-use banner (and "synthetic models" for synthetic
bundles); per phase the key slice with liver (green) and tumour (red) contours and the crop
box (yellow, dashed), and the model image; when the recommendation carries an explanation,
each model's rollout relevance over both model images; the four scores against their
thresholds (MSS) with the risk groups; the plan with the rule-by-rule rationale; the
clinical attributions (model sensitivities, not causal effects); quality flags and warnings
in a box; the bundle (name, version, digest, signature), the hccatom version and the notice.

Drawn with matplotlib's object API on an Agg/PDF canvas (no pyplot state, thread-safe) in
DejaVu Sans, which matplotlib ships, so a bare machine renders the same page.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hccatom.atom import MODELS
from hccatom.errors import HccatomError, InputError
from hccatom.explain.visual import key_slices
from hccatom.phases import PHASES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from hccatom.recommendation import Recommendation

A4_INCHES = (8.27, 11.69)
RESEARCH_BANNER = "RESEARCH USE ONLY - not a medical device, not for clinical decisions"
SYNTHETIC_BANNER = "SYNTHETIC MODELS - trained on synthetic data, no clinical meaning"
FORMATS = (".pdf", ".png")


class ReportUnavailableError(HccatomError):
    """The report cannot be drawn here (matplotlib missing: install the report extra)."""


def _require_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ReportUnavailableError(
            "The visual report needs matplotlib: pip install 'hccatom[report]'.")


def _key_slice(ax: Axes, ks: Any, title: str) -> None:
    """Key slice in a soft-tissue window, contours and the crop box."""
    from matplotlib.patches import Rectangle

    ax.imshow(np.clip(ks.hu, -100, 250), cmap="gray", vmin=-100, vmax=250,
              interpolation="nearest")
    organ = (ks.labels == ks.liver_label) | (ks.labels == ks.tumour_label)
    if organ.any():
        ax.contour(organ, levels=[0.5], colors=["lime"], linewidths=0.8)
    if (ks.labels == ks.tumour_label).any():
        ax.contour(ks.labels == ks.tumour_label, levels=[0.5], colors=["red"], linewidths=0.9)
    if ks.geometry is not None:
        r0, c0, hh, ww = ks.geometry.box_on_source()
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), ww, hh, fill=False, ec="yellow", ls="--",
                               lw=0.9))
        ax.set_xlim(min(-0.5, c0 - 1), max(ks.hu.shape[1] - 0.5, c0 + ww))
        ax.set_ylim(max(ks.hu.shape[0] - 0.5, r0 + hh), min(-0.5, r0 - 1))
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def _missing(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(text, 28)), ha="center", va="center",
            fontsize=6, color="dimgray", transform=ax.transAxes)
    ax.set_axis_off()


def _scores_chart(ax: Axes, rec: Recommendation) -> None:
    """Horizontal score bars with each model's threshold; colour = risk group."""
    ys = np.arange(len(MODELS))[::-1]
    for y, m in zip(ys, MODELS, strict=True):
        a = rec.scores[m]
        colour = "#2e7d32" if a.risk_group == "low" else "#c62828"
        ax.barh(y, a.score, color=colour, height=0.55)
        ax.plot([a.threshold, a.threshold], [y - 0.38, y + 0.38], color="black", lw=1.4)
        ax.text(1.02, y, f"{a.score:.3f} vs {a.threshold:.3f}: {a.risk_group} risk",
                va="center", fontsize=6.5, transform=ax.get_yaxis_transform())
    ax.set_yticks(ys, list(MODELS), fontsize=7)
    ax.set_xlim(0, 1)
    ax.tick_params(axis="x", labelsize=6)
    ax.set_xlabel("score (bar) and threshold MSS (black line); green = low risk, red = high",
                  fontsize=6)
    ax.set_title("SELECTION scores vs thresholds", fontsize=8, loc="left")


def _relevance_row(fig: Figure, rec: Recommendation, top: float, height: float) -> None:
    """Per model and phase: the model image with the rollout relevance over it."""
    visual = key_slices(rec)
    exp = rec.explanation
    fig.text(0.04, top + 0.005, "Where each model looked (attention rollout, relative within "
             "each image)", fontsize=8, weight="bold")
    if exp is None:
        fig.text(0.04, top - 0.02, "Not computed: run recommend(..., explain=True) with a "
                 "bundle exported with `hccatom export selection ... --explain`.",
                 fontsize=7, color="dimgray")
        return
    w = 0.92 / 8
    for i, m in enumerate(MODELS):
        for k, phase in enumerate(PHASES):
            ax = fig.add_axes((0.04 + (2 * i + k) * w, top - height, w * 0.96, height - 0.012))
            rel = exp.models[m].phases[phase]
            ks = visual.get(phase)
            if ks is not None:
                ax.imshow(ks.model_image, cmap="gray", interpolation="nearest")
            heat = rel.on_model_image()
            peak = float(np.max(heat)) or 1.0
            ax.imshow(heat / peak, cmap="inferno", alpha=0.45 if ks is not None else 1.0,
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{m} {phase[:3]}. ({rel.share:.0%})", fontsize=6)
            ax.set_axis_off()


def _text_block(fig: Figure, x: float, y: float, lines: list[str], width: int,
                size: float = 6.5, **kw: Any) -> None:
    wrapped: list[str] = []
    for line in lines:
        wrapped += textwrap.wrap(line, width, subsequent_indent="    ") or [""]
    fig.text(x, y, "\n".join(wrapped), ha="left", va="top", fontsize=size, **kw)


def render_figure(rec: Recommendation) -> Figure:
    """The report page as a matplotlib Figure (A4 portrait)."""
    _require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=A4_INCHES, facecolor="white")
    fig.text(0.5, 0.985, "hccatom - SELECTION / ATOM treatment-planning report",
             ha="center", va="top", fontsize=12, weight="bold")
    fig.text(0.5, 0.965, RESEARCH_BANNER, ha="center", va="top", fontsize=8.5,
             color="#b71c1c", weight="bold")
    if rec.bundle.synthetic:
        fig.text(0.5, 0.950, SYNTHETIC_BANNER, ha="center", va="top", fontsize=8.5,
                 color="#e65100", weight="bold")
    visual = key_slices(rec)
    # --- images: key slice + model image per phase ------------------------------------
    for k, phase in enumerate(PHASES):
        ks = visual.get(phase)
        ph = rec.phases.get(phase)
        ax_key = fig.add_axes((0.04 + 0.48 * k, 0.745, 0.235, 0.19))
        ax_img = fig.add_axes((0.28 + 0.48 * k, 0.745, 0.20, 0.19))
        where = ""
        if ph is not None:  # DICOM input: name the source image, as the summary does
            src = ph.source_image
            at = (f"image {src.instance_number}" if src is not None
                  and src.instance_number is not None else f"slice {ph.slice_index}")
            where = f"{at}, tumour {ph.tumour_area_mm2:.0f} mm²"
        if ks is None:
            _missing(ax_key, f"{phase}: key slice not available (recommendation read from "
                     "JSON, not made in this process)")
            _missing(ax_img, "model image not available")
        else:
            _key_slice(ax_key, ks, f"{phase}: {where}")
            ax_img.imshow(ks.model_image, cmap="gray", interpolation="nearest")
            ax_img.set_title(f"{phase} model image", fontsize=7)
            ax_img.set_axis_off()
    fig.text(0.04, 0.742, "green: liver, red: tumour, yellow dashed: crop box (model input)",
             fontsize=6, va="top", color="dimgray")
    _relevance_row(fig, rec, 0.715, 0.105)
    # --- scores and decision ----------------------------------------------------------
    _scores_chart(fig.add_axes((0.09, 0.47, 0.36, 0.13)), rec)
    d = rec.decision
    plan = [f"Plan: {rec.final_plan}", d.advice, f"Why ({d.policy_id}):"]
    plan += [f"- [{r.rule_id}] {r.text}" for r in d.rationale
             if not r.rule_id.startswith("risk.")]
    _text_block(fig, 0.62, 0.605, plan, 58, size=6.5)
    fig.texts[-1].set_x(0.60)
    # --- attributions -----------------------------------------------------------------
    exp = rec.explanation
    per = ("each clinical token group at its reference values" if exp is not None
           and exp.attribution_level == "groups" else "the reference value; top 4 per model")
    fig.text(0.04, 0.425, f"Clinical attributions (score change vs {per})", fontsize=8,
             weight="bold", va="top")
    if exp is None or exp.attributions is None:
        why = ("not computed (recommend(..., explain=True))" if exp is None
               else exp.attribution_status)
        _text_block(fig, 0.04, 0.405, [why], 120, color="dimgray")
    else:
        for i, m in enumerate(MODELS):
            lines = [m] + [a.text() for a in exp.attributions[m][:4]]
            _text_block(fig, 0.04 + 0.48 * (i % 2), 0.405 - 0.06 * (i // 2), lines, 68,
                        size=5.8)
        _text_block(fig, 0.04, 0.285, [exp.sensitivity_note, exp.attribution_status], 150,
                    size=5.8, color="dimgray")
    # --- flags --------------------------------------------------------------------------
    flags = [f"[{f.severity}] {f.message}" for f in rec.quality_flags] or ["none"]
    box = fig.add_axes((0.04, 0.09, 0.92, 0.165 if len(flags) > 3 else 0.06))
    box.set_xticks([])
    box.set_yticks([])
    has_warning = any(f.severity != "info" for f in rec.quality_flags)
    for spine in box.spines.values():
        spine.set_edgecolor("#c62828" if has_warning else "gray")
    box.text(0.01, 0.92, "Quality flags and warnings", fontsize=7.5, weight="bold", va="top",
             transform=box.transAxes)
    wrapped: list[str] = []
    for line in flags[:14]:
        wrapped += textwrap.wrap(line, 150, subsequent_indent="    ")
    if len(flags) > 14:
        wrapped.append(f"... and {len(flags) - 14} more (see the JSON)")
    box.text(0.01, 0.80 if len(flags) > 3 else 0.55, "\n".join(wrapped[:18]), fontsize=5.8,
             va="top", transform=box.transAxes)
    # --- footer -------------------------------------------------------------------------
    b = rec.bundle
    footer = [
        f"Bundle {b.name} {b.version}, digest {b.sha256[:16]}, signature {b.signature}"
        + (" (public demo key)" if b.demo_key else "")
        + (", SYNTHETIC MODELS" if b.synthetic else "")
        + f"; hccatom {rec.hccatom_version}; created {rec.created_at:%Y-%m-%d %H:%M} UTC",
        rec.notice,
    ]
    _text_block(fig, 0.04, 0.075, footer, 150, size=6, color="black")
    return fig


def render_pixels(rec: Recommendation, *, dpi: int = 150) -> np.ndarray:
    """The report page as RGB pixels, (rows, columns, 3) uint8 (A4 at ``dpi``): the same
    page as the PDF/PNG, for the DICOM Secondary Capture (:mod:`hccatom.dicom.outputs`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = render_figure(rec)
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def write_report(rec: Recommendation, path: str | Path, *, dpi: int = 150) -> Path:
    """Write the report page to ``path`` (``.pdf`` or ``.png``); returns the path."""
    out = Path(path)
    if out.suffix.lower() not in FORMATS:
        raise InputError(f"report {out.name}: use a .pdf or .png file name.")
    fig = render_figure(rec)
    if out.suffix.lower() == ".pdf":
        from matplotlib.backends.backend_pdf import FigureCanvasPdf

        FigureCanvasPdf(fig)
        fig.savefig(out, format="pdf", metadata={"Creator": "hccatom", "Title": "report"})
    else:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
        fig.savefig(out, format="png", dpi=dpi)
    return out


__all__ = ["RESEARCH_BANNER", "ReportUnavailableError", "render_figure", "render_pixels",
           "write_report"]
