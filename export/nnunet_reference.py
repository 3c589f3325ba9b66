"""Time nnU-Net's own ``nnUNetPredictor`` on given volumes (``hccatom bench --compare-nnunet``).

Build-time layer (needs the export extra: torch, nnunetv2). The predictor runs the way
nnU-Net runs it by default on each device: on CUDA with ``perform_everything_on_device`` and
its own fp16 autocast, on the CPU in float32. Each phase gets ``warmup`` untimed runs and
``repeats`` timed ones; CUDA work is synchronised before a clock is read.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from hccatom.errors import InputError
from hccatom.volume import Volume


def time_nnunet_predictor(
    model_folder: str | Path,
    volumes: Mapping[str, Volume],
    *,
    device: str = "cpu",
    folds: Sequence[int | str] = (0,),
    step_size: float = 0.5,
    mirroring: bool = True,
    repeats: int = 3,
    warmup: int = 1,
    checkpoint: str = "checkpoint_final.pth",
) -> dict[str, Any]:
    """Per-phase p50/min milliseconds of ``predict_single_npy_array`` and its peak memory."""
    folder = Path(model_folder)
    if not (folder / "plans.json").is_file():
        raise InputError(
            f"--compare-nnunet {folder}: not an nnU-Net model folder (no plans.json); give "
            "<nnUNet_results>/DatasetXXX/<Trainer>__<Plans>__<configuration>"
        )
    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise InputError("--compare-nnunet on a GPU needs torch with CUDA; this torch has none")
    dev = torch.device("cuda" if cuda else "cpu")
    predictor = nnUNetPredictor(
        tile_step_size=step_size, use_gaussian=True, use_mirroring=mirroring,
        perform_everything_on_device=cuda, device=dev, verbose=False,
        verbose_preprocessing=False, allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(
        str(folder), use_folds=tuple(folds), checkpoint_name=checkpoint,
    )

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    phases: dict[str, dict[str, Any]] = {}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for name, vol in volumes.items():
        data = np.ascontiguousarray(vol.array[None], dtype=np.float32)
        props = {"spacing": [float(s) for s in vol.spacing]}
        times = []
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            predictor.predict_single_npy_array(data, props, None, None, False)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000.0)
        phases[name] = {"p50_ms": float(np.median(times)), "min_ms": float(min(times)),
                        "runs_ms": times}
    return {
        "predictor": "nnunetv2.nnUNetPredictor.predict_single_npy_array",
        "device": str(dev),
        "autocast_fp16": cuda,  # nnU-Net autocasts on CUDA only
        "perform_everything_on_device": cuda,
        "folds": list(folds),
        "step_size": step_size,
        "mirroring": mirroring,
        "torch": torch.__version__,
        "peak_torch_memory_mib": (torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
        "phases": phases,
    }
