"""``Segmenter``: run an exported nnU-Net v2 model (ONNX per fold) the way nnU-Net's predictor does.

Input axis convention: a :class:`~hccatom.Volume` is used as given — its ``(z, y, x)``
array and ``(z, y, x)`` spacing are exactly what nnU-Net's ``SimpleITKIO`` hands its
predictor (``GetArrayFromImage`` plus reversed spacing). Anything else goes through
:func:`hccatom.read_ct` first, which reorients to canonical LPS; nnU-Net itself does not
reorient, so a file stored in another orientation (e.g. RAS NIfTI) gives nnU-Net an array
flipped in x/y relative to ours. With all mirror axes on, the ensemble is (nearly) flip
equivariant and the difference is small; without mirroring, pass a Volume in the
orientation the model was trained on, or record that orientation in the spec
(``training_orientation``): the Segmenter then permutes/flips the array the network sees to
it and the result back (:mod:`.orientation`).

Precision: the network runs in float32 in ONNX Runtime (unless the bundle ships an fp16
graph), while nnU-Net's predictor runs it under fp16 autocast on CUDA (fp32 on the CPU). So
"the way nnU-Net's predictor does" means the same preprocessing, tiling, weighting, mirroring,
fold averaging and float16 accumulation; the network's own arithmetic matches nnU-Net's CPU
path, and differs from its CUDA path by autocast rounding (parity tests compare with
nnU-Net on the CPU).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.engines import Engine, OnnxRuntimeEngine
from hccatom.engines.base import MeteredEngine, TransferMeter, TransferStats
from hccatom.engines.providers import CUDA, TENSORRT, CudaOptions, file_sha256
from hccatom.errors import (
    BundleIntegrityError,
    BundleNotFoundError,
    EngineUnavailableError,
    InputError,
)
from hccatom.segmentation.confidence import mean_max_probability
from hccatom.segmentation.cuda_graphs import (
    engine_cuda_options,
    fixed_shape_setup,
    graph_models,
)
from hccatom.segmentation.device_window import DeviceSlidingWindow, FixedShape
from hccatom.segmentation.ensemble import (
    StageParts,
    average_probabilities,
    split_by_stage,
    tumour_confidence,
)
from hccatom.segmentation.label_resampling import channel_argmax
from hccatom.segmentation.orientation import Reorientation, orientation_of
from hccatom.segmentation.pipeline import (
    Accumulation,
    Preprocessed,
    Progress,
    TilePredictor,
    labels_on_cropped_grid,
    logits_to_labels,
    logits_to_probabilities,
    preprocess,
    sliding_window_logits,
    uncrop_channels,
    uncrop_labels,
    uncrop_probabilities,
)
from hccatom.segmentation.postprocessing import apply_postprocessing
from hccatom.segmentation.spec import SegmentationSpec
from hccatom.volume import Volume

log = logging.getLogger(__name__)


def _ordinary_engines(paths: Sequence[Path], device: str, threads: int | None,
                      cuda_options: CudaOptions | None) -> list[Engine]:
    """One ordinary (variable-shape) session per fold model."""
    return [OnnxRuntimeEngine(p, device=device, threads=threads,
                              cuda_options=engine_cuda_options(cuda_options)) for p in paths]

HOST_BATCH_SIZE = 2
"""Tiles per engine call on the host path (measured best on the 2-core VM)."""


def _engine_predictor(
    engine: Engine, input_name: str, output_name: str, meter: TransferMeter | None
) -> TilePredictor:
    if meter is not None and isinstance(engine, MeteredEngine):  # ONNX Runtime, Triton
        def run_counted(x: np.ndarray) -> np.ndarray:
            return engine.run({input_name: x}, meter=meter)[output_name]

        return run_counted

    def run(x: np.ndarray) -> np.ndarray:
        return engine.run({input_name: x})[output_name]

    return run


def _transfer_dict(stats: TransferStats) -> dict[str, int]:
    return {
        "host_to_device": stats.host_to_device,
        "device_to_host": stats.device_to_host,
        "constant_inputs": stats.constant_inputs,
    }


class Segmenter:
    """Liver/tumour segmentation with an ``hccatom export nnunet`` directory.

    Args:
        export_dir: folder holding ``segmentation_spec.json`` and the fold ONNX files.
        device: engine device (``"auto"``, ``"cpu"``, ``"cuda"``, ``"tensorrt"``).
        step_size: sliding-window step as a fraction of the patch (nnU-Net default 0.5).
        mirroring: ``None`` = the axes the spec allows; ``False`` = none; ``True`` = the
            allowed axes; or an explicit subset of the allowed axes.
        threads: CPU intra-op threads per engine (``None``: ONNX Runtime's default).
        batch_size: tiles per engine call (each with all its mirror flips on the device
            path); ``None``: 2 on the host path, from free device memory (CPU: a 1 GiB
            budget), capped at 4, on the device path.
        folds: use only these folds of the export (default: all).
        accumulate: ``"float16"`` (default) accumulates tiles and folds in float16 exactly
            as nnU-Net's predictor does (also on the CPU), so results match it;
            ``"float32"`` is more precise where tile weights are tiny (volume corners).
        device_resident: keep tiles on the engine's device
            (:mod:`~hccatom.segmentation.device_window`: only the volume goes up, only the
            label map comes down). ``None`` (default): on when the engines run the CUDA or
            TensorRT provider, off on the CPU provider (there both paths measured the same
            within noise, benchmarks/README.md, and nothing crosses a bus to save);
            ``True``/``False`` force it (3-D configurations and ONNX Runtime engines only).
        cuda_options: CUDA provider options of the fold engines. With
            ``enable_cuda_graph`` the device-resident path runs the network through a
            :class:`~hccatom.engines.fixed_shape_engine.FixedShapeEngine` per fold: the tile
            batch is fixed (the last batch padded, the padding's outputs dropped) and the
            CUDA EP captures it once as a CUDA graph and replays it (on the CPU provider the
            same fixed buffers run without capture). Needs the device-resident path.
        models: the fold model files (one per fold of every stage, in
            :meth:`SegmentationSpec.all_folds` order) instead of the spec's, e.g. the fp16
            twins a Predictor picked; loaded as ``export_dir``'s would be, not verified.
        spec, engines: advanced/testing — a spec and ready engines (one per fold, in
            :meth:`SegmentationSpec.all_folds` order) instead of loading them from
            ``export_dir``.

    Several stages: a spec with ``ensemble`` members runs every member (each with its own
    folds, patch and spacing; the same arguments) and averages their probabilities on the
    input grid (:mod:`.ensemble`); a cascade (``previous_stage``) runs the low-resolution
    stage first and feeds its segmentation to the full-resolution stage (:mod:`.cascade`).
    The cascade's full-resolution stage always runs on the host path (its input has extra
    channels the device graphs do not take); ``device_resident=True`` refuses it, ``None``
    falls back to the host path for that stage only. Progress is reported per stage.

    Thread-safe: one Segmenter may serve several threads (no per-call state is stored).
    """

    def __init__(
        self,
        export_dir: str | Path | None,
        device: str = "auto",
        step_size: float = 0.5,
        mirroring: bool | Sequence[int] | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        *,
        folds: Sequence[int | str] | None = None,
        accumulate: Accumulation = "float16",
        device_resident: bool | None = None,
        cuda_options: CudaOptions | None = None,
        spec: SegmentationSpec | None = None,
        engines: Sequence[Engine] | None = None,
        verify: bool = True,
        models: Sequence[Path] | None = None,
    ) -> None:
        if not 0 < step_size <= 1:
            raise InputError(f"step_size must be in (0, 1], got {step_size}")
        if batch_size is not None and batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if spec is None:
            if export_dir is None:
                raise InputError("give export_dir (or spec and engines)")
            spec = SegmentationSpec.load(export_dir)
        self.spec = spec
        if accumulate not in ("float16", "float32"):
            raise InputError(f"accumulate must be 'float16' or 'float32', got {accumulate!r}")
        self.accumulate: Accumulation = accumulate
        self.step_size = float(step_size)
        self.batch_size = HOST_BATCH_SIZE if batch_size is None else int(batch_size)
        self.mirror_axes = self._mirror_axes(mirroring)
        multi_stage = spec.previous_stage is not None or bool(spec.ensemble)
        if multi_stage and folds is not None:
            raise InputError(
                "folds= picks folds of one configuration; this spec is a cascade or an "
                "ensemble (re-export it with the folds wanted)"
            )
        parts: StageParts[Engine] | None = None
        if engines is not None and multi_stage:
            try:
                parts = split_by_stage(spec, list(engines))
            except ValueError as exc:
                raise InputError(f"engines for a multi-stage spec: {exc}") from exc
            engines = parts.own
        model_parts: StageParts[Path] | None = None
        if models is not None:
            try:
                model_parts = split_by_stage(spec, [Path(m) for m in models])
            except ValueError as exc:
                raise InputError(f"models for this spec: {exc}") from exc
        chosen = [f for f in spec.folds if folds is None or f.fold in list(folds)]
        if folds is not None and len(chosen) != len(list(folds)):
            have = [f.fold for f in spec.folds]
            raise InputError(f"folds {list(folds)} requested but the export has folds {have}")
        self.folds = [f.fold for f in chosen]
        fixed_only: FixedShape | None = None
        if engines is not None:
            if len(engines) != len(chosen):
                raise InputError(f"{len(engines)} engines given for {len(chosen)} folds")
            self.engines = list(engines)
        else:
            if export_dir is None and model_parts is None:
                raise InputError("engines are loaded from export_dir; give one")
            root = Path(export_dir or ".")
            given = model_parts.own if model_parts is not None else []
            paths = ([m for f, m in zip(spec.folds, given, strict=True) if f in chosen]
                     if given else [root / f.onnx for f in chosen])
            for f, path in zip(chosen, paths, strict=True):
                if not path.is_file():
                    raise BundleNotFoundError(
                        f"fold {f.fold} model {path.name} missing in {path.parent}; re-run "
                        "`hccatom export nnunet` or use a complete bundle"
                    )
                if verify and not given and file_sha256(path) != f.sha256:
                    raise BundleIntegrityError(
                        f"fold {f.fold} model {f.onnx} does not match its sha256 in the "
                        "segmentation spec (changed or corrupted); re-export it"
                    )
            # CUDA graphs on the device path: the fixed-shape sessions are the only ones
            fixed_only = graph_models(paths, device, device_resident, cuda_options, threads,
                                      self.spec)
            self.engines = [] if fixed_only is not None else _ordinary_engines(
                paths, device, threads, cuda_options)
        window: DeviceSlidingWindow | None = None
        if fixed_only is not None:
            try:
                window = self._fixed_only_window(fixed_only, batch_size)
            except EngineUnavailableError as exc:
                if device != "auto":
                    raise
                log.warning("CUDA graphs: the fixed-shape sessions could not start on the "
                            "CUDA provider (%s); falling back to ordinary engines", exc)
                self.engines = _ordinary_engines(paths, device, threads, cuda_options)
        self._device_window: DeviceSlidingWindow | None = window
        if window is None:
            self._device_window = self._make_device_window(
                device_resident, batch_size, cuda_options, threads)

        def stage(stage_spec: SegmentationSpec, stage_engines: list[Engine] | None,
                  stage_models: list[Path] | None) -> Segmenter:
            return Segmenter(
                export_dir, device, step_size, mirroring, threads, batch_size,
                accumulate=accumulate, device_resident=device_resident, spec=stage_spec,
                engines=stage_engines, verify=verify, cuda_options=cuda_options,
                models=stage_models,
            )

        mp = model_parts
        self._previous: Segmenter | None = None
        if spec.previous_stage is not None:
            self._previous = stage(spec.previous_stage, parts.previous if parts else None,
                                   mp.previous if mp else None)
        self._members = [
            stage(m, parts.members[i] if parts else None, mp.members[i] if mp else None)
            for i, m in enumerate(spec.ensemble)
        ]

    def _fixed_only_window(self, setup: FixedShape, batch_size: int | None
                           ) -> DeviceSlidingWindow:
        """The device window whose folds exist only as fixed-shape networks."""
        window = DeviceSlidingWindow(
            [], self.spec, input_name=self.spec.input_name, output_name=self.spec.output_name,
            step_size=self.step_size, mirror_axes=self.mirror_axes,
            accumulate=self.accumulate, batch_size=batch_size, fixed_shape=setup,
        )
        assert window.networks is not None
        self.engines = list(window.networks)
        return window

    def _make_device_window(
        self, device_resident: bool | None, batch_size: int | None,
        cuda_options: CudaOptions | None, threads: int | None,
    ) -> DeviceSlidingWindow | None:
        """The device-resident runner, or None for the host path."""
        fixed = fixed_shape_setup(cuda_options, threads, device_resident)
        ort_engines = all(isinstance(e, OnnxRuntimeEngine) for e in self.engines)
        cascade_stage = self.spec.previous_stage is not None
        if device_resident is None:
            gpu = ort_engines and any(
                p in (CUDA, TENSORRT) for e in self.engines for p in e.providers
            )
            device_resident = gpu and self.spec.dims == 3 and not cascade_stage
        if not device_resident:
            return None
        if cascade_stage:
            raise InputError(
                "device_resident=True: a cascade's full-resolution stage runs on the host path "
                "only (its input carries the previous stage's labels as extra channels); use "
                "device_resident=None (the low-resolution stage still runs on the device)"
            )
        if not ort_engines or self.spec.dims != 3:
            raise InputError(
                "device_resident=True needs ONNX Runtime engines and a 3-D configuration "
                f"(this spec is {self.spec.dims}-D); use device_resident=False"
            )
        return DeviceSlidingWindow(
            [e for e in self.engines if isinstance(e, OnnxRuntimeEngine)],
            self.spec,
            input_name=self.spec.input_name,
            output_name=self.spec.output_name,
            step_size=self.step_size,
            mirror_axes=self.mirror_axes,
            accumulate=self.accumulate,
            batch_size=batch_size,
            fixed_shape=fixed,
        )

    @property
    def device_resident(self) -> bool:
        """Whether tiles stay on the engine's device (see the class docstring)."""
        return self._device_window is not None

    @property
    def cuda_graphs(self) -> bool:
        """Whether the network runs as captured CUDA graphs (fixed-shape engines on CUDA)."""
        nets = self._device_window.networks if self._device_window is not None else None
        return bool(nets) and all(n.cuda_graph for n in nets or [])

    @property
    def fixed_shape_network(self) -> bool:
        """Whether the network runs through fixed-shape engines (CUDA graphs on CUDA)."""
        return self._device_window is not None and self._device_window.networks is not None

    def transfer_stats(self) -> TransferStats:
        """Host <-> device bytes of all fold engines so far (cumulative, all calls; every
        stage and ensemble member)."""
        total = TransferStats()
        for e in self.engines:
            if isinstance(e, MeteredEngine):
                total = total + e.transfer_stats()
        window = self._device_window
        if window is not None and not window.engines:  # fold engines exist only as networks
            total = total + window.anchor.transfer_stats()
        for stage in [*([self._previous] if self._previous else []), *self._members]:
            total = total + stage.transfer_stats()
        return total

    def _mirror_axes(self, mirroring: bool | Sequence[int] | None) -> tuple[int, ...]:
        allowed = tuple(self.spec.mirror_axes)
        if mirroring is None or mirroring is True:
            return allowed
        if mirroring is False:
            return ()
        axes = tuple(int(a) for a in mirroring)
        bad = [a for a in axes if a not in allowed]
        if bad:
            raise InputError(f"mirror axes {bad} are not allowed by this model (allowed {allowed})")
        return tuple(sorted(set(axes)))

    @property
    def providers(self) -> list[str]:
        """Execution providers of the first fold's engine."""
        return list(self.engines[0].providers)

    @staticmethod
    def _as_volume(ct: Any) -> Volume:
        if isinstance(ct, Volume):
            return ct
        from hccatom.ct_io import read_ct

        return read_ct(ct)

    def _reorientation(self, vol: Volume) -> Reorientation | None:
        """From the volume's orientation to the one the model was trained on (None: as is)."""
        if self.spec.training_orientation is None:
            return None
        ro = Reorientation.between(orientation_of(vol.direction), self.spec.training_orientation)
        return None if ro.is_identity else ro

    def _prepare(
        self, ct: Any, timings: dict[str, float] | None, progress: Progress | None = None,
        transfers: dict[str, int] | None = None,
    ) -> tuple[Preprocessed, Volume, Reorientation | None]:
        """Read, run the previous stage (cascades), reorient to the training orientation and
        preprocess."""
        t0 = time.perf_counter()
        vol = self._as_volume(ct)
        if timings is not None:
            timings["read"] = timings.get("read", 0.0) + time.perf_counter() - t0
        previous = None
        if self._previous is not None:
            previous = self._previous.channel_indices(
                vol, progress=progress, timings=timings, transfers=transfers
            )
        ro = self._reorientation(vol)
        array = vol.array if ro is None else ro.forward(vol.array)
        spacing = vol.spacing if ro is None else ro.forward_spacing(vol.spacing)
        if previous is not None and ro is not None:
            previous = ro.forward(previous)
        return preprocess(array, spacing, self.spec, timings, previous), vol, ro

    def _logits(
        self, pre: Preprocessed, progress: Progress | None, timings: dict[str, float] | None,
        meter: TransferMeter | None,
    ) -> np.ndarray:
        """The host sliding window: logits on the network's grid."""
        predictors = [
            _engine_predictor(e, self.spec.input_name, self.spec.output_name, meter)
            for e in self.engines
        ]
        return sliding_window_logits(
            pre.data,
            self.spec,
            predictors,
            step_size=self.step_size,
            mirror_axes=self.mirror_axes,
            batch_size=self.batch_size,
            progress=progress,
            timings=timings,
            accumulate=self.accumulate,
        )

    def probabilities(
        self,
        ct: Any,
        *,
        progress: Progress | None = None,
        timings: dict[str, float] | None = None,
        transfers: dict[str, int] | None = None,
    ) -> tuple[np.ndarray, Volume]:
        """Softmax probabilities ``(C, z, y, x)`` float32 on the input grid, and that grid.

        Channel ``c`` is the network's output channel; ``spec.labels`` says what it means.
        ``timings`` (optional dict) receives seconds per stage, ``transfers`` the bytes
        moved host -> device / device -> host (``"host_to_device"``, ``"device_to_host"``,
        ``"constant_inputs"``; added to what the dict holds, summed over every stage and
        member). An ensemble returns the mean of its members' probabilities.
        """
        vol = self._as_volume(ct)
        if not self._members:
            return self._own_probabilities(vol, progress, timings, transfers), vol

        def each() -> Any:
            yield self._own_probabilities(vol, progress, timings, transfers)
            for member in self._members:
                yield member._own_probabilities(vol, progress, timings, transfers)

        return average_probabilities(each()), vol

    def _own_probabilities(
        self, vol: Volume, progress: Progress | None, timings: dict[str, float] | None,
        transfers: dict[str, int] | None,
    ) -> np.ndarray:
        """This configuration's probabilities (cascade included, ensemble members not)."""
        meter = TransferMeter()
        pre, _, ro = self._prepare(vol, timings, progress, transfers)
        if self._device_window is not None:
            result = self._device_window.run(
                pre, probabilities=True, progress=progress, timings=timings, meter=meter
            )
            assert result.probabilities is not None
            probs = uncrop_probabilities(result.probabilities, pre, self.spec, timings)
        else:
            logits = self._logits(pre, progress, timings, meter)
            probs = logits_to_probabilities(logits, pre, self.spec, timings)
        _add_transfers(transfers, meter)
        return probs if ro is None else ro.backward(probs)

    def channel_indices(
        self,
        ct: Any,
        *,
        progress: Progress | None = None,
        timings: dict[str, float] | None = None,
        transfers: dict[str, int] | None = None,
    ) -> np.ndarray:
        """The winning network channel per voxel (uint8, input grid), before the label table
        and postprocessing: what ``nnUNetv2_predict`` writes (dataset label values). A
        cascade's previous stage hands this on to the next stage."""
        vol = self._as_volume(ct)
        if self._members:
            return channel_argmax(self.probabilities(
                vol, progress=progress, timings=timings, transfers=transfers)[0])
        pre, _, ro = self._prepare(vol, timings, progress, transfers)
        meter = TransferMeter()
        if self._device_window is not None:
            index = self._device_window.run(
                pre, progress=progress, timings=timings, meter=meter
            ).index
        else:
            logits = self._logits(pre, progress, timings, meter)
            index = labels_on_cropped_grid(logits, pre, self.spec, timings)
        _add_transfers(transfers, meter)
        full = uncrop_channels(index, pre, self.spec, timings)
        return full if ro is None else ro.backward(full)

    def segment(
        self,
        ct: Any,
        *,
        progress: Progress | None = None,
        timings: dict[str, float] | None = None,
        transfers: dict[str, int] | None = None,
    ) -> Volume:
        """uint8 labels on the input grid: 0 background, 1 liver, 2 tumour.

        The same labels as the argmax of :meth:`probabilities`, without materialising the
        full-size probability array (see ``logits_to_labels``; ensembles do build it).
        ``timings`` and ``transfers`` as in :meth:`probabilities`.
        """
        return self._segment(ct, False, progress, timings, transfers)[0]

    def segment_with_confidence(
        self,
        ct: Any,
        *,
        progress: Progress | None = None,
        timings: dict[str, float] | None = None,
        transfers: dict[str, int] | None = None,
    ) -> tuple[Volume, float | None]:
        """:meth:`segment`, plus the tumour's mean max-probability on the network grid
        (None when no voxel is tumour there); see :mod:`.confidence`. On the
        device-resident path it is computed on the device (two scalars come down). An
        ensemble has no single network grid: there it is the mean max-probability of the
        averaged probabilities over the input-grid voxels labelled tumour."""
        return self._segment(ct, True, progress, timings, transfers)

    def _segment(
        self, ct: Any, with_confidence: bool, progress: Progress | None,
        timings: dict[str, float] | None, transfers: dict[str, int] | None,
    ) -> tuple[Volume, float | None]:
        vol = self._as_volume(ct)
        if self._members:
            labels, confidence = self._ensemble_labels(
                vol, with_confidence, progress, timings, transfers
            )
        else:
            labels, confidence = self._own_labels(
                vol, with_confidence, progress, timings, transfers
            )
        if self.spec.postprocessing is not None:  # nnU-Net's chosen postprocessing, as data
            t0 = time.perf_counter()
            labels = apply_postprocessing(
                labels, self.spec.postprocessing, self.spec.labels.channel_to_label
            )
            if timings is not None:
                timings["postprocess"] = timings.get("postprocess", 0.0) + (
                    time.perf_counter() - t0
                )
        return vol.with_array(labels, note=self._note()), confidence

    def _note(self) -> str:
        parts = [f"{self.spec.configuration} (folds {self.folds})"]
        if self._previous is not None:
            parts.insert(0, f"{self._previous.spec.configuration} (folds "
                            f"{self._previous.folds}) ->")
        parts += [f"+ {m.spec.configuration} (folds {m.folds})" for m in self._members]
        return (
            f"nnU-Net {' '.join(parts)} segmentation (step {self.step_size}, mirror axes "
            f"{list(self.mirror_axes)}{', device-resident' if self._device_window else ''})"
        )

    def _ensemble_labels(
        self, vol: Volume, with_confidence: bool, progress: Progress | None,
        timings: dict[str, float] | None, transfers: dict[str, int] | None,
    ) -> tuple[np.ndarray, float | None]:
        """Labels (and confidence) from the members' averaged probabilities."""
        probs, _ = self.probabilities(vol, progress=progress, timings=timings,
                                      transfers=transfers)
        t0 = time.perf_counter()
        index = channel_argmax(probs)
        confidence = (tumour_confidence(probs, index, self.spec.labels.tumour_channel)
                      if with_confidence else None)
        del probs
        lut = np.asarray(self.spec.labels.channel_to_label, dtype=np.uint8)
        if timings is not None:
            timings["argmax"] = timings.get("argmax", 0.0) + time.perf_counter() - t0
        return lut[index], confidence

    def _own_labels(
        self, vol: Volume, with_confidence: bool, progress: Progress | None,
        timings: dict[str, float] | None, transfers: dict[str, int] | None,
    ) -> tuple[np.ndarray, float | None]:
        """Labels (and confidence) of this single configuration (cascade included)."""
        pre, _, ro = self._prepare(vol, timings, progress, transfers)
        meter = TransferMeter()
        tumour = self.spec.labels.tumour_channel if with_confidence else None
        confidence: float | None = None
        if self._device_window is not None:
            result = self._device_window.run(
                pre, confidence_channel=tumour, progress=progress, timings=timings,
                meter=meter,
            )
            labels = uncrop_labels(result.index, pre, self.spec, timings)
            confidence = result.confidence
        else:
            logits = self._logits(pre, progress, timings, meter)
            if tumour is not None:
                confidence = mean_max_probability(logits, tumour)
            labels = logits_to_labels(logits, pre, self.spec, timings)
        _add_transfers(transfers, meter)
        if ro is not None:  # back from the training orientation to the input's
            labels = ro.backward(labels)
        return labels, confidence


def _add_transfers(transfers: dict[str, int] | None, meter: TransferMeter) -> None:
    """Add one stage's host <-> device bytes to ``transfers`` (all stages together)."""
    if transfers is None:
        return
    for key, value in _transfer_dict(meter.snapshot()).items():
        transfers[key] = transfers.get(key, 0) + value
