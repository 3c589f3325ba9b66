"""Run explanations for one case: rollout relevance (explain graphs) and attributions.

Off the fast path: the explain engines are created on first use, never at bundle load, and
``recommend`` without ``explain=True`` never touches them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from hccatom.atom import MODELS
from hccatom.bundle import Bundle
from hccatom.chain import PhaseImage, SelectionScorer
from hccatom.clinical import ClinicalVariables
from hccatom.clinical_encoding import ClinicalEncoding
from hccatom.engines import Engine
from hccatom.errors import BundleError, ExplainUnavailableError
from hccatom.explain.attributions import batch_feeds, rank, variants
from hccatom.explain.geometry import CropGeometry
from hccatom.explain.result import (
    ClinicalTokenRelevance,
    Explanation,
    ModelExplanation,
    PhaseRelevance,
)
from hccatom.explain.rollout import ExplainLayout, token_relevance
from hccatom.phases import PHASES, Phase

EXPORT_HINT = ("re-export the SELECTION models with `hccatom export selection ... --explain` "
               "and rebuild the bundle (`hccatom bundle build`)")


class Explainer:
    """The explain graphs of a bundle (lazily loaded) and what they produce."""

    def __init__(self, bundle: Bundle, make_engine: Callable[[Path], Engine]) -> None:
        sel = bundle.manifest.selection
        spec = sel.explain
        self.bundle = bundle
        self.spec = sel
        self._paths = {m: bundle.path(p) for m, p in (spec.graphs if spec else {}).items()}
        self.reference = dict(spec.clinical_reference) if spec and spec.clinical_reference \
            else None
        self.reference_source = spec.reference_source if spec else ""
        self._make = make_engine
        self._engines: dict[str, tuple[Engine, ExplainLayout]] = {}
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """True when the bundle has an explain graph for each of the four models."""
        return all(m in self._paths for m in MODELS)

    def require(self) -> None:
        """Raise :class:`ExplainUnavailableError` unless all four explain graphs exist."""
        if not self.available:
            missing = [m for m in MODELS if m not in self._paths]
            raise ExplainUnavailableError(
                f"bundle {self.bundle.name!r} has no explain graphs for {missing}: it was "
                f"exported without --explain; {EXPORT_HINT}."
            )

    def _loaded(self) -> dict[str, tuple[Engine, ExplainLayout]]:
        self.require()
        with self._lock:
            if not self._engines:
                for m in MODELS:
                    engine = self._make(self._paths[m])
                    raw = dict(getattr(engine, "metadata", {})).get("hccatom.explain")
                    layout = _parse_layout(raw, self._paths[m].name)
                    self._engines[m] = (engine, layout)
        return self._engines

    def relevance(self, feeds: Mapping[str, np.ndarray], images: Mapping[Phase, PhaseImage],
                  geometry: Mapping[Phase, CropGeometry | None]) -> dict[str, ModelExplanation]:
        """Rollout relevance per model for one case (batch of one)."""
        out: dict[str, ModelExplanation] = {}
        for m, (engine, layout) in self._loaded().items():
            got = engine.run(feeds)
            missing = [n for n in layout.map_names() if n not in got]
            if missing:
                raise BundleError(f"explain graph of {m} lacks outputs {missing[:4]}; "
                                  f"{EXPORT_HINT}.")
            rel = token_relevance(got, layout)[0]
            out[m] = _model_explanation(float(np.asarray(got[self.spec.io.score]).ravel()[0]),
                                        rel, layout, geometry, self.spec.clinical_encoding)
        return out

    def attributions(self, scorer: SelectionScorer, images: Mapping[Phase, PhaseImage],
                     clinical: ClinicalVariables) -> tuple[dict[str, list] | None, str]:
        """Ranked attributions per model (one batched fast-graph call) and a status line."""
        if self.reference is None:
            return None, ("not available: this bundle stores no clinical reference values "
                          "(build it with `hccatom bundle build --clinical-reference FILE`)")
        pairs = variants(clinical, self.reference)
        rows = [clinical, *(c for _, c in pairs)]
        io = self.spec.io
        names = {"arterial": io.arterial, "portal": io.portal, "lab": io.lab,
                 "demo": io.demo, "iv": io.iv}
        feeds = batch_feeds(images["arterial"].image, images["portal"].image, rows,
                            self.spec.clinical_encoding, names)
        scores = scorer.score(feeds)
        src = f" ({self.reference_source})" if self.reference_source else ""
        return (rank(clinical, self.reference, [n for n, _ in pairs], scores),
                f"reference values from the bundle{src}")


def _parse_layout(raw: str | None, where: str) -> ExplainLayout:
    import json

    if raw is None:
        raise BundleError(f"{where}: no 'hccatom.explain' metadata; {EXPORT_HINT}.")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{where}: 'hccatom.explain' metadata is not JSON ({exc}).") from exc
    if not isinstance(meta, dict):
        raise BundleError(f"{where}: 'hccatom.explain' metadata is not an object.")
    return ExplainLayout.from_metadata(meta, where)


def _model_explanation(score: float, rel: np.ndarray, layout: ExplainLayout,
                       geometry: Mapping[Phase, CropGeometry | None],
                       encoding: ClinicalEncoding) -> ModelExplanation:
    """Split the token relevance into phases (patch grids) and clinical tokens; clinical
    tokens are named by the bundle's encoding (which variable feeds each position)."""
    t = layout.tokens_per_phase
    gy, gx = layout.patch_grid
    phases: dict[Phase, PhaseRelevance] = {}
    for k, name in enumerate(PHASES):
        tokens = rel[k * t:(k + 1) * t]
        phases[name] = PhaseRelevance(
            grid=tokens[1:].reshape(gy, gx).tolist(), class_token=float(tokens[0]),
            model_px=layout.image_size_px, geometry=geometry.get(name))
    clinical: list[ClinicalTokenRelevance] = []
    if layout.n_txt:
        pos = layout.n_img
        for group, n in layout.clinical_groups:
            fields = [slot.source for slot in encoding.ordered(group)]
            for i in range(n):
                clinical.append(ClinicalTokenRelevance(
                    group=group, position=i,
                    variable=fields[i] if i < len(fields) else f"{group}[{i}]",
                    relevance=float(rel[pos])))
                pos += 1
    return ModelExplanation(score=score, phases=phases, clinical=clinical)


def explain_case(explainer: Explainer, scorer: SelectionScorer,
                 feeds: Mapping[str, np.ndarray], images: Mapping[Phase, PhaseImage],
                 geometry: Mapping[Phase, CropGeometry | None],
                 clinical: ClinicalVariables) -> Explanation:
    """Rollout relevance and attributions for one case."""
    models = explainer.relevance(feeds, images, geometry)
    attributions, status = explainer.attributions(scorer, images, clinical)
    return Explanation(models=models, attributions=attributions, attribution_status=status)


__all__ = ["EXPORT_HINT", "Explainer", "explain_case"]
