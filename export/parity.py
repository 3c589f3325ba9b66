"""Parity of an exported ONNX model with its PyTorch source (build time only).

The ONNX side runs through the runtime's own :class:`OnnxRuntimeEngine` on the CPU, so the
check covers the code path the SDK uses. Each batch size gets fresh seeded random inputs;
the report records max/mean absolute differences per output and batch, the versions of
every library involved and the tolerance, and :class:`ParityError` carries the numbers.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hccatom.engines import OnnxRuntimeEngine
from hccatom.errors import ParityError

InputMaker = Callable[[int, int], dict[str, torch.Tensor]]
"""(batch, seed) -> named float32 input tensors."""


def library_versions() -> dict[str, str]:
    """Versions of the libraries an export depends on (for reports)."""
    out = {"python": platform.python_version()}
    for dist in ("hccatom", "torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu",
                 "numpy", "safetensors"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def check_parity(
    module: nn.Module,
    onnx_path: Path,
    make_inputs: InputMaker,
    *,
    output_names: Sequence[str],
    compare: str,
    batches: Sequence[int] = (1, 4),
    tolerance: float = 1e-5,
    seed: int = 0,
) -> dict[str, Any]:
    """Run ``module`` (eval, no grad) and the ONNX model on the same inputs and compare.

    ``compare`` names the output held to ``tolerance`` (max |difference|); the others are
    reported too. Returns the parity section of a report; raises :class:`ParityError`
    (with the report as ``.report``) when the tolerance is exceeded.
    """
    engine = OnnxRuntimeEngine(onnx_path, device="cpu")
    module.eval()
    per_batch: list[dict[str, Any]] = []
    worst = 0.0
    for batch in batches:
        inputs = make_inputs(batch, seed + batch)
        with torch.no_grad():
            ref = module(*inputs.values())
        ref_t = ref if isinstance(ref, tuple) else (ref,)
        got = engine.run({k: v.numpy() for k, v in inputs.items()})
        entry: dict[str, Any] = {"batch": batch}
        for name, r in zip(output_names, ref_t, strict=True):
            a = r.detach().numpy()
            b = got[name]
            if a.shape != b.shape:
                raise ParityError(
                    f"output {name!r} at batch {batch}: ONNX shape {b.shape} != PyTorch {a.shape}"
                )
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            entry[name] = {
                "max_abs_diff": float(diff.max()),
                "mean_abs_diff": float(diff.mean()),
                "shape": list(b.shape),
            }
        worst = max(worst, entry[compare]["max_abs_diff"])
        per_batch.append(entry)
    result: dict[str, Any] = {
        "compared_output": compare,
        "tolerance": tolerance,
        "max_abs_diff": worst,
        "mean_abs_diff": float(np.mean([e[compare]["mean_abs_diff"] for e in per_batch])),
        "batches": per_batch,
        "runtime": {"engine": "onnxruntime", "providers": engine.providers},
        "seed": seed,
        "passed": bool(worst <= tolerance),
    }
    return result


def write_report(report: dict[str, Any], path: Path) -> Path:
    """Write a parity report as indented JSON (stamped with the UTC time)."""
    report = {"created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              **report}
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path


def raise_if_failed(report: dict[str, Any], report_path: Path) -> None:
    """Raise :class:`ParityError` with the numbers when ``report['parity']`` failed."""
    parity = report["parity"]
    if parity["passed"]:
        return
    lines = ", ".join(
        f"batch {e['batch']}: max {e[parity['compared_output']]['max_abs_diff']:.3g}"
        for e in parity["batches"]
    )
    err = ParityError(
        f"ONNX export of {report.get('model', '?')} does not match PyTorch: max |"
        f"{parity['compared_output']} difference| {parity['max_abs_diff']:.3g} > tolerance "
        f"{parity['tolerance']:.3g} ({lines}); report: {report_path}"
    )
    err.report = report  # type: ignore[attr-defined]
    raise err
