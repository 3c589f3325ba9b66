"""Run explanations for one case: rollout relevance (explain graphs) and attributions.

Off the fast path: the explain engines are created on first use, never at bundle load, and
``recommend`` without ``explain`` never touches them.

With ``explain``, the SELECTION stage runs the explain graphs *instead of* the fast graphs
(:class:`ExplainRun`): an explain graph is its fast graph plus head-mean outputs (nothing
on the score's path changes; checked <= 1e-6 at export and in ``tests/test_explain_cost.py``;
bitwise equal on ONNX Runtime's CPU provider in every case measured), so its score is the
score and the rollout adds only the head means and the NumPy product. A fused bundle still
runs its fused graph for the scores (a different graph: its scores may differ from the
twins' by float noise).

``explain`` modes: ``"variables"`` (``True``): rollout and one attribution per variable;
``"groups"``: rollout and one attribution per clinical token group (3 rows, cheaper);
``"rollout"``: rollout only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from hccatom.atom import MODELS
from hccatom.bundle import Bundle
from hccatom.chain import PhaseImage, SelectionScorer
from hccatom.clinical import ClinicalVariables
from hccatom.clinical_encoding import ClinicalEncoding
from hccatom.engines import Engine
from hccatom.errors import BundleError, ExplainUnavailableError, InputError
from hccatom.explain.attributions import AttributionLevel, attribute, batch_feeds
from hccatom.explain.geometry import CropGeometry
from hccatom.explain.result import (
    ClinicalTokenRelevance,
    Explanation,
    ModelExplanation,
    PhaseRelevance,
)
from hccatom.explain.rollout import ExplainLayout, token_relevance
from hccatom.phases import PHASES, Phase

ExplainMode = Literal["variables", "groups", "rollout"]
EXPLAIN_MODES: tuple[ExplainMode, ...] = get_args(ExplainMode)

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

    def run_graphs(self, feeds: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """The four explain graphs' outputs (score and head-averaged maps) for ``feeds``."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for m, (engine, layout) in self._loaded().items():
            got = engine.run(feeds)
            missing = [n for n in [*layout.map_names(), self.spec.io.score] if n not in got]
            if missing:
                raise BundleError(f"explain graph of {m} lacks outputs {missing[:4]}; "
                                  f"{EXPORT_HINT}.")
            out[m] = got
        return out

    def relevance(self, feeds: Mapping[str, np.ndarray], images: Mapping[Phase, PhaseImage],
                  geometry: Mapping[Phase, CropGeometry | None],
                  outputs: Mapping[str, Mapping[str, np.ndarray]] | None = None
                  ) -> dict[str, ModelExplanation]:
        """Rollout relevance per model for one case (batch of one); ``outputs``: the explain
        graphs' outputs for ``feeds`` when already run (:class:`ExplainRun`)."""
        got_all = self.run_graphs(feeds) if outputs is None else outputs
        out: dict[str, ModelExplanation] = {}
        for m, (_, layout) in self._loaded().items():
            got = got_all[m]
            rel = token_relevance(got, layout)[0]
            out[m] = _model_explanation(float(np.asarray(got[self.spec.io.score]).ravel()[0]),
                                        rel, layout, geometry, self.spec.clinical_encoding)
        return out

    def attributions(self, scorer: SelectionScorer, images: Mapping[Phase, PhaseImage],
                     clinical: ClinicalVariables, base: Mapping[str, float],
                     level: AttributionLevel = "variables"
                     ) -> tuple[dict[str, list] | None, str]:
        """Ranked attributions per model against the case's scores ``base`` (one batched
        fast-graph call on the copies that change the input) and a status line."""
        if self.reference is None:
            return None, ("not available: this bundle stores no clinical reference values "
                          "(build it with `hccatom bundle build --clinical-reference FILE`)")
        io = self.spec.io
        names = {"arterial": io.arterial, "portal": io.portal, "lab": io.lab,
                 "demo": io.demo, "iv": io.iv}
        encoding = self.spec.clinical_encoding

        def score_rows(rows: list[ClinicalVariables]) -> list[dict[str, float]]:
            return scorer.score(batch_feeds(images["arterial"].image, images["portal"].image,
                                            rows, encoding, names))

        src = f" ({self.reference_source})" if self.reference_source else ""
        return (attribute(clinical, self.reference, encoding, base, score_rows, level),
                f"reference values from the bundle{src}")


class ExplainRun:
    """One case's SELECTION stage run through the explain graphs (module doc).

    :meth:`score` is the stage's scoring function; it keeps the graphs' outputs (the
    attention maps) for :func:`explain_case`. One object per case, not shared."""

    def __init__(self, explainer: Explainer, scorer: SelectionScorer) -> None:
        self.explainer = explainer
        self.scorer = scorer
        self.outputs: dict[str, dict[str, np.ndarray]] | None = None
        self.scores: dict[str, float] | None = None

    def score(self, feeds: Mapping[str, np.ndarray]) -> dict[str, float]:
        """The four scores of one case (batch of one) from the explain graphs."""
        self.outputs = self.explainer.run_graphs(feeds)
        if self.scorer.layout == "fused":
            self.scores = self.scorer.score(feeds)[0]
        else:
            key = self.explainer.spec.io.score
            self.scores = {m: float(np.asarray(self.outputs[m][key]).ravel()[0])
                           for m in MODELS}
        return self.scores


def explain_mode(explain: bool | str) -> ExplainMode | None:
    """``explain`` as given to ``recommend`` -> its mode (``True`` = "variables"), None for
    off; :class:`~hccatom.errors.InputError` for anything else."""
    if explain is False or explain is None:
        return None
    if explain is True:
        return "variables"
    if explain in EXPLAIN_MODES:
        return explain
    raise InputError(f"explain={explain!r}: use True/False or one of {list(EXPLAIN_MODES)} "
                     "(variables: attribution per variable; groups: per clinical token "
                     "group, cheaper; rollout: relevance maps only).")


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


def explain_case(run: ExplainRun, feeds: Mapping[str, np.ndarray],
                 images: Mapping[Phase, PhaseImage],
                 geometry: Mapping[Phase, CropGeometry | None],
                 clinical: ClinicalVariables, mode: ExplainMode = "variables") -> Explanation:
    """Rollout relevance (from the run's kept outputs) and attributions for one case."""
    if run.outputs is None or run.scores is None:
        run.score(feeds)
    assert run.outputs is not None and run.scores is not None
    explainer = run.explainer
    models = explainer.relevance(feeds, images, geometry, run.outputs)
    if mode == "rollout":
        return Explanation(models=models, attributions=None,
                           attribution_status="not computed (explain='rollout')")
    attributions, status = explainer.attributions(run.scorer, images, clinical, run.scores,
                                                  mode)
    return Explanation(models=models, attributions=attributions, attribution_status=status,
                       attribution_level=mode if attributions is not None else None)


__all__ = ["EXPLAIN_MODES", "EXPORT_HINT", "ExplainMode", "ExplainRun", "Explainer",
           "explain_case", "explain_mode"]
