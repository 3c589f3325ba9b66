"""Execution-provider choice, CUDA and TensorRT EP options, as pure functions.

Everything here is a plain function of its arguments (the provider list, versions, device
name, shapes), so the choices are unit-tested on machines without a GPU or TensorRT. The
engine calls these with what it finds at load time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hccatom.engines.base import TensorSpec
from hccatom.errors import EngineUnavailableError

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda", "tensorrt"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "tensorrt")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

_DEVICE_OF = {CPU: "cpu", CUDA: "cuda", TENSORRT: "tensorrt"}


def ort_available_providers() -> list[str]:
    """Providers compiled into the installed onnxruntime (not proof that a GPU exists)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def available_devices(providers: Sequence[str] | None = None) -> list[str]:
    """Devices this onnxruntime build can target, best first, e.g. ``["cuda", "cpu"]``.

    A listed GPU device means the provider is compiled in; whether a GPU is present shows
    only when a session is created (the engine then reports what actually runs).
    """
    have = set(ort_available_providers() if providers is None else providers)
    return [_DEVICE_OF[p] for p in (TENSORRT, CUDA, CPU) if p in have or p == CPU]


def provider_plan(device: str, available: Sequence[str]) -> list[str]:
    """Providers to request for ``device``, most preferred first.

    ``auto``: TensorRT EP, then CUDA EP, then CPU, each where present. ``cuda`` and
    ``tensorrt`` need their provider: without it this raises
    :class:`EngineUnavailableError` rather than silently running on the CPU. The CPU
    provider always comes last, because ONNX Runtime places nodes a GPU provider cannot run
    on it.
    """
    if device not in DEVICES:
        raise EngineUnavailableError(
            f"unknown device {device!r}; choose one of {', '.join(DEVICES)}"
        )
    have = set(available)
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in have:
            raise EngineUnavailableError(
                "device='cuda' was asked for but this onnxruntime has no CUDA execution "
                f"provider (available: {', '.join(available) or 'none'}); install "
                "onnxruntime-gpu (pip install 'hccatom[gpu]') or use device='cpu'"
            )
        return [CUDA, CPU]
    if device == "tensorrt":
        if TENSORRT not in have:
            raise EngineUnavailableError(
                "device='tensorrt' was asked for but this onnxruntime has no TensorRT "
                f"execution provider (available: {', '.join(available) or 'none'}); install "
                "onnxruntime-gpu with TensorRT libraries, or use device='cuda' or 'cpu'"
            )
        return [TENSORRT, *([CUDA] if CUDA in have else []), CPU]
    return [p for p in (TENSORRT, CUDA) if p in have] + [CPU]


# --- TensorRT EP --------------------------------------------------------------------------
def default_cache_root() -> Path:
    """Where engine caches live: ``$HCCATOM_CACHE_DIR``, else ``$XDG_CACHE_HOME/hccatom``,
    else ``~/.cache/hccatom``. Caches never live inside a bundle."""
    env = os.environ.get("HCCATOM_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hccatom"


def _slug(text: str) -> str:
    """A path-safe form of a free-text name (GPU model, version string)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-")
    return slug or "unknown"


def tensorrt_cache_dir(
    cache_root: Path,
    *,
    model_sha256: str,
    device_name: str,
    ort_version: str,
    trt_version: str,
    precision: str,
) -> Path:
    """The cache folder for one (model, GPU, onnxruntime, TensorRT, precision) combination.

    TensorRT engines are not portable: a change of any of these must give a new folder, so
    each is part of the path (the model by the first 16 hex digits of its sha256).
    """
    if not re.fullmatch(r"[0-9a-f]{64}", model_sha256):
        raise ValueError(f"model_sha256 must be 64 lowercase hex digits, got {model_sha256!r}")
    return (
        cache_root
        / "tensorrt"
        / model_sha256[:16]
        / _slug(device_name)
        / f"ort-{_slug(ort_version)}_trt-{_slug(trt_version)}"
        / _slug(precision)
    )


def _dims(shape: Sequence[int | str], value_of: Mapping[str, int]) -> str:
    return "x".join(str(d if isinstance(d, int) else value_of[d]) for d in shape)


def tensorrt_profile_shapes(
    inputs: Sequence[TensorSpec],
    *,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 8,
    dims: Mapping[str, tuple[int, int, int]] | None = None,
) -> dict[str, str]:
    """The ``trt_profile_{min,opt,max}_shapes`` strings for ``inputs``.

    Fixed dimensions are kept; each symbolic dimension takes ``dims[name]`` =
    (min, opt, max) when given, else the batch triple. Format: ``"a:1x4,b:1x3"``.
    """
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                         f"{min_batch}, {opt_batch}, {max_batch}")
    extra = dict(dims or {})
    out: dict[str, str] = {}
    for k, key in enumerate(("min", "opt", "max")):
        values: dict[str, int] = {}
        for spec in inputs:
            for d in spec.shape:
                if isinstance(d, str):
                    values[d] = extra.get(d, (min_batch, opt_batch, max_batch))[k]
        out[key] = ",".join(f"{s.name}:{_dims(s.shape, values)}" for s in inputs)
    return {
        "trt_profile_min_shapes": out["min"],
        "trt_profile_opt_shapes": out["opt"],
        "trt_profile_max_shapes": out["max"],
    }


def tensorrt_provider_options(
    *,
    cache_dir: Path,
    inputs: Sequence[TensorSpec],
    fp16: bool = False,
    device_id: int = 0,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 8,
    workspace_bytes: int | None = None,
    builder_optimization_level: int | None = None,
) -> dict[str, str]:
    """Options for ONNX Runtime's TensorRT EP: precision, engine + timing cache, profile.

    ``cache_dir`` should come from :func:`tensorrt_cache_dir` so that a cached engine is
    reused only for the same model, GPU, library versions and precision. The shape profile
    is always set (ONNX Runtime needs it again whenever a cache is reused). Values are
    strings, as the EP takes them.
    """
    opts: dict[str, str] = {
        "device_id": str(device_id),
        "trt_fp16_enable": "True" if fp16 else "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
    }
    if workspace_bytes is not None:
        opts["trt_max_workspace_size"] = str(int(workspace_bytes))
    if builder_optimization_level is not None:
        opts["trt_builder_optimization_level"] = str(int(builder_optimization_level))
    opts.update(
        tensorrt_profile_shapes(
            inputs, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch
        )
    )
    return opts


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def tensorrt_version() -> str:
    """Version of the installed TensorRT Python wheel, or ``"unknown"``."""
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu11",
                 "tensorrt-libs", "tensorrt-cu12-libs"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def gpu_name(device_id: int = 0) -> str:
    """The GPU's product name from ``nvidia-smi`` (no CUDA Python bindings needed)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "unknown-gpu"
    try:
        out = subprocess.run(
            [exe, f"--id={device_id}", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown-gpu"
    name = out.stdout.strip().splitlines()
    return name[0] if name else "unknown-gpu"


# --- CUDA EP ------------------------------------------------------------------------------
CudnnSearch = Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"]
ArenaStrategy = Literal["kNextPowerOfTwo", "kSameAsRequested"]


@dataclass(frozen=True)
class CudaOptions:
    """Typed options of ONNX Runtime's CUDA execution provider (see :func:`cuda_provider_options`).

    * ``cudnn_conv_algo_search``: how cuDNN picks convolution algorithms. ``EXHAUSTIVE``
      (ONNX Runtime's default) times every algorithm once per shape: best kernels, slow first
      call per shape; ``HEURISTIC`` asks cuDNN's heuristics (fast start); ``DEFAULT`` takes
      the default algorithm.
    * ``cudnn_conv_use_max_workspace``: let cuDNN use as much workspace as it wants (faster
      3-D convolutions, more memory).
    * ``arena_extend_strategy`` / ``gpu_mem_limit_bytes``: how the device memory arena grows
      (``kSameAsRequested`` wastes less memory than powers of two) and its cap (None: no cap).
    * ``enable_cuda_graph``: capture the whole graph once and replay it; needs every input
      shape fixed and inputs/outputs bound to fixed device buffers (:func:`check_cuda_graph`).
    * ``use_tf32``: TF32 tensor cores for fp32 convolutions and matrix products.
    """

    device_id: int = 0
    cudnn_conv_algo_search: CudnnSearch = "EXHAUSTIVE"
    cudnn_conv_use_max_workspace: bool = True
    arena_extend_strategy: ArenaStrategy = "kNextPowerOfTwo"
    gpu_mem_limit_bytes: int | None = None
    enable_cuda_graph: bool = False
    use_tf32: bool = True
    do_copy_in_default_stream: bool = True

    def __post_init__(self) -> None:
        if self.device_id < 0:
            raise ValueError(f"device_id must be >= 0, got {self.device_id}")
        if self.cudnn_conv_algo_search not in ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"):
            raise ValueError(
                "cudnn_conv_algo_search must be EXHAUSTIVE, HEURISTIC or DEFAULT, got "
                f"{self.cudnn_conv_algo_search!r}"
            )
        if self.arena_extend_strategy not in ("kNextPowerOfTwo", "kSameAsRequested"):
            raise ValueError(
                "arena_extend_strategy must be kNextPowerOfTwo or kSameAsRequested, got "
                f"{self.arena_extend_strategy!r}"
            )
        if self.gpu_mem_limit_bytes is not None and self.gpu_mem_limit_bytes < 1 << 20:
            raise ValueError(
                f"gpu_mem_limit_bytes must be >= 1 MiB, got {self.gpu_mem_limit_bytes}"
            )


def cuda_provider_options(options: CudaOptions | None = None) -> dict[str, str]:
    """The option dict ONNX Runtime's CUDA EP takes (values as strings)."""
    o = options or CudaOptions()
    opts = {
        "device_id": str(o.device_id),
        "cudnn_conv_algo_search": o.cudnn_conv_algo_search,
        "cudnn_conv_use_max_workspace": "1" if o.cudnn_conv_use_max_workspace else "0",
        "arena_extend_strategy": o.arena_extend_strategy,
        "do_copy_in_default_stream": "1" if o.do_copy_in_default_stream else "0",
        "use_tf32": "1" if o.use_tf32 else "0",
        "enable_cuda_graph": "1" if o.enable_cuda_graph else "0",
    }
    if o.gpu_mem_limit_bytes is not None:
        opts["gpu_mem_limit"] = str(int(o.gpu_mem_limit_bytes))
    return opts


def check_cuda_graph(inputs: Sequence[TensorSpec], fixed: Mapping[str, int] | None = None
                     ) -> dict[str, tuple[int, ...]]:
    """The fixed input shapes a CUDA graph is captured for, or :class:`EngineUnavailableError`.

    A captured graph replays one set of shapes: every symbolic dimension (e.g. the tile
    batch) must be fixed by ``fixed`` (dimension name -> size).
    """
    fixed = dict(fixed or {})
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in inputs:
        dims = []
        for d in spec.shape:
            if isinstance(d, int):
                dims.append(d)
            elif d in fixed:
                dims.append(int(fixed[d]))
            else:
                raise EngineUnavailableError(
                    f"CUDA graphs need fixed shapes, but input {spec.name!r} "
                    f"({spec.describe()}) has the free dimension {d!r}; fix it (e.g. the tile "
                    "batch size) or turn enable_cuda_graph off"
                )
        shapes[spec.name] = tuple(dims)
    return shapes


_PRELOADED: list[bool] = []  # set once per process


def preload_cuda_libraries(*, force: bool = False) -> str:
    """Let a torch-free process find cuDNN/cuBLAS from the nvidia-* wheels before the CUDA EP.

    Calls ``onnxruntime.preload_dlls()`` (onnxruntime-gpu >= 1.21) once per process, unless
    torch is already imported (torch loaded its own CUDA libraries, which ONNX Runtime then
    uses; preloading a second copy can clash). Returns what happened: ``"preloaded"``,
    ``"skipped: torch is loaded"``, ``"skipped: already done"``, ``"unavailable: ..."`` or
    ``"failed: ..."`` (logged as a warning; session creation then reports the real problem).
    """
    import sys

    if "torch" in sys.modules and not force:
        return "skipped: torch is loaded"
    if _PRELOADED and not force:
        return "skipped: already done"
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return f"unavailable: onnxruntime {ort.__version__} has no preload_dlls (needs >= 1.21)"
    try:
        preload()
    except Exception as exc:  # missing nvidia wheels etc.: the session will say what is wrong
        log.warning("onnxruntime.preload_dlls() failed (%s); CUDA libraries must then be on "
                    "the loader path", exc)
        return f"failed: {exc}"
    _PRELOADED.append(True)
    return "preloaded"
