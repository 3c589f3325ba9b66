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

from hccatom.engines.base import TensorSpec, check_feeds
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
from hccatom.errors import EngineError, EngineUnavailableError

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
    """An ONNX model loaded in ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
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
        path: str | Path,
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
        cuda_options: CudaOptions | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise EngineError(f"model file not found: {self.path}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
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
            self._session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:
            if device != "auto" or plan == [CPU]:
                kind = EngineError if plan == [CPU] else EngineUnavailableError
                raise kind(
                    f"onnxruntime could not load {self.path.name} with {', '.join(plan)}: "
                    f"{exc}"
                ) from exc
            log.warning(
                "onnxruntime could not create a session with %s (%s); falling back to the CPU",
                ", ".join(plan), exc,
            )
            try:
                self._session = ort.InferenceSession(str(self.path), options, providers=[CPU])
            except Exception as exc2:
                raise EngineError(
                    f"onnxruntime could not load {self.path.name}: {exc2}"
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

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``feeds`` and run the model; return output name -> numpy array.

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
        return {name: np.asarray(v) for name, v in zip(self._output_names, outs, strict=True)}

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

    def __repr__(self) -> str:
        return (
            f"OnnxRuntimeEngine({self.path.name!r}, device={self.device!r}, "
            f"providers={self._providers})"
        )
