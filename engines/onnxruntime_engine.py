"""Run an ONNX model with ONNX Runtime on the CPU, the CUDA EP or the TensorRT EP.

The engine chooses providers (:func:`provider_plan`), records which ones actually run the
graph, warns when it falls back from what was asked, validates feeds before they reach
ONNX Runtime, and uses IO binding on the GPU for large inputs. ``run`` holds no mutable
state of its own, and ``InferenceSession.run`` is thread-safe, so one engine may be shared
by several threads.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hccatom.engines.base import TensorSpec, TransferMeter, TransferStats, check_feeds
from hccatom.engines.providers import (
    CPU,
    CUDA,
    TENSORRT,
    CudaOptions,
    cuda_provider_options,
    default_cache_root,
    file_sha256,
    gpu_name,
    ort_available_providers,
    preload_cuda_libraries,
    provider_plan,
    tensorrt_cache_dir,
    tensorrt_provider_options,
    tensorrt_version,
)
from hccatom.errors import EngineError, EngineUnavailableError, InputError, ModelLoadError

log = logging.getLogger(__name__)

_ORT_DTYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}

IoBinding = Literal["auto", "always", "never"]
DeviceFeed = Any
"""An ``onnxruntime.OrtValue`` on the engine's device, or a numpy array (a small host input)."""


#: onnxruntime exception class names that mean the file itself is bad, whatever the device.
_BAD_MODEL_ERRORS = frozenset({"InvalidProtobuf", "InvalidGraph", "NoSuchFile"})

def _spec(node: Any, kind: str) -> TensorSpec:
    dtype = _ORT_DTYPES.get(node.type)
    if dtype is None:
        raise EngineError(
            f"{kind} {node.name!r} has type {node.type}, which hccatom engines do not "
            f"support (supported: {', '.join(sorted(_ORT_DTYPES))})"
        )
    shape = tuple(
        d if isinstance(d, int) else (d if isinstance(d, str) and d else f"{node.name}_dim{i}")
        for i, d in enumerate(node.shape)
    )
    return TensorSpec(node.name, dtype, shape)


class OnnxRuntimeEngine:
    r"""An ONNX model loaded in ONNX Runtime.

    Transfers: every call counts the bytes it moves host -> device and device -> host
    (:meth:`transfer_stats`; on the CPU provider, what would cross the bus on a GPU).
    :meth:`upload`, :meth:`run_device` and :meth:`download` keep tensors on the device as
    ``OrtValue`` objects between calls (IO binding), so chained graphs copy nothing.

    Args:
        path: the ``.onnx`` file, or the serialized model itself (``bytes``; then ``name``
            names it in messages; not for the TensorRT EP).
        device: ``"auto"`` (TensorRT EP > CUDA EP > CPU, where present), ``"cpu"``,
            ``"cuda"`` or ``"tensorrt"``; an explicit GPU device that cannot run raises
            :class:`EngineUnavailableError`.
        threads: intra-op threads for the CPU provider (``None``: ONNX Runtime's default).
        fp16: let TensorRT build FP16 kernels (TensorRT EP only; ignored with a warning
            elsewhere).
        cache_dir: root of the TensorRT engine/timing caches (default
            :func:`default_cache_root`); the engine adds a key folder per model, GPU,
            library versions and precision.
        device_id: GPU ordinal for the CUDA/TensorRT providers.
        max_batch, opt_batch: TensorRT shape profile for symbolic dimensions (min 1).
        cuda_options: CUDA EP options (cuDNN algorithm search, arena, TF32; see
            :class:`~hccatom.engines.providers.CudaOptions`); default: ``CudaOptions()`` on
            ``device_id``. Before a CUDA/TensorRT session, ``onnxruntime.preload_dlls()`` runs
            once when torch is not loaded (``self.preload`` says what happened).
        io_binding: ``"auto"`` binds inputs/outputs through IO binding when a CUDA provider
            runs and the inputs total at least ``io_binding_min_bytes``; ``"always"`` and
            ``"never"`` force it (IO binding also works on the CPU provider).
    """

    def __init__(
        self,
        path: str | Path | bytes,
        device: str = "auto",
        threads: int | None = None,
        fp16: bool = False,
        cache_dir: Path | None = None,
        *,
        device_id: int = 0,
        max_batch: int = 8,
        opt_batch: int = 1,
        io_binding: IoBinding = "auto",
        io_binding_min_bytes: int = 1 << 20,
        name: str | None = None,
        meter: TransferMeter | None = None,
        cuda_options: CudaOptions | None = None,
    ) -> None:
        import onnxruntime as ort

        source: str | bytes
        if isinstance(path, bytes):
            if device == "tensorrt":
                raise EngineError("in-memory models run on the CPU or CUDA provider only")
            source = path
            self.path = Path(name or "model.onnx")
        else:
            self.path = Path(path)
            if not self.path.is_file():
                raise EngineError(f"model file not found: {self.path}")
            source = str(self.path)
        self._meter = meter if meter is not None else TransferMeter()
        self._threads = threads
        self.max_batch = int(max_batch)
        """Largest batch of the TensorRT shape profile (other providers: no limit)."""
        if threads is not None and threads < 1:
            raise InputError(f"threads (--threads) must be a whole number >= 1, or left out "
                             f"for ONNX Runtime's default; got {threads}.")
        if io_binding not in ("auto", "always", "never"):
            raise ValueError(f"io_binding must be 'auto', 'always' or 'never', got {io_binding!r}")
        if cuda_options is not None and cuda_options.enable_cuda_graph:
            raise ValueError("CUDA graphs need fixed shapes and fixed device buffers: use "
                             "hccatom.engines.fixed_shape_engine.FixedShapeEngine")
        self.device = device
        self.fp16 = fp16
        self._io_binding = io_binding
        self._io_min_bytes = int(io_binding_min_bytes)
        self._device_id = device_id
        self.tensorrt_cache_dir: Path | None = None

        available = ort_available_providers()
        plan = provider_plan(device, available)
        self.requested_providers: list[str] = list(plan)
        providers: list[str | tuple[str, dict[str, str]]] = []
        for name in plan:
            if name == TENSORRT:
                providers.append(
                    (name, self._tensorrt_options(cache_dir, device_id, opt_batch, max_batch))
                )
            elif name == CUDA:
                providers.append((name, cuda_provider_options(
                    cuda_options or CudaOptions(device_id=device_id))))
            else:
                providers.append(name)

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self._assignment_recorded = True
        try:
            options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        except Exception:  # older onnxruntime: no such key
            self._assignment_recorded = False

        self.preload = (preload_cuda_libraries() if CUDA in plan or TENSORRT in plan
                        else "not needed")
        try:
            self._session = ort.InferenceSession(source, options, providers=providers)
        except Exception as exc:
            if plan == [CPU] or type(exc).__name__ in _BAD_MODEL_ERRORS:
                raise ModelLoadError(
                    f"onnxruntime could not load {self.path.name}: {exc}. The model file is "
                    "corrupt or not a model this runtime reads: rebuild or re-export the bundle."
                ) from exc
            if device != "auto":
                raise EngineUnavailableError(
                    f"onnxruntime could not load {self.path.name} with {', '.join(plan)}: "
                    f"{exc}"
                ) from exc
            log.warning(
                "onnxruntime could not create a session with %s (%s); falling back to the CPU",
                ", ".join(plan), exc,
            )
            try:
                self._session = ort.InferenceSession(source, options, providers=[CPU])
            except Exception as exc2:
                raise ModelLoadError(
                    f"onnxruntime could not load {self.path.name}: {exc2}. The model file is "
                    "corrupt or not a model this runtime reads: rebuild or re-export the bundle."
                ) from exc2

        self._providers = list(self._session.get_providers())
        self._check_fallback(plan)
        if fp16 and TENSORRT not in self._providers:
            log.warning("fp16=True only applies to the TensorRT EP; running in float32")

        self._inputs = tuple(_spec(n, "input") for n in self._session.get_inputs())
        self._outputs = tuple(_spec(n, "output") for n in self._session.get_outputs())
        self._output_names = [o.name for o in self._outputs]
        self._gpu = any(p in (CUDA, TENSORRT) for p in self._providers)
        meta = self._session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map or {})

    # --- construction helpers -------------------------------------------------------------
    def _tensorrt_options(
        self, cache_dir: Path | None, device_id: int, opt_batch: int, max_batch: int
    ) -> dict[str, str]:
        import onnxruntime as ort

        # The profile needs the input shapes before the TensorRT session exists: read them
        # from a cheap, unoptimised CPU session.
        probe_opts = ort.SessionOptions()
        probe_opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        probe = ort.InferenceSession(str(self.path), probe_opts, providers=[CPU])
        inputs = [_spec(n, "input") for n in probe.get_inputs()]
        del probe
        folder = tensorrt_cache_dir(
            cache_dir if cache_dir is not None else default_cache_root(),
            model_sha256=file_sha256(self.path),
            device_name=gpu_name(device_id),
            ort_version=ort.__version__,
            trt_version=tensorrt_version(),
            precision="fp16" if self.fp16 else "fp32",
        )
        folder.mkdir(parents=True, exist_ok=True)
        self.tensorrt_cache_dir = folder
        return tensorrt_provider_options(
            cache_dir=folder, inputs=inputs, fp16=self.fp16, device_id=device_id,
            opt_batch=opt_batch, max_batch=max_batch,
        )

    def _check_fallback(self, plan: Sequence[str]) -> None:
        active = self._providers
        if self.device == "cuda" and CUDA not in active:
            raise EngineUnavailableError(
                "device='cuda' was asked for but onnxruntime could not start the CUDA "
                "provider (no GPU, driver or CUDA libraries?); running on the CPU was not "
                "asked for, so nothing runs. Use device='cpu' or 'auto' to allow the CPU."
            )
        if self.device == "tensorrt" and TENSORRT not in active:
            raise EngineUnavailableError(
                "device='tensorrt' was asked for but onnxruntime could not start the "
                f"TensorRT provider (running would use {', '.join(active)}); check the "
                "TensorRT libraries, or use device='cuda' or 'auto'"
            )
        if active and active[0] != plan[0]:
            log.warning(
                "asked for %s (device=%r) but onnxruntime runs %s", plan[0], self.device,
                ", ".join(active),
            )

    # --- Engine protocol ------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Model inputs in graph order."""
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Model outputs in graph order."""
        return self._outputs

    @property
    def providers(self) -> list[str]:
        """Providers onnxruntime actually runs this session with, most preferred first."""
        return list(self._providers)

    @property
    def provider_assignment(self) -> dict[str, int]:
        """How many graph nodes each provider runs (empty when onnxruntime cannot say)."""
        if not self._assignment_recorded:
            return {}
        getter = getattr(self._session, "get_provider_graph_assignment_info", None)
        if getter is None:
            return {}
        counts: Counter[str] = Counter()
        try:
            for sub in getter():
                counts[sub.ep_name] += len(sub.get_nodes())
        except Exception:
            return {}
        return dict(counts)

    def uses_io_binding(self, feeds: Mapping[str, np.ndarray]) -> bool:
        """Whether :meth:`run` would use IO binding for these (validated) feeds."""
        if self._io_binding == "always":
            return True
        if self._io_binding == "never" or not self._gpu:
            return False
        return sum(a.nbytes for a in feeds.values()) >= self._io_min_bytes

    def run(
        self, feeds: Mapping[str, np.ndarray], *, meter: TransferMeter | None = None
    ) -> dict[str, np.ndarray]:
        """Validate ``feeds`` and run the model; return output name -> numpy array.

        Counts the feeds as host -> device and the outputs as device -> host bytes (in
        this engine's :meth:`transfer_stats` and in ``meter`` when given).
        Raises :class:`EngineInputError` for a missing/unknown input, wrong dtype or shape,
        and :class:`EngineError` when onnxruntime fails while running.
        """
        arrays = check_feeds(self._inputs, feeds)
        try:
            if self.uses_io_binding(arrays):
                outs = self._run_bound(arrays)
            else:
                outs = self._session.run(self._output_names, arrays)
        except Exception as exc:
            raise EngineError(f"onnxruntime failed running {self.path.name}: {exc}") from exc
        result = {name: np.asarray(v) for name, v in zip(self._output_names, outs, strict=True)}
        self._count(
            meter,
            h2d=sum(a.nbytes for a in arrays.values()),
            d2h=sum(a.nbytes for a in result.values()),
            calls=1,
        )
        return result

    def _run_bound(self, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run through IO binding (one binding object per call: thread-safe)."""
        binding = self._session.io_binding()
        for name, arr in arrays.items():
            binding.bind_cpu_input(name, arr)
        out_device = "cuda" if self._gpu else "cpu"
        for name in self._output_names:
            if out_device == "cuda":
                binding.bind_output(name, out_device, self._device_id)
            else:
                binding.bind_output(name)
        self._session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    # --- transfers and device-resident tensors ---------------------------------------------
    def _count(
        self, meter: TransferMeter | None, h2d: int = 0, d2h: int = 0, *,
        constant: bool = False, calls: int = 0,
    ) -> None:
        self._meter.add(h2d, d2h, constant=constant, calls=calls)
        if meter is not None:
            meter.add(h2d, d2h, constant=constant, calls=calls)

    def transfer_stats(self) -> TransferStats:
        """Bytes moved host -> device and device -> host by this engine so far (all calls,
        all threads; companions made by :meth:`companion` share the count)."""
        return self._meter.snapshot()

    @property
    def ort_device(self) -> tuple[str, int]:
        """Where this engine's tensors live: ``("cuda", id)`` or ``("cpu", 0)``."""
        return ("cuda", self._device_id) if self._gpu else ("cpu", 0)

    def upload(
        self, array: np.ndarray, *, meter: TransferMeter | None = None, constant: bool = False
    ) -> Any:
        """Copy ``array`` into a new ``OrtValue`` on the engine's device (counted)."""
        import onnxruntime as ort

        arr = np.ascontiguousarray(array)
        kind, dev = self.ort_device
        value = ort.OrtValue.ortvalue_from_shape_and_type(arr.shape, arr.dtype, kind, dev)
        value.update_inplace(arr)
        self._count(meter, h2d=arr.nbytes, constant=constant)
        return value

    def download(self, value: Any, *, meter: TransferMeter | None = None) -> np.ndarray:
        """Copy an ``OrtValue`` back into a numpy array (counted)."""
        arr = np.asarray(value.numpy())
        self._count(meter, d2h=arr.nbytes)
        return arr

    def run_device(
        self,
        feeds: Mapping[str, DeviceFeed],
        *,
        outputs: Mapping[str, Any] | None = None,
        meter: TransferMeter | None = None,
    ) -> dict[str, Any]:
        """Run with IO binding and return the outputs as ``OrtValue`` objects on the device.

        ``feeds`` maps input names to ``OrtValue`` objects (bound as they are, nothing copied)
        or numpy arrays (small control inputs such as tile starts: counted as constant
        host -> device bytes). ``outputs`` binds given ``OrtValue`` objects as outputs (an
        output may be the same ``OrtValue`` as an input: kernels that support it, such as
        ScatterND, then update it in place); the others are allocated on the device.
        """
        binding = self._session.io_binding()
        h2d = 0
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                arr = np.ascontiguousarray(value)
                binding.bind_cpu_input(name, arr)
                h2d += arr.nbytes
            else:
                binding.bind_ortvalue_input(name, value)
        given = dict(outputs or {})
        kind, dev = self.ort_device
        for name in self._output_names:
            if name in given:
                binding.bind_ortvalue_output(name, given[name])
            else:
                binding.bind_output(name, kind, dev)
        try:
            self._session.run_with_iobinding(binding)
        except Exception as exc:
            raise EngineError(f"onnxruntime failed running {self.path.name}: {exc}") from exc
        self._count(meter, h2d=h2d, constant=True, calls=1)
        return dict(zip(self._output_names, binding.get_outputs(), strict=True))

    def companion(self, model: bytes, name: str) -> OnnxRuntimeEngine:
        """A helper graph on this engine's device (CUDA EP for CUDA/TensorRT engines), whose
        transfers count into this engine's :meth:`transfer_stats`."""
        return OnnxRuntimeEngine(
            model, device="cuda" if self._gpu else "cpu", threads=self._threads,
            device_id=self._device_id, name=name, meter=self._meter,
        )

    def __repr__(self) -> str:
        return (
            f"OnnxRuntimeEngine({self.path.name!r}, device={self.device!r}, "
            f"providers={self._providers})"
        )
