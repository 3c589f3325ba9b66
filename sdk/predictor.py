"""``Predictor``: two CT phases + clinical variables -> :class:`Recommendation`.

::

    predictor = hccatom.Predictor.from_bundle("bundle.zip")           # engines made once
    rec = predictor.recommend({"arterial": "art.nii.gz", "portal": "ven.nii.gz"},
                              hccatom.ClinicalVariables.from_json("clinical.json"))
    print(rec.final_plan); rec.to_json("rec.json")

The Predictor holds the verified bundle and the engines; each call is a chain of the plain
stage functions in :mod:`hccatom.chain`, timed per stage. No per-call state is stored on
the object, so one Predictor serves concurrent ``recommend`` calls from several threads
with results identical to serial calls.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hccatom import memory_plan
from hccatom.atom import decide
from hccatom.bundle import Bundle, load_bundle
from hccatom.chain import (
    PhaseImage,
    SelectionScorer,
    as_clinical,
    check_phase_keys,
    encode_clinical,
    phase_image,
    phase_report,
    prepare_phase,
    quality_flags,
    segmentation_input,
)
from hccatom.clinical import ClinicalVariables
from hccatom.engines import Engine, OnnxRuntimeEngine
from hccatom.engines.providers import CudaOptions, ort_available_providers
from hccatom.errors import HccatomError, InputError
from hccatom.explain.result import Explanation
from hccatom.explain.runner import Explainer, ExplainMode, ExplainRun, explain_mode
from hccatom.explain.visual import (
    attach_visual,
    explain_graphs_are_twins,
    explain_recommendation,
)
from hccatom.phases import PHASES, Phase
from hccatom.precision import check_precision, choose_graph, default_precision
from hccatom.progress_events import ProgressCallback, ProgressEvent
from hccatom.read_warmup import start_read_warmup
from hccatom.recommendation import (
    BundleRef,
    EngineInfo,
    PhaseReport,
    Recommendation,
)
from hccatom.safety import (
    DEFAULT_SAFETY_LIMITS,
    PhaseMeasures,
    SafetyLimits,
    check_body,
    check_distinct_pixels,
    check_distinct_sources,
    check_segmentation,
    consistency_flags,
    default_limits_flags,
    image_flags,
    measure_phase,
    population_flags,
    synthetic_input_flags,
)
from hccatom.segmentation import Segmenter
from hccatom.segmentation.cuda_graphs import engine_cuda_options
from hccatom.volume import Volume


def _version() -> str:
    import hccatom  # at call time: hccatom/__init__ imports this module

    return str(hccatom.__version__)


@dataclass(frozen=True)
class CTStudy:
    """The two contrast phases of one study; each anything :func:`hccatom.read_ct` accepts
    (DICOM folder, NIfTI/NRRD/MHA path, SimpleITK image, :class:`hccatom.Volume`)."""

    arterial: Any
    portal: Any

    @classmethod
    def coerce(cls, ct: CTStudy | Mapping[str, Any]) -> CTStudy:
        """A CTStudy from itself or a mapping with exactly 'arterial' and 'portal'."""
        if isinstance(ct, CTStudy):
            return ct
        if isinstance(ct, Mapping):
            check_phase_keys(ct)
            return cls(arterial=ct["arterial"], portal=ct["portal"])
        raise InputError(
            f"ct must be a CTStudy or a mapping {{'arterial': ..., 'portal': ...}}, not "
            f"{type(ct).__name__}."
        )

    def phase(self, name: Phase) -> Any:
        """The source of one phase."""
        return self.arterial if name == "arterial" else self.portal


LabelsCallback = Callable[[Phase, Volume, Volume], None]
"""Called per phase with the z-resampled CT and its labels (same internal grid)."""


@dataclass(frozen=True)
class Case:
    """One patient for :meth:`Predictor.recommend_many`: its CT study and clinical data.

    Give exactly one of ``ct`` (the two phases) or ``study`` (a DICOM study folder, needs
    the dicom extra; ``arterial``/``portal`` Series Instance UIDs choose series in it).
    """

    ct: CTStudy | Mapping[str, Any] | None
    clinical: ClinicalVariables | Mapping[str, Any] | str | Path
    case_id: str | None = None
    study: str | Path | None = None
    arterial: str | None = None
    portal: str | None = None

    def _recommend(self, predictor: Predictor) -> Recommendation:
        if (self.ct is None) == (self.study is None):
            raise InputError(f"case {self._name()}: give exactly one of ct=... (the two "
                             "phases) or study=... (a DICOM study folder).")
        if self.study is None:
            if self.arterial is not None or self.portal is not None:
                raise InputError(f"case {self._name()}: arterial=/portal= series UIDs "
                                 "choose series in a study=...; drop them or give study=.")
            return predictor.recommend(self.ct, self.clinical)
        return predictor.recommend(study=self.study, clinical=self.clinical,
                                   arterial=self.arterial, portal=self.portal)

    def _name(self) -> str:
        """How errors name this case (its id, which a site keeps pseudonymous)."""
        return repr(self.case_id) if self.case_id is not None else "without case_id"


@dataclass(frozen=True)
class CaseResult:
    """What :meth:`Predictor.recommend_many` yields per case: a result or the error."""

    index: int
    case_id: str | None
    recommendation: Recommendation | None = None
    error: HccatomError | None = None

    @property
    def ok(self) -> bool:
        """True when the case produced a recommendation."""
        return self.recommendation is not None


@dataclass
class _Timer:
    progress: ProgressCallback | None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[Callable[[int, int], None]]:
        t0 = time.perf_counter()

        def tick(done: int, total: int) -> None:
            if self.progress is not None:
                self.progress(ProgressEvent(name, done, total, time.perf_counter() - t0))

        tick(0, 1)
        try:
            yield tick
        finally:
            elapsed = time.perf_counter() - t0
            self.timings_ms[name] = self.timings_ms.get(name, 0.0) + elapsed * 1000.0
            tick(1, 1)


def _phase_workers(requested: int | None) -> int:
    """1 or 2 phases at a time; None: 2 where there are at least 4 cores."""
    if requested is None:
        return 2 if (os.cpu_count() or 1) >= 4 else 1
    if requested not in (1, 2):
        raise InputError(f"phase_workers must be 1 or 2, got {requested}.")
    return requested


def make_engines(make: Callable[[Path], Engine], paths: list[Path]) -> list[Engine]:
    """Create one engine per model file; results in the order of ``paths``.

    Several at a time on machines with 4 or more cores (session creation is mostly native
    graph loading and optimisation). On a 2-core VM the demo bundle's five sessions took the
    same time either way (1.30 s one by one vs 1.44 s in parallel, medians of 6, loaded
    machine), so there they are made one by one.
    """
    cores = os.cpu_count() or 1
    workers = min(len(paths), cores // 2, 4) if cores >= 4 else 1
    if workers <= 1:
        return [make(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hccatom-engine") as pool:
        return list(pool.map(make, paths))


def _dicom_folders(study: CTStudy) -> bool:
    """Both phases are folders and the dicom extra is installed."""
    if not all(isinstance(s, str | Path) and Path(s).is_dir()
               for s in (study.arterial, study.portal)):
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("pydicom", "highdicom"))


class Predictor:
    """Runs a bundle's chain. Build with :meth:`from_bundle`; thread-safe."""

    def __init__(
        self,
        bundle: Bundle,
        segmenter: Segmenter,
        scorer: SelectionScorer,
        *,
        device: str = "auto",
        safety: SafetyLimits | None = None,
        phase_workers: int | None = None,
    ) -> None:
        self.phase_workers = _phase_workers(phase_workers)
        self.bundle = bundle
        self.segmenter = segmenter
        self.scorer = scorer
        self.device = device
        #: Explain graphs, loaded on first use (``explain=True``), never on the fast path.
        self.explainer = Explainer(bundle, lambda p: OnnxRuntimeEngine(p, device=device))
        #: graph precision per model ("segmentation fold 0", "selection.fused", ...)
        self.precisions: dict[str, str] = {}
        m = bundle.manifest
        #: Limits behind the safety errors and flags: ``safety`` if given, else the bundle's.
        self.safety = safety or m.safety or DEFAULT_SAFETY_LIMITS
        self._limit_flags = default_limits_flags(m.safety is not None, safety is not None)
        self.preprocessing = m.preprocessing
        self._bundle_ref = BundleRef(
            name=m.name, version=m.version, sha256=bundle.sha256, synthetic=m.synthetic,
            intended_use=m.intended_use, signature=bundle.signature.status,
            signature_verified=bundle.signature.verified,
            signing_key_id=bundle.signature.key_id, demo_key=bundle.signature.demo_key,
        )

    @classmethod
    def from_bundle(
        cls,
        path: str | Path | Bundle,
        device: str = "auto",
        threads: int | None = None,
        *,
        step_size: float = 0.5,
        mirroring: bool | None = None,
        safety: SafetyLimits | None = None,
        engine_factory: Callable[[Path], Engine] | None = None,
        phase_workers: int | None = None,
        device_resident: bool | None = None,
        trusted_keys: Iterable[str | Path | bytes] | None = None,
        require_signature: bool | None = None,
        expect_sha256: str | None = None,
        precision: str | None = None,
        engines: str | None = None,
        cuda_options: CudaOptions | None = None,
    ) -> Predictor:
        """Open and verify a bundle (schema, signature, checksums) and create every engine
        once.

        ``trusted_keys`` (Ed25519 public keys: PEM paths or bytes), ``require_signature``
        (default True when keys are given) and ``expect_sha256`` (the bundle digest, see
        :func:`hccatom.bundle.bundle_digest`) refuse an unsigned bundle, a bad signature, an
        untrusted signer or any edit of the manifest with a
        :class:`~hccatom.errors.BundleSignatureError` naming what failed, before any model
        is loaded. Models are not run at load (``hccatom bundle verify`` does that).

        ``device``: "auto" (TensorRT > CUDA > CPU where present), "cpu", "cuda" or
        "tensorrt"; an explicit device that is unavailable raises
        :class:`~hccatom.errors.EngineUnavailableError`. ``threads``: CPU intra-op threads
        per engine (default: half the cores when the phases run together, else ONNX
        Runtime's own default). ``step_size``/``mirroring``: segmentation sliding window
        options. ``phase_workers``: 2 reads and segments the arterial and portal phases at
        the same time (much of that work is single-threaded NumPy; peak memory holds both
        phases), 1 one after the other; default 2 on machines with 4 or more cores, else 1
        (on 2 cores the two ways measured the same, see benchmarks/README.md).
        ``device_resident``: keep segmentation tiles on the engine's device (default: on
        for CUDA/TensorRT, off on the CPU; see :class:`~hccatom.segmentation.Segmenter`).
        ``safety``: limits to use instead of the bundle's ``safety`` section
        (docs/safety.md).
        ``precision``: None runs a graph's fp16 twin on CUDA when the bundle has one (fp32
        elsewhere); "fp16" or "fp32" forces it (see :mod:`hccatom.precision`).
        ``engines``: ``"triton://host:8001"`` runs the networks on that Triton server (a
        repository from ``hccatom export triton``; serve extra), the rest in-process.
        ``cuda_options``: CUDA provider options of every engine; ``enable_cuda_graph`` runs
        the segmentation network as a CUDA graph on the device-resident path (see
        :class:`~hccatom.segmentation.Segmenter`).
        """
        phase_workers = _phase_workers(phase_workers)
        if threads is None and phase_workers == 2:
            threads = max(1, (os.cpu_count() or 2) // 2)  # half the cores per phase
        requested = check_precision(precision)
        preferred = default_precision(device, ort_available_providers())
        start_read_warmup()  # the first read's one-time costs overlap the load (read_warmup)
        bundle = load_bundle(path, trusted_keys=trusted_keys,
                             require_signature=require_signature, expect_sha256=expect_sha256)
        m = bundle.manifest
        memory_plan.check_bundle(m)  # patch size, slice thickness: before any engine exists
        if engines is not None:  # networks on a Triton server (hccatom.serve)
            from hccatom.serve.remote_engines import remote_engine_factory

            if engine_factory is not None:
                raise InputError("pass engines='triton://...' or engine_factory=, not both")

            engine_factory = remote_engine_factory(engines, bundle)
        used: dict[str, str] = {}

        def make(p: Path) -> Engine:
            if engine_factory is not None:
                return engine_factory(p)
            return OnnxRuntimeEngine(p, device=device, threads=threads,
                                     fp16=device == "tensorrt" and requested == "fp16",
                                     cuda_options=engine_cuda_options(cuda_options))

        def pick(fp32: str, fp16: str | None, what: str) -> str:
            rel, used[what] = choose_graph(fp32, fp16, requested=requested,
                                           preferred=preferred, what=what)
            return rel

        seg_spec = m.segmentation.spec
        sel = m.selection
        seg_paths = [
            bundle.segmentation_dir / pick(f.onnx, f.onnx_fp16, f"segmentation fold {f.fold}")
            for f in seg_spec.all_folds()  # every stage and ensemble member
        ]
        if sel.fused is not None:
            sel_paths = {"fused": bundle.path(
                pick(sel.fused.path, sel.fused.path_fp16, "selection.fused"))}
        else:
            sel_paths = {k: bundle.path(pick(v.path, v.path_fp16, f"selection.{k}"))
                         for k, v in sel.models.items()}
        # CUDA graphs: the Segmenter creates only the sessions that run (hccatom.segmentation
        # .cuda_graphs.graph_models), so no ordinary fold engines are made here
        own_seg = engine_factory is None and cuda_options is not None \
            and cuda_options.enable_cuda_graph
        made = make_engines(make, [*([] if own_seg else seg_paths), *sel_paths.values()])
        n_seg = 0 if own_seg else len(seg_paths)
        segmenter = Segmenter(
            bundle.segmentation_dir, device=device, step_size=step_size, mirroring=mirroring,
            threads=threads, spec=seg_spec, engines=None if own_seg else made[:n_seg],
            verify=False, device_resident=device_resident, cuda_options=cuda_options,
            models=seg_paths if own_seg else None,
        )
        sel_engines = dict(zip(sel_paths, made[n_seg:], strict=True))
        scorer = SelectionScorer(sel, sel_engines)
        predictor = cls(bundle, segmenter, scorer, device=device, safety=safety,
                        phase_workers=phase_workers)
        predictor.precisions = used
        predictor.explainer = Explainer(bundle, make)
        return predictor

    # --- partial chain ----------------------------------------------------------------
    def segment(self, phase: Any, *, progress: Callable[[int, int], None] | None = None
                ) -> Volume:
        """Liver/tumour labels (0/1/2) of one phase, on the bundle's z-resampled grid."""
        ct = prepare_phase(phase, self.preprocessing, self.segmenter.spec)
        return self.segmenter.segment(segmentation_input(ct, self.preprocessing),
                                      progress=progress)

    def _phase(self, source: Any, name: Phase, timer: _Timer,
               on_labels: LabelsCallback | None = None,
               ) -> tuple[PhaseImage, PhaseReport, PhaseMeasures]:
        spec = self.preprocessing
        try:
            with timer.stage(f"read_{name}"):
                ct = prepare_phase(source, spec, self.segmenter.spec)
                check_body(ct, self.safety)
            moved: dict[str, int] = {}
            with timer.stage(f"segment_{name}") as tick:
                labels, confidence = self.segmenter.segment_with_confidence(
                    segmentation_input(ct, spec), progress=tick, transfers=moved)
            with timer.stage(f"crop_{name}"):
                measures = measure_phase(ct, labels, liver_label=spec.liver_label,
                                         tumour_label=spec.tumour_label,
                                         tumour_confidence=confidence)
                check_segmentation(measures, self.safety, tumour_label=spec.tumour_label)
                img = phase_image(ct, labels, spec)
                report = phase_report(img, labels, spec, measures.voxels).model_copy(
                    update={**measures.report_fields(),
                            "segmentation_transfer_bytes": moved})
            if on_labels is not None:  # e.g. DICOM output keeps the labels
                on_labels(name, ct, labels)
        except HccatomError as exc:
            exc.in_phase(name)
            raise
        return img, report, measures

    def _score(self, ct: CTStudy | Mapping[str, Any], clinical: Any, timer: _Timer,
               on_labels: LabelsCallback | None = None,
               select: Callable[[dict[str, Any]], dict[str, float]] | None = None,
               ) -> tuple[dict[str, float], dict[Phase, PhaseImage], dict[Phase, PhaseReport],
                          dict[Phase, PhaseMeasures], ClinicalVariables]:
        study = CTStudy.coerce(ct)
        check_distinct_sources(study.arterial, study.portal)
        with timer.stage("clinical"):
            cv = as_clinical(clinical)
            clin = encode_clinical(cv, self.bundle.manifest.selection.clinical_encoding,
                                   self.bundle.manifest.selection)
        images: dict[Phase, PhaseImage] = {}
        reports: dict[Phase, PhaseReport] = {}
        measures: dict[Phase, PhaseMeasures] = {}
        if self.phase_workers == 1:
            for name in PHASES:
                images[name], reports[name], measures[name] = self._phase(
                    study.phase(name), name, timer, on_labels)
        else:
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="hccatom-phase") as pool:
                running = {n: pool.submit(self._phase, study.phase(n), n, timer, on_labels)
                           for n in PHASES}
                for name in PHASES:  # the arterial phase's error first, as when sequential
                    images[name], reports[name], measures[name] = running[name].result()
        check_distinct_pixels({n: m.fingerprint for n, m in measures.items()})
        with timer.stage("selection"):
            feeds = self.scorer.feeds(images["arterial"].image, images["portal"].image, clin)
            # select: ExplainRun.score with explain (the explain graphs give the scores)
            scores = select(feeds) if select is not None else self.scorer.score(feeds)[0]
        return scores, images, reports, measures, cv

    def score(self, ct: CTStudy | Mapping[str, Any], clinical: Any) -> dict[str, float]:
        """The four SELECTION scores (TACE, HAIC, TC, HC) without the ATOM decision."""
        return self._score(ct, clinical, _Timer(None))[0]

    # --- full chain -------------------------------------------------------------------
    def recommend(
        self,
        ct: CTStudy | Mapping[str, Any] | None = None,
        clinical: ClinicalVariables | Mapping[str, Any] | str | Path | None = None,
        *,
        study: str | Path | None = None,
        arterial: str | None = None,
        portal: str | None = None,
        progress: ProgressCallback | None = None,
        explain: bool | ExplainMode = False,
    ) -> Recommendation:
        """Run the whole chain for one patient. Raises typed :class:`HccatomError`s.

        ``explain``: also compute ``rec.explanation`` (attention rollout per model and
        phase, clinical attributions; :mod:`hccatom.explain`); needs a bundle exported with
        ``--explain`` (else :class:`~hccatom.errors.ExplainUnavailableError`). ``True`` or
        ``"variables"``: one attribution per variable; ``"groups"``: per clinical token
        group (cheaper); ``"rollout"``: relevance maps only.

        ``study``: a DICOM study folder instead of ``ct`` (needs the dicom extra): the
        arterial and portal series are found by :func:`hccatom.dicom.find_phases`;
        ``arterial``/``portal`` (Series Instance UIDs) override that choice. The result
        names slices by the source images and can be written as DICOM
        (``rec.to_dicom(out_dir)``).
        """
        if clinical is None:
            raise InputError("recommend needs the clinical variables (clinical=...).")
        explain_mode(explain)  # a bad mode fails before any work
        if study is not None:
            if ct is not None:
                raise InputError("Pass either ct=... or study=..., not both.")
            from hccatom.dicom import require_extra

            require_extra()  # a typed error naming the extra where pydicom is absent
            from hccatom.dicom.study_run import recommend_study

            return recommend_study(self, study, clinical, arterial=arterial, portal=portal,
                                   progress=progress, explain=explain)
        if ct is None or arterial is not None or portal is not None:
            raise InputError("recommend needs ct={'arterial': ..., 'portal': ...} or "
                             "study='DICOM folder' (arterial=/portal= choose series in it).")
        phases = CTStudy.coerce(ct)
        if _dicom_folders(phases):  # slices named by source images, DICOM output possible
            from hccatom.dicom.study_run import recommend_folders

            rec = recommend_folders(self, {n: Path(phases.phase(n)) for n in PHASES},
                                    clinical, progress=progress, explain=explain)
            if rec is not None:
                return rec
        return self._recommend(phases, clinical, _Timer(progress), explain=explain)

    def explain(self, ct: CTStudy | Mapping[str, Any],
                clinical: ClinicalVariables | Mapping[str, Any] | str | Path, *,
                mode: ExplainMode = "variables") -> Explanation:
        """The :class:`~hccatom.explain.Explanation` of one case (runs the whole chain;
        :class:`~hccatom.errors.ExplainUnavailableError` without explain graphs); ``mode``
        as ``recommend(explain=...)``."""
        rec = self.recommend(ct, clinical, explain=mode)
        assert rec.explanation is not None
        return rec.explanation

    def _recommend(self, ct: CTStudy | Mapping[str, Any], clinical: Any, timer: _Timer,
                   on_labels: LabelsCallback | None = None, *,
                   explain: bool | ExplainMode = False) -> Recommendation:
        """The whole chain; ``on_labels(phase, ct, labels)`` sees each phase's labels."""
        mode = explain_mode(explain)
        if mode and not self.explainer.available:  # fail before segmenting
            self.explainer.require()
        run = ExplainRun(self.explainer, self.scorer,
                         twins=explain_graphs_are_twins(self)) if mode else None
        t0 = time.perf_counter()
        scores, images, reports, measures, cv = self._score(
            ct, clinical, timer, on_labels, select=run.score if run else None)
        m = self.bundle.manifest
        lim = self.safety
        with timer.stage("atom"):
            decision = decide(scores, m.thresholds, m.policy)
            flags = [
                *synthetic_input_flags(m.synthetic, measures),
                *quality_flags(images, lim),
                *image_flags(measures, lim),
                *population_flags(cv, lim.training_population),
                *consistency_flags(cv),
                *self._limit_flags,
            ]
        explanation = None
        if run is not None and mode is not None:
            with timer.stage("explain"):
                explanation = explain_recommendation(self, images, cv, run, mode)
        timer.timings_ms["total"] = (time.perf_counter() - t0) * 1000.0
        rec = Recommendation(
            final_plan=decision.final_plan,
            decision=decision,
            scores=decision.assessments,
            phases=reports,
            quality_flags=flags,
            timings_ms=timer.timings_ms,
            engine=EngineInfo(
                device=self.device,
                segmentation=self.segmenter.providers,
                selection=self.scorer.providers,
                selection_layout="fused" if self.scorer.layout == "fused" else "separate",
            ),
            bundle=self._bundle_ref,
            hccatom_version=_version(),
            explanation=explanation,
        )
        return attach_visual(rec, images, self.preprocessing)

    def recommend_many(
        self,
        cases: Iterable[Case | tuple[Any, Any]],
        *,
        progress: Callable[[int, CaseResult], None] | None = None,
        workers: int = 1,
        on_error: Literal["raise", "yield"] = "raise",
    ) -> Iterator[CaseResult]:
        """Stream results in input order as they complete.

        ``cases``: :class:`Case` objects (CT phases or a DICOM ``study``) or ``(ct,
        clinical)`` pairs. ``progress(n_done, result)`` is called after each case.
        ``workers`` > 1 runs cases on a thread pool (at most ``workers`` in flight).
        ``on_error="yield"`` yields failed cases with their typed error instead of raising.
        """
        def run(i: int, case: Case | tuple[Any, Any]) -> CaseResult:
            c = case if isinstance(case, Case) else Case(ct=case[0], clinical=case[1])
            try:
                return CaseResult(i, c.case_id, recommendation=c._recommend(self))
            except HccatomError as exc:
                if on_error == "raise":
                    raise
                return CaseResult(i, c.case_id, error=exc)

        done = 0
        if workers <= 1:
            for i, case in enumerate(cases):
                result = run(i, case)
                done += 1
                if progress is not None:
                    progress(done, result)
                yield result
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: list[Any] = []
            it = iter(enumerate(cases))
            for i, case in it:
                pending.append(pool.submit(run, i, case))
                if len(pending) >= workers:
                    break
            while pending:
                result = pending.pop(0).result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(run, *nxt))
                done += 1
                if progress is not None:
                    progress(done, result)
                yield result

    def close(self) -> None:
        """Release the bundle's extracted files (zip bundles)."""
        self.bundle.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Predictor({self.bundle.name} {self.bundle.version}, device={self.device!r}, "
                f"selection={self.scorer.layout})")


__all__ = ["CTStudy", "Case", "CaseResult", "Predictor", "ProgressEvent"]
