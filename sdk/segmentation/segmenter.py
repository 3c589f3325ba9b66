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

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.engines import Engine, OnnxRuntimeEngine
from hccatom.engines.providers import file_sha256
from hccatom.errors import BundleIntegrityError, BundleNotFoundError, InputError
from hccatom.segmentation.orientation import Reorientation, orientation_of
from hccatom.segmentation.pipeline import (
    Accumulation,
    Preprocessed,
    Progress,
    TilePredictor,
    logits_to_labels,
    logits_to_probabilities,
    preprocess,
    sliding_window_logits,
)
from hccatom.segmentation.postprocessing import apply_postprocessing
from hccatom.segmentation.spec import SegmentationSpec
from hccatom.volume import Volume


def _engine_predictor(engine: Engine, input_name: str, output_name: str) -> TilePredictor:
    def run(x: np.ndarray) -> np.ndarray:
        return engine.run({input_name: x})[output_name]

    return run


class Segmenter:
    """Liver/tumour segmentation with an ``hccatom export nnunet`` directory.

    Args:
        export_dir: folder holding ``segmentation_spec.json`` and the fold ONNX files.
        device: engine device (``"auto"``, ``"cpu"``, ``"cuda"``, ``"tensorrt"``).
        step_size: sliding-window step as a fraction of the patch (nnU-Net default 0.5).
        mirroring: ``None`` = the axes the spec allows; ``False`` = none; ``True`` = the
            allowed axes; or an explicit subset of the allowed axes.
        threads: CPU intra-op threads per engine (``None``: ONNX Runtime's default).
        batch_size: tiles per engine call.
        folds: use only these folds of the export (default: all).
        accumulate: ``"float16"`` (default) accumulates tiles and folds in float16 exactly
            as nnU-Net's predictor does (also on the CPU), so results match it;
            ``"float32"`` is more precise where tile weights are tiny (volume corners).
        spec, engines: advanced/testing — a spec and ready engines (one per fold) instead
            of loading them from ``export_dir``.

    Thread-safe: one Segmenter may serve several threads (no per-call state is stored).
    """

    def __init__(
        self,
        export_dir: str | Path | None,
        device: str = "auto",
        step_size: float = 0.5,
        mirroring: bool | Sequence[int] | None = None,
        threads: int | None = None,
        batch_size: int = 2,
        *,
        folds: Sequence[int | str] | None = None,
        accumulate: Accumulation = "float16",
        spec: SegmentationSpec | None = None,
        engines: Sequence[Engine] | None = None,
        verify: bool = True,
    ) -> None:
        if not 0 < step_size <= 1:
            raise InputError(f"step_size must be in (0, 1], got {step_size}")
        if batch_size < 1:
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
        self.batch_size = int(batch_size)
        self.mirror_axes = self._mirror_axes(mirroring)
        chosen = [f for f in spec.folds if folds is None or f.fold in list(folds)]
        if folds is not None and len(chosen) != len(list(folds)):
            have = [f.fold for f in spec.folds]
            raise InputError(f"folds {list(folds)} requested but the export has folds {have}")
        self.folds = [f.fold for f in chosen]
        if engines is not None:
            if len(engines) != len(chosen):
                raise InputError(f"{len(engines)} engines given for {len(chosen)} folds")
            self.engines = list(engines)
        else:
            if export_dir is None:
                raise InputError("engines are loaded from export_dir; give one")
            root = Path(export_dir)
            self.engines = []
            for f in chosen:
                path = root / f.onnx
                if not path.is_file():
                    raise BundleNotFoundError(
                        f"fold {f.fold} model {f.onnx} missing in {root}; re-run "
                        "`hccatom export nnunet` or use a complete bundle"
                    )
                if verify and file_sha256(path) != f.sha256:
                    raise BundleIntegrityError(
                        f"fold {f.fold} model {f.onnx} does not match its sha256 in the "
                        "segmentation spec (changed or corrupted); re-export it"
                    )
                self.engines.append(OnnxRuntimeEngine(path, device=device, threads=threads))
        self._predictors = [
            _engine_predictor(e, spec.input_name, spec.output_name) for e in self.engines
        ]

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

    def _logits(
        self, ct: Any, progress: Progress | None, timings: dict[str, float] | None
    ) -> tuple[np.ndarray, Preprocessed, Volume, Reorientation | None]:
        """Read, reorient to the training orientation, preprocess and run the sliding window:
        logits on the network's grid."""
        t0 = time.perf_counter()
        vol = self._as_volume(ct)
        if timings is not None:
            timings["read"] = timings.get("read", 0.0) + time.perf_counter() - t0
        ro = self._reorientation(vol)
        array = vol.array if ro is None else ro.forward(vol.array)
        spacing = vol.spacing if ro is None else ro.forward_spacing(vol.spacing)
        pre = preprocess(array, spacing, self.spec, timings)
        logits = sliding_window_logits(
            pre.data,
            self.spec,
            self._predictors,
            step_size=self.step_size,
            mirror_axes=self.mirror_axes,
            batch_size=self.batch_size,
            progress=progress,
            timings=timings,
            accumulate=self.accumulate,
        )
        return logits, pre, vol, ro

    def probabilities(
        self,
        ct: Any,
        *,
        progress: Progress | None = None,
        timings: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, Volume]:
        """Softmax probabilities ``(C, z, y, x)`` float32 on the input grid, and that grid.

        Channel ``c`` is the network's output channel; ``spec.labels`` says what it means.
        ``timings`` (optional dict) receives seconds per stage.
        """
        logits, pre, vol, ro = self._logits(ct, progress, timings)
        probs = logits_to_probabilities(logits, pre, self.spec, timings)
        return (probs if ro is None else ro.backward(probs)), vol

    def segment(
        self,
        ct: Any,
        *,
        progress: Progress | None = None,
        timings: dict[str, float] | None = None,
    ) -> Volume:
        """uint8 labels on the input grid: 0 background, 1 liver, 2 tumour.

        The same labels as the argmax of :meth:`probabilities`, without materialising the
        full-size probability array (see ``logits_to_labels``).
        """
        logits, pre, vol, ro = self._logits(ct, progress, timings)
        labels = logits_to_labels(logits, pre, self.spec, timings)
        if ro is not None:  # back from the training orientation to the input's
            labels = ro.backward(labels)
        if self.spec.postprocessing is not None:  # nnU-Net's chosen postprocessing, as data
            t0 = time.perf_counter()
            labels = apply_postprocessing(
                labels, self.spec.postprocessing, self.spec.labels.channel_to_label
            )
            if timings is not None:
                timings["postprocess"] = timings.get("postprocess", 0.0) + (
                    time.perf_counter() - t0
                )
        return vol.with_array(
            labels,
            note=f"nnU-Net {self.spec.configuration} segmentation (folds {self.folds}, "
            f"step {self.step_size}, mirror axes {list(self.mirror_axes)})",
        )

