"""What ``hccatom bench`` measures besides wall time: machine facts, memory peaks, FLOPs.

* :func:`machine_facts`: CPU model and cores, GPU name/driver/memory (``nvidia-smi``), ONNX
  Runtime version and providers, Python and OS;
* :class:`PeakSampler`: peak host RSS (``/proc/self/status``) and, where ``nvidia-smi``
  exists, peak device memory used, sampled on a thread while a block runs;
* :func:`peak_tflops`: the device's peak arithmetic rate, with where it came from
  (``measured`` on the CPU by a NumPy float32 GEMM, ``table`` for known GPUs, ``given``
  by the caller);
* :func:`network_flops`: FLOPs of one network evaluation, counted from the shapes ONNX
  Runtime's profiler records for every Conv / ConvTranspose / MatMul / Gemm node;
* :func:`segmentation_evaluations`: how many network evaluations the sliding window runs
  for a volume (tiles x mirror variants x folds).

Runtime layer: numpy and onnxruntime only (no torch).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

#: Dense fp16/bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, without
#: sparsity. Used when the GPU's peak is not given; ``peak_tflops`` says ``table``. The lent
#: H200 measured ~790 TFLOP/s bf16 in practice (device README), below its sheet value.
GPU_PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 6000 Ada": 364.0,
    "RTX 4090": 165.0,
    "RTX A6000": 155.0,
    "V100": 125.0,
    "T4": 65.0,
}


# --- machine facts -----------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_facts() -> list[dict[str, str]]:
    """One dict per GPU ``nvidia-smi`` lists (name, driver, memory); empty without it."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,driver_version,memory.total",
             "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            gpus.append(dict(zip(("index", "name", "driver", "memory_total"), parts,
                                 strict=True)))
    return gpus


def machine_facts() -> dict[str, Any]:
    """CPU, GPUs, library versions: what a benchmark figure needs to be read correctly."""
    import onnxruntime as ort

    facts: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "host_memory_gib": _host_memory_gib(),
        "gpus": gpu_facts(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": list(ort.get_available_providers()),
        "python": platform.python_version(),
        "os": platform.platform(),
        "numpy": np.__version__,
    }
    with contextlib.suppress(OSError):
        facts["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return facts


def _host_memory_gib() -> float | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages / 2**30, 1)


# --- memory peaks ------------------------------------------------------------------------
def _rss_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _gpu_used_mib() -> float | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class PeakSampler:
    """Peak host RSS and device memory while a ``with`` block runs, sampled on a thread.

    Host RSS comes from ``/proc/self/status`` (Linux; elsewhere the process's lifetime peak
    from ``getrusage``). Device memory is what ``nvidia-smi`` reports used on GPU 0 minus
    what was used before the block (``None`` when ``gpu`` is False or there is no
    ``nvidia-smi``): it includes ONNX Runtime's arena, which keeps what it once took.
    """

    def __init__(self, *, gpu: bool, interval_s: float = 0.02) -> None:
        self.gpu = gpu and shutil.which("nvidia-smi") is not None
        self.interval_s = interval_s
        self.peak_rss_bytes = 0
        self.peak_gpu_mib: float | None = None
        self.gpu_baseline_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="hccatom-bench")

    def _sample(self, with_gpu: bool) -> None:
        rss = _rss_bytes()
        if rss is not None:
            self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        if with_gpu:
            used = _gpu_used_mib()
            if used is not None:
                self.peak_gpu_mib = max(self.peak_gpu_mib or 0.0, used)

    def _loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            # nvidia-smi is slow (tens of ms): ask it every 5th sample
            self._sample(self.gpu and tick % 5 == 0)
            tick += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakSampler:
        if self.gpu:
            self.gpu_baseline_mib = _gpu_used_mib()
        self._sample(False)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(self.gpu)
        if _rss_bytes() is None:  # no /proc: the lifetime peak (KiB on Linux, B on macOS)
            ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak_rss_bytes = ru if platform.system() == "Darwin" else ru * 1024

    @property
    def device_peak_mib(self) -> float | None:
        """Peak device memory used above the baseline, MiB (None: not measurable)."""
        if self.peak_gpu_mib is None:
            return None
        return max(0.0, self.peak_gpu_mib - (self.gpu_baseline_mib or 0.0))


# --- arithmetic peak ---------------------------------------------------------------------
@dataclass(frozen=True)
class Peak:
    """A device's peak arithmetic rate and where the number came from."""

    tflops: float | None
    source: str  # "measured", "table", "given" or "unknown"
    detail: str


def measure_cpu_peak_tflops(seconds: float = 0.5, n: int = 1024) -> float:
    """Float32 GEMM rate of this CPU through NumPy's BLAS (best of the runs in ``seconds``)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm the BLAS threads
    best = 0.0
    t_end = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        a @ b
        dt = time.perf_counter() - t0
        best = max(best, 2.0 * n**3 / dt / 1e12)
        if time.perf_counter() > t_end:
            return best


def peak_tflops(device_kind: str, given: float | None = None) -> Peak:
    """The peak to hold the FLOP floor against.

    ``given`` (e.g. measured with a GEMM in the same run) wins. On the CPU the peak is
    measured here (NumPy float32 GEMM). On a GPU the vendor's dense fp16 tensor peak of the
    first GPU ``nvidia-smi`` names, from :data:`GPU_PEAK_TFLOPS`.
    """
    if given is not None:
        return Peak(float(given), "given", "--peak-tflops")
    if device_kind == "cpu":
        return Peak(measure_cpu_peak_tflops(), "measured",
                    "NumPy float32 1024^3 GEMM, best of 0.5 s")
    gpus = gpu_facts()
    if not gpus:
        return Peak(None, "unknown", "no nvidia-smi: give --peak-tflops")
    name = gpus[0]["name"]
    for key in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return Peak(GPU_PEAK_TFLOPS[key], "table",
                        f"vendor data sheet, dense fp16 tensor, {key} ({name})")
    return Peak(None, "unknown", f"{name} is not in the table: give --peak-tflops")


# --- FLOP counting -----------------------------------------------------------------------
_COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedGemm",
            "FusedMatMul")


def _shape_list(entries: Sequence[dict[str, list[int]]]) -> list[list[int]]:
    return [next(iter(e.values())) for e in entries]


def node_flops(op: str, inputs: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]]
               ) -> float:
    """FLOPs (2 per multiply-add) of one node from its input/output shapes; 0 if not counted.

    Conv: weight ``(C_out, C_in/g, k...)`` -> 2 * |output| * C_in/g * prod(k).
    ConvTranspose: weight ``(C_in, C_out/g, k...)`` -> 2 * |input| * C_out/g * prod(k).
    MatMul/Gemm: 2 * |output| * K.
    """
    if op in ("Conv", "FusedConv") and len(inputs) >= 2 and outputs:
        return 2.0 * prod(outputs[0]) * prod(inputs[1][1:])
    if op == "ConvTranspose" and len(inputs) >= 2:
        return 2.0 * prod(inputs[0]) * prod(inputs[1][1:])
    if op in ("MatMul", "FusedMatMul") and len(inputs) >= 2 and outputs:
        return 2.0 * prod(outputs[0]) * (inputs[0][-1] if inputs[0] else 1)
    if op in ("Gemm", "FusedGemm") and len(inputs) >= 2 and outputs:
        k = inputs[1][0] if len(inputs[1]) == 2 else 1
        return 2.0 * prod(outputs[0]) * k
    return 0.0


def flops_from_profile(events: Sequence[dict[str, Any]]) -> float:
    """Sum :func:`node_flops` over the node events of one ONNX Runtime profile."""
    total = 0.0
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        args = ev.get("args", {})
        op = str(args.get("op_name", ""))
        if op not in _COUNTED:
            continue
        total += node_flops(op, _shape_list(args.get("input_type_shape", [])),
                            _shape_list(args.get("output_type_shape", [])))
    return total


def network_flops(model: Path, feeds: dict[str, np.ndarray]) -> float:
    """FLOPs of one run of ``model`` on ``feeds``: one profiled, unoptimised CPU run.

    Graph optimisations are off so every node keeps its ONNX op and shapes. The count is the
    arithmetic of the convolutions and matrix products, which dominate these networks; it is
    the same for fp16 and fp32 graphs.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    # prepacked weights drop out of the recorded input shapes (ConvTranspose on the CPU)
    opts.add_session_config_entry("session.disable_prepacking", "1")
    with tempfile.TemporaryDirectory(prefix="hccatom-flops-") as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        sess.run(None, feeds)
        trace = Path(sess.end_profiling())
        events = json.loads(trace.read_text())
    return flops_from_profile(events)


def segmentation_evaluations(
    shape_zyx: Sequence[int],
    spacing_zyx: Sequence[float],
    *,
    target_spacing: Sequence[float],
    transpose_forward: Sequence[int],
    patch_size: Sequence[int],
    step_size: float,
    mirror_variants: int,
    folds: int,
) -> tuple[int, int]:
    """(tiles, network evaluations) of the sliding window for one volume.

    The resampled shape follows nnU-Net's ``compute_new_shape`` (round(shape * spacing /
    target)) in the transposed axis order; the crop to non-zero voxels is ignored (a CT is
    non-zero almost everywhere), so this is an upper bound when it crops.
    """
    from hccatom.segmentation.sliding_window import compute_steps

    shape = [int(shape_zyx[a]) for a in transpose_forward]
    spacing = [float(spacing_zyx[a]) for a in transpose_forward]
    if len(patch_size) == 2:  # 2-D network: slices of the first axis
        new = [shape[0]] + [round(s * sp / t) for s, sp, t
                            in zip(shape[1:], spacing[1:], target_spacing, strict=True)]
        grid = [max(n, p) for n, p in zip(new[1:], patch_size, strict=True)]
        tiles = new[0] * prod(len(s) for s in compute_steps(grid, patch_size, step_size))
    else:
        new = [round(s * sp / t) for s, sp, t in zip(shape, spacing, target_spacing,
                                                     strict=True)]
        grid = [max(n, p) for n, p in zip(new, patch_size, strict=True)]
        tiles = prod(len(s) for s in compute_steps(grid, patch_size, step_size))
    return tiles, tiles * mirror_variants * folds


def parse_size(text: str) -> tuple[int, int, int]:
    """``"512x512x200"`` (rows x columns x slices) -> (z, y, x) = (200, 512, 512)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"size must look like 512x512x200 (rows x columns x slices), "
                         f"got {text!r}")
    y, x, z = (int(g) for g in m.groups())
    if min(y, x, z) < 8:
        raise ValueError(f"size {text!r}: every side must be >= 8")
    return z, y, x
