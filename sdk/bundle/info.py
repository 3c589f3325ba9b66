"""``bundle info``: a readable summary of a bundle's manifest (no model is run)."""

from __future__ import annotations

from hccatom.atom import MODELS
from hccatom.bundle.reader import Bundle
from hccatom.bundle.specs import SafetyLimits


def _size(n: int) -> str:
    step = 1024.0
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < step or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= step
    return f"{n} B"  # pragma: no cover


def bundle_summary(bundle: Bundle) -> str:
    """Name, version, intended use, provenance, models, thresholds, policy, files."""
    m = bundle.manifest
    sel = m.selection
    lines = [
        f"{m.name} {m.version}  (schema {m.schema_version}, created "
        f"{m.created_at.isoformat(timespec='seconds')})",
        f"  source:        {bundle.source}",
        f"  digest:        {bundle.sha256}  (sha256 of the canonical manifest)",
        f"  signature:     {bundle.signature.text()}",
        f"  intended use:  {m.intended_use}",
    ]
    if m.synthetic:
        lines.append("  SYNTHETIC:     models trained on synthetic data only; not the paper's")
    prov = m.provenance
    lines.append(f"  trained by:    {prov.trained_by}; data: {prov.training_data}")
    if prov.exported_with:
        lines.append(f"  exported with: {prov.exported_with}")
    layout = "fused (one graph, four scores)" if sel.fused else "four separate graphs"
    if sel.fused and sel.models:
        layout += " + four separate graphs"
    lines.append(f"  SELECTION:     {layout}; image {sel.image_channels}x{sel.image_size_px}x"
                 f"{sel.image_size_px}, normalise mean {sel.norm_mean} std {sel.norm_std}")
    lines.append("  thresholds:    " + ", ".join(f"{k} {m.thresholds[k]:.4f}" for k in MODELS))
    pol = m.policy
    lines.append(f"  policy:        {pol.policy_id} (margin {pol.margin}, favourable when score "
                 f"{pol.favourable_when} MSS, ties -> {pol.tie_preference}, "
                 f"rescue {'on' if pol.rescue else 'off'})")
    lines.append(f"  safety:        {_safety_line(m.safety)}")
    seg = m.segmentation.spec
    lines.append(
        f"  segmentation:  {m.segmentation.directory}/ {seg.configuration}, patch "
        f"{seg.patch_size}, spacing {seg.target_spacing_mm} mm, folds "
        f"{[f.fold for f in seg.folds]}, {seg.num_output_channels} output channels"
    )
    if seg.previous_stage is not None:
        prev = seg.previous_stage
        lines.append(f"    cascade:     after {prev.configuration} (patch {prev.patch_size}, "
                     f"spacing {prev.target_spacing_mm} mm, folds {[f.fold for f in prev.folds]})")
    for member in seg.ensemble:
        lines.append(f"    ensemble:    + {member.configuration} (patch {member.patch_size}, "
                     f"folds {[f.fold for f in member.all_folds()]})")
    if m.parity:
        lines.append("  parity:")
        for key, rep in sorted(m.parity.items()):
            lines.append(f"    {key}: {_parity_line(rep)}")
    total = sum(f.size_bytes for f in m.files)
    lines.append(f"  files ({len(m.files)}, {_size(total)}):")
    for f in m.files:
        lines.append(f"    {f.path}  {_size(f.size_bytes)}  {f.role}  {f.sha256[:12]}")
    return "\n".join(lines)


def _safety_line(safety: SafetyLimits | None) -> str:
    """The safety limits in one line (docs/safety.md)."""
    if safety is None:
        return "none in the bundle: hccatom's default limits apply"
    pop = safety.training_population
    cohort = (f"training ranges of {len(pop.variables)} clinical variables"
              + (f" (n={pop.n_patients})" if pop.n_patients is not None else "")
              if pop is not None else "no training ranges")
    return (f"liver {safety.liver_volume_min_ml:g}-{safety.liver_volume_max_ml:g} mL, tumour "
            f">= {safety.tumour_volume_min_ml:g} mL, confidence >= "
            f"{safety.tumour_confidence_min:g}, phases' tumours <= "
            f"{safety.tumour_distance_max_mm:g} mm apart; {cohort}")


def _parity_line(rep: object) -> str:
    """The headline numbers of a parity report (its top level and its 'parity' section)."""
    if not isinstance(rep, dict):
        return str(rep)
    sections = [rep] + ([rep["parity"]] if isinstance(rep.get("parity"), dict) else [])
    shown: dict[str, object] = {}
    for sec in sections:
        for k, v in sec.items():
            if any(w in k for w in ("max", "mean", "passed", "tol")) and isinstance(
                v, (int, float, bool, str)
            ):
                shown[k] = f"{v:.3g}" if isinstance(v, float) else v
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "(report stored)"


__all__ = ["bundle_summary"]
