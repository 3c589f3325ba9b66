"""The visual report as pixels (matplotlib, Agg; no pyplot state, so thread-safe).

Key slice of each phase (its source image, soft-tissue window) with liver (green) and
tumour (red) contours, the crop box (yellow, dashed) and the largest tumour diameter
(cyan); the four scores against their thresholds; the plan and the fired rules; the
research-use notice and, for synthetic bundles, "synthetic models".
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["RESEARCH_BANNER", "PhasePanel", "render_report"]

RESEARCH_BANNER = "RESEARCH USE ONLY - NOT FOR CLINICAL DECISIONS"
SYNTHETIC_BANNER = "SYNTHETIC MODELS (trained on synthetic data)"


@dataclass(frozen=True)
class PhasePanel:
    """One phase's key slice for the report."""

    title: str
    image_hu: np.ndarray
    """(rows, columns) HU of the key slice's source image."""
    labels: np.ndarray
    """(rows, columns) 0 / liver / tumour segment numbers on the same pixels."""
    box_rc: tuple[float, float, float, float] | None
    """Crop box (row0, col0, height, width) in pixels."""
    diameter_line_rc: np.ndarray | None
    """(2, 2) (column, row) end points."""
    caption: str


def render_report(
    panels: Sequence[PhasePanel],
    *,
    plan: str,
    advice: str,
    scores: Mapping[str, tuple[float, float, str]],
    rules: Sequence[tuple[str, str]],
    footer: Sequence[str],
    synthetic: bool,
    size_px: tuple[int, int] = (1024, 1280),
) -> np.ndarray:
    """An RGB uint8 image (rows, columns, 3) of the report."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    h, w = size_px
    fig = Figure(figsize=(w / 100.0, h / 100.0), dpi=100, facecolor="black")
    FigureCanvasAgg(fig)
    banner = RESEARCH_BANNER + (" - " + SYNTHETIC_BANNER if synthetic else "")
    fig.text(0.5, 0.975, banner, ha="center", va="top", color="yellow", fontsize=14,
             weight="bold")
    for i, p in enumerate(panels[:2]):
        ax = fig.add_axes((0.02 + 0.49 * i, 0.42, 0.47, 0.5))
        ax.imshow(np.clip(p.image_hu, -100, 250), cmap="gray", vmin=-100, vmax=250,
                  interpolation="nearest")
        if (p.labels > 0).any():
            ax.contour(p.labels > 0, levels=[0.5], colors=["lime"], linewidths=1.0)
        if (p.labels == 2).any():
            ax.contour(p.labels == 2, levels=[0.5], colors=["red"], linewidths=1.2)
        if p.box_rc is not None:
            r0, c0, hh, ww = p.box_rc
            ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), ww, hh, fill=False, ec="yellow",
                                   ls="--", lw=1.0))
        if p.diameter_line_rc is not None:
            ax.plot(p.diameter_line_rc[:, 0], p.diameter_line_rc[:, 1], color="cyan", lw=1.5)
        ax.set_title(p.title, color="white", fontsize=11)
        ax.text(0.01, 0.01, p.caption, transform=ax.transAxes, color="white", fontsize=8,
                va="bottom")
        ax.set_axis_off()
    lines = [f"Recommendation: {plan}", advice, "", "Scores vs thresholds (MSS):"]
    for model, (score, thr, risk) in scores.items():
        lines.append(f"  {model:<5} {score:.3f} {'>=' if score >= thr else '< '} {thr:.4f}  "
                     f"{risk} risk")
    lines.append("")
    lines.append("Why:")
    for rid, text in rules:
        lines += textwrap.wrap(f"[{rid}] {text}", width=118, initial_indent="  ",
                               subsequent_indent="      ")
    fig.text(0.03, 0.40, "\n".join(lines), ha="left", va="top", color="white", fontsize=10,
             family="monospace")
    fig.text(0.03, 0.02, "\n".join(footer), ha="left", va="bottom", color="silver", fontsize=8)
    canvas = fig.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())  # type: ignore[attr-defined]
    return np.ascontiguousarray(rgba[..., :3])
