"""Which graph precision (fp32 or fp16) an engine runs, from the device and the caller.

A bundle graph may have an fp16 twin (fp32 inputs/outputs, exported with ``--precision
both`` and kept only after its parity gate). Rules:

* ``precision=None`` (default): fp16 where the engine runs on the CUDA provider
  (``device="cuda"``, or ``"auto"`` when this onnxruntime has CUDA) and the graph has an fp16
  twin, else fp32. The CPU and TensorRT default to fp32 graphs (TensorRT builds its own
  fp16 kernels from the fp32 graph when asked, see ``OnnxRuntimeEngine(fp16=True)``).
* ``precision="fp16"`` / ``"fp32"`` forces it (fp16 on the CPU provider is allowed: it runs,
  it is not faster); forcing fp16 on a graph that has no twin raises
  :class:`~hccatom.errors.BundleFormatError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from hccatom.errors import BundleFormatError, InputError

Precision = Literal["fp32", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")


def default_precision(device: str, available_providers: Sequence[str]) -> Precision:
    """fp16 for CUDA (explicit, or ``auto`` with the CUDA provider present), else fp32."""
    cuda = "CUDAExecutionProvider" in available_providers
    trt = "TensorrtExecutionProvider" in available_providers
    if device == "cuda" or (device == "auto" and cuda and not trt):
        return "fp16"
    return "fp32"


def check_precision(precision: str | None) -> Precision | None:
    """``None``, ``"fp16"`` or ``"fp32"``; anything else raises :class:`InputError`."""
    if precision is None:
        return None
    if precision not in PRECISIONS:
        raise InputError(f"precision must be 'fp16', 'fp32' or None, got {precision!r}")
    return "fp16" if precision == "fp16" else "fp32"


def choose_graph(
    fp32_path: str, fp16_path: str | None, *, requested: Precision | None, preferred: Precision,
    what: str,
) -> tuple[str, Precision]:
    """The graph to load for one model and its precision.

    ``requested``: the caller's forced precision (or None); ``preferred``: the device's
    default (:func:`default_precision`). ``what`` names the model in errors.
    """
    if requested == "fp16":
        if fp16_path is None:
            raise BundleFormatError(
                f"precision='fp16' was asked for but the bundle has no fp16 graph for {what}; "
                "re-export with --precision both, or use precision='fp32' (or leave it unset)"
            )
        return fp16_path, "fp16"
    if requested == "fp32":
        return fp32_path, "fp32"
    if preferred == "fp16" and fp16_path is not None:
        return fp16_path, "fp16"
    return fp32_path, "fp32"
