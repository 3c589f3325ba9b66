"""nnU-Net's sliding window with every tile kept on the engine's device.

The preprocessed volume is uploaded once; padding, tile extraction with all mirror flips,
the network (a batch of tiles per call), Gaussian weighting, float16 (or float32)
accumulation, division, fold averaging, the inf/NaN check, order-1 back-resampling and
the argmax run as ONNX Runtime graphs (:mod:`.device_graphs`) chained through IO binding
on ``OrtValue`` objects. Only the channel-index map on the cropped input grid comes back
(plus the probabilities when asked). On the CPU execution provider the same code runs with
"device" = host memory, which is how it is tested.

With a :class:`FixedShape` setup (CUDA graphs asked for) the network of each fold runs
through a :class:`FixedShapeEngine`: the tiles graph writes each batch straight into its
fixed input buffer, the last, short batch is padded by repeating a tile, and only the real
tiles' outputs are accumulated.

What stays on the host: the un-crop and channel -> label lookup of the (small, uint8)
result, and, when nnU-Net resamples the logits with a separate low-resolution axis
(anisotropic spacing) or another order than 1, that back-resampling: then the logits on
the network grid come down (counted in the transfer stats) and the host path's resampling
runs on them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from hccatom.engines import OnnxRuntimeEngine
from hccatom.engines.base import TransferMeter
from hccatom.engines.fixed_shape_engine import FixedShapeEngine
from hccatom.engines.providers import TENSORRT, CudaOptions
from hccatom.errors import InputError
from hccatom.segmentation import device_graphs as graphs
from hccatom.segmentation.confidence import mean_max_probability
from hccatom.segmentation.label_resampling import channel_argmax
from hccatom.segmentation.pipeline import (
    Accumulation,
    NonFiniteLogitsError,
    Preprocessed,
    Progress,
    check_finite,
    labels_on_cropped_grid,
    logits_to_cropped_probabilities,
)
from hccatom.segmentation.resampling import separate_z_axis
from hccatom.segmentation.sliding_window import (
    gaussian_importance,
    mirror_combinations,
    tile_starts,
)
from hccatom.segmentation.spec import SegmentationSpec

DEFAULT_CPU_BUDGET = 1 << 30
"""Bytes of network activations per call allowed on the CPU provider (tile batch sizing)."""
MAX_TILES_PER_CALL = 4
ACTIVATION_FACTOR = 128
"""Peak network activations per input voxel, in float32 values (nnU-Net 3d_fullres: ~32
channels x a few live tensors); used only to size tile batches."""


def tiles_per_call(
    patch: Sequence[int], n_mirrors: int, budget_bytes: int, cap: int = MAX_TILES_PER_CALL
) -> int:
    """Tiles (each with all its ``n_mirrors`` flips) per network call within a memory budget.

    One sample costs about ``ACTIVATION_FACTOR * 4`` bytes per patch voxel; at least one
    tile, at most ``cap``.
    """
    per_sample = int(np.prod(patch)) * 4 * ACTIVATION_FACTOR
    fit = budget_bytes // max(1, per_sample * n_mirrors)
    return int(max(1, min(cap, fit)))


def free_device_memory(engine: OnnxRuntimeEngine) -> int | None:
    """Free memory of the engine's GPU in bytes (``nvidia-smi``), None on the CPU/unknown."""
    kind, dev = engine.ort_device
    if kind != "cuda":
        return None
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, f"--id={dev}", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return int(float(out.stdout.strip().splitlines()[0])) << 20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class FixedShape:
    """Run the network through :class:`FixedShapeEngine` (one per fold) with the tile batch
    fixed: CUDA graphs on the CUDA provider (``cuda_options``, ``enable_cuda_graph`` forced
    on), the same fixed buffers without capture on the CPU provider (how it is tested)."""

    cuda_options: CudaOptions | None = None
    threads: int | None = None


def padded_starts(chunk: np.ndarray, size: int) -> np.ndarray:
    """``chunk`` (n, 3) tile starts filled up to ``size`` rows by repeating its last row.

    A fixed-shape network always runs ``size`` tiles; the repeats are computed and their
    outputs dropped (never accumulated).
    """
    if len(chunk) > size or len(chunk) == 0:
        raise ValueError(f"a batch of {len(chunk)} tiles does not fit a fixed batch of {size}")
    if len(chunk) == size:
        return chunk
    return np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])


def fixed_shape_networks(
    engines: Sequence[OnnxRuntimeEngine], input_name: str, samples: int, setup: FixedShape
) -> list[FixedShapeEngine]:
    """One :class:`FixedShapeEngine` per fold engine, its batch fixed at ``samples``."""
    made = []
    for engine in engines:
        if TENSORRT in engine.providers:
            raise InputError(
                "CUDA graphs run on the CUDA provider; this segmentation engine runs TensorRT "
                "(use device='cuda', or turn enable_cuda_graph off)"
            )
        spec = next((s for s in engine.inputs if s.name == input_name), None)
        if spec is None:
            raise InputError(f"the segmentation model has no input {input_name!r}")
        batch = spec.shape[0]
        fixed: dict[str, int] = {}
        if isinstance(batch, str):
            fixed[batch] = samples
        elif batch != samples:
            raise InputError(
                f"the segmentation model's batch is fixed at {batch} but the device path runs "
                f"{samples} samples per call; pass batch_size so that tiles x mirror flips = "
                f"{batch}"
            )
        kind, _ = engine.ort_device
        made.append(FixedShapeEngine(
            engine.path, device="cuda" if kind == "cuda" else "cpu", fixed=fixed,
            cuda_options=setup.cuda_options, threads=setup.threads,
        ))
    return made


@dataclass(frozen=True)
class DeviceResult:
    """Channel indices (uint8) on the cropped input grid, probabilities when asked, and the
    mean winning probability where the confidence channel wins (None when not asked or
    when it wins nowhere)."""

    index: np.ndarray
    probabilities: np.ndarray | None
    confidence: float | None = None


class DeviceSlidingWindow:
    """The device-resident sliding window for one spec and one set of fold engines.

    Graph sessions are built on first use and cached (thread-safe); one instance may serve
    several threads (every call has its own tensors).
    """

    def __init__(
        self,
        engines: Sequence[OnnxRuntimeEngine],
        spec: SegmentationSpec,
        *,
        input_name: str,
        output_name: str,
        step_size: float,
        mirror_axes: Sequence[int],
        accumulate: Accumulation,
        batch_size: int | None = None,
        memory_budget: int | None = None,
        fixed_shape: FixedShape | None = None,
    ) -> None:
        if spec.dims != 3:
            raise ValueError("the device-resident path runs 3-D configurations only")
        self.engines = list(engines)
        self.spec = spec
        self.input_name = input_name
        self.output_name = output_name
        self.step_size = step_size
        self.combos = mirror_combinations(list(mirror_axes))
        self.dtype: str = accumulate
        self.patch = tuple(int(p) for p in spec.patch_size)
        self.channels = int(spec.num_output_channels)
        n_mirrors = len(self.combos) + 1
        if batch_size is None:
            free = free_device_memory(self.engines[0])
            budget = memory_budget or (free // 2 if free else DEFAULT_CPU_BUDGET)
            batch_size = tiles_per_call(self.patch, n_mirrors, budget)
            if any(TENSORRT in e.providers for e in self.engines):
                # stay inside the TensorRT shape profile (samples = tiles x flips)
                batch_size = max(1, min(batch_size, self.engines[0].max_batch // n_mirrors))
        self.batch_size = int(batch_size)
        self.networks: list[FixedShapeEngine] | None = None
        """Fixed-shape network engines (one per fold) when ``fixed_shape`` was given."""
        if fixed_shape is not None:
            self.networks = fixed_shape_networks(
                self.engines, input_name, self.batch_size * n_mirrors, fixed_shape
            )
        self._lock = threading.Lock()
        self._graphs: dict[tuple[object, ...], OnnxRuntimeEngine] = {}
        self._gauss: Any = None

    # --- graph cache ----------------------------------------------------------------------
    def _graph(self, key: tuple[object, ...], build: Callable[[], bytes]) -> OnnxRuntimeEngine:
        """The session of helper graph ``key``, built by ``build`` on first use."""
        with self._lock:
            got = self._graphs.get(key)
            if got is None:
                got = self.engines[0].companion(build(), f"hccatom_{key[0]}.onnx")
                self._graphs[key] = got
            return got

    def _gaussian(self, meter: TransferMeter | None) -> Any:
        with self._lock:
            if self._gauss is None:
                g = gaussian_importance(
                    self.patch, self.spec.gaussian_sigma_scale, self.spec.gaussian_value_scale
                )
                self._gauss = self.engines[0].upload(g, meter=meter, constant=True)
            return self._gauss

    def _zeros(self, shape: Sequence[int], meter: TransferMeter | None) -> Any:
        z = self._graph(("zeros", len(shape)),
                        lambda: graphs.zeros_graph(self.dtype, len(shape)))
        return z.run_device({"shape": np.asarray(shape, dtype=np.int64)}, meter=meter)["zeros"]

    # --- the sliding window ---------------------------------------------------------------
    def run(
        self,
        pre: Preprocessed,
        *,
        probabilities: bool = False,
        confidence_channel: int | None = None,
        progress: Progress | None = None,
        timings: dict[str, float] | None = None,
        meter: TransferMeter | None = None,
    ) -> DeviceResult:
        """Segment one preprocessed volume; see the module docstring for what runs where.

        ``confidence_channel``: also the mean winning softmax probability where that
        channel wins, on the network grid (two scalars come down).
        """
        t0 = time.perf_counter()
        data = pre.data  # (1, z, y, x) float32
        shape = tuple(int(s) for s in data.shape[1:])
        padded_shape = tuple(max(s, p) for s, p in zip(shape, self.patch, strict=True))
        below = [(n - s) // 2 for n, s in zip(padded_shape, shape, strict=True)]
        above = [n - s - b for n, s, b in zip(padded_shape, shape, below, strict=True)]
        engine0 = self.engines[0]
        volume = engine0.upload(data, meter=meter)
        pads = np.asarray([0, *below, 0, *above], dtype=np.int64)
        padded = self._graph(("pad",), graphs.pad_graph).run_device(
            {"volume": volume, "pads": pads}, meter=meter
        )["padded"]
        del volume
        starts = np.asarray(tile_starts(padded_shape, self.patch, self.step_size), np.int64)
        gauss = self._gaussian(meter)

        weights = self._zeros([*padded_shape, 1], meter)
        add_weight = self._graph(
            ("weights",), lambda: graphs.weights_graph(self.patch, self.dtype)
        )
        for s in starts:
            add_weight.run_device(
                {"acc": weights, "start": s, "gauss": gauss},
                outputs={"acc_out": weights}, meter=meter,
            )
        accumulate = self._graph(
            ("accumulate",),
            lambda: graphs.accumulate_graph(self.patch, self.channels, self.combos, self.dtype),
        )
        n_tiles = len(starts)
        total = n_tiles * len(self.engines)
        done = 0
        net_time = 0.0
        fold_sum: Any = None
        for f, engine in enumerate(self.engines):
            acc = self._zeros([*padded_shape, self.channels], meter)
            network = None if self.networks is None else self.networks[f]
            with network.lock if network is not None else contextlib.nullcontext():
                for b0 in range(0, n_tiles, self.batch_size):
                    chunk = starts[b0 : b0 + self.batch_size]
                    t_net, pred = self._network(engine, network, padded, chunk, meter)
                    net_time += t_net
                    for i, s in enumerate(chunk):  # fixed-shape padding rows never come here
                        accumulate.run_device(
                            {"acc": acc, "pred": pred, "tile": np.asarray([i], np.int64),
                             "start": s, "gauss": gauss},
                            outputs={"acc_out": acc}, meter=meter,
                        )
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            feeds = {"acc": acc, "weights": weights}
            if fold_sum is not None:
                feeds["fold_sum"] = fold_sum
            fold_sum = self._graph(
                ("fold", f == 0),
                partial(graphs.fold_graph, self.channels, self.dtype, f == 0),
            ).run_device(feeds, meter=meter)[
                "fold_sum_out"
            ]
            del acc
        del weights, padded
        lo = np.asarray(below, dtype=np.int64)
        hi = lo + np.asarray(shape, dtype=np.int64)
        out = self._graph(
            ("finish",),
            lambda: graphs.finish_graph(self.channels, self.dtype, len(self.engines)),
        ).run_device(
            {"fold_sum": fold_sum, "lo": lo, "hi": hi}, meter=meter
        )
        del fold_sum
        t1 = time.perf_counter()
        if timings is not None:
            timings["network"] = timings.get("network", 0.0) + net_time
            timings["tiling"] = timings.get("tiling", 0.0) + (t1 - t0 - net_time)
        return self._to_labels(pre, out["logits"], out["bad"], probabilities,
                               confidence_channel, timings, meter)

    def _network(
        self, engine: OnnxRuntimeEngine, network: FixedShapeEngine | None, padded: Any,
        chunk: np.ndarray, meter: TransferMeter | None,
    ) -> tuple[float, Any]:
        """Cut the tiles of ``chunk`` (with their flips) and run the network on them.

        Returns (network seconds, logits ``OrtValue`` of shape (samples, C, *patch)). With a
        fixed-shape ``network`` the tiles graph writes straight into its input buffer, the
        batch padded to the fixed size; the caller holds ``network.lock``.
        """
        n = len(chunk) if network is None else self.batch_size
        feeds = {"padded": padded,
                 "starts": chunk if network is None else padded_starts(chunk, n)}
        tiles = self._graph(("tiles", n), partial(graphs.tiles_graph, self.patch, self.combos, n))
        if network is None:
            batch = tiles.run_device(feeds, meter=meter)["batch"]
            t0 = time.perf_counter()
            pred = engine.run_device({self.input_name: batch}, meter=meter)[self.output_name]
            return time.perf_counter() - t0, pred
        tiles.run_device(feeds, outputs={"batch": network.input_buffer(self.input_name)},
                         meter=meter)
        t0 = time.perf_counter()
        pred = network.replay()[self.output_name]
        return time.perf_counter() - t0, pred

    def _confidence(self, logits: Any, channel: int, meter: TransferMeter | None
                    ) -> float | None:
        out = self._graph(
            ("confidence", channel),
            lambda: graphs.confidence_graph(self.channels, self.dtype, channel),
        ).run_device({"logits": logits}, meter=meter)
        engine0 = self.engines[0]
        count = float(engine0.download(out["winner_count"], meter=meter))
        if count <= 0:
            return None
        return float(engine0.download(out["winner_sum"], meter=meter)) / count

    def _to_labels(
        self, pre: Preprocessed, logits: Any, bad: Any, probabilities: bool,
        confidence_channel: int | None,
        timings: dict[str, float] | None, meter: TransferMeter | None,
    ) -> DeviceResult:
        t0 = time.perf_counter()
        res = self.spec.resampling_probabilities
        target = tuple(int(s) for s in pre.shape_after_cropping)
        net_shape = tuple(int(s) for s in pre.data.shape[1:])
        axis = separate_z_axis(
            pre.target_spacing, pre.spacing_transposed, res.force_separate_z,
            res.anisotropy_threshold,
        )
        engine0 = self.engines[0]
        on_device = net_shape == target or (res.order == 1 and axis is None)
        if not on_device:
            host_logits = engine0.download(logits, meter=meter)
            check_finite(host_logits)
            conf = (None if confidence_channel is None
                    else mean_max_probability(host_logits, confidence_channel))
            if probabilities:
                host_probs = logits_to_cropped_probabilities(
                    host_logits, pre, self.spec, timings
                )
                return DeviceResult(channel_argmax(host_probs), host_probs, conf)
            return DeviceResult(
                labels_on_cropped_grid(host_logits, pre, self.spec, timings), None, conf
            )
        resize = net_shape != target
        feeds: dict[str, Any] = {"logits": logits, "bad": bad}
        if resize:
            feeds["sizes"] = np.asarray([1, self.channels, *target], dtype=np.int64)
        out = self._graph(
            ("labels", resize, probabilities),
            lambda: graphs.labels_graph(self.channels, self.dtype, resize, probabilities),
        ).run_device(feeds, meter=meter)
        index = engine0.download(out["labels"], meter=meter)
        if index.size and index.flat[0] == 255:
            raise NonFiniteLogitsError(
                "the segmentation logits contain inf or NaN after accumulation (as nnU-Net "
                "checks); the model or its Gaussian value scale overflows; try "
                "accumulate='float32' or re-export the model"
            )
        probs = engine0.download(out["probabilities"], meter=meter) if probabilities else None
        conf = (None if confidence_channel is None
                else self._confidence(logits, confidence_channel, meter))
        if timings is not None:
            timings["resample_out"] = timings.get("resample_out", 0.0) + (
                time.perf_counter() - t0
            )
        return DeviceResult(index, probs, conf)
