"""Whether and how the segmentation network runs as a CUDA graph (issue #11, section 3).

CUDA graphs need fixed shapes and buffers that never move, which only the device-resident
sliding window has (its tile batch is fixed, see
:class:`~hccatom.segmentation.device_window.FixedShape`). These helpers turn the caller's
:class:`~hccatom.engines.providers.CudaOptions` into the two things the Segmenter needs: the
options of its ordinary engines (CUDA graphs off: their shapes vary) and the fixed-shape
setup of the network, or a clear error where CUDA graphs cannot run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from hccatom.engines.providers import (
    CUDA,
    CudaOptions,
    ort_available_providers,
    provider_plan,
)
from hccatom.errors import InputError
from hccatom.segmentation.device_window import FixedShape
from hccatom.segmentation.spec import SegmentationSpec


def engine_cuda_options(options: CudaOptions | None) -> CudaOptions | None:
    """The options of an ordinary (variable-shape) engine: ``options`` without CUDA graphs."""
    if options is None or not options.enable_cuda_graph:
        return options
    return dataclasses.replace(options, enable_cuda_graph=False)


def fixed_shape_setup(
    options: CudaOptions | None, threads: int | None, device_resident: bool | None
) -> FixedShape | None:
    """The network's fixed-shape setup when CUDA graphs are asked for, else None.

    ``device_resident=False`` with CUDA graphs raises :class:`InputError` (the host path's
    batches change shape); ``None`` leaves the choice of path to the Segmenter (the host
    path on the CPU provider, where nothing is captured and the setup goes unused).
    """
    if options is None or not options.enable_cuda_graph:
        return None
    if device_resident is False:
        raise InputError(
            "CUDA graphs (CudaOptions(enable_cuda_graph=True)) need the device-resident "
            "path, whose tile batch has a fixed shape; use device_resident=None or True, or "
            "turn enable_cuda_graph off"
        )
    return FixedShape(cuda_options=options, threads=threads)


def graph_models(
    models: Sequence[Path], device: str, device_resident: bool | None,
    options: CudaOptions | None, threads: int | None, spec: SegmentationSpec,
) -> FixedShape | None:
    """The fixed-shape setup that loads ``models`` itself, so that no ordinary fold session
    (a second copy of the weights and an arena per fold) is created, when CUDA graphs are
    asked for and the device-resident path will surely run them; else None.

    Decided before any session exists: ``device="cuda"``, or ``"auto"`` where the CUDA
    provider comes first (the caller falls back to the ordinary path if its sessions cannot
    start, as ``"auto"`` does), ``device_resident`` not False; or ``"cpu"`` with
    ``device_resident=True`` (the tests). A 3-D configuration, not a cascade's
    full-resolution stage. ``"tensorrt"`` keeps the ordinary path, which refuses it.
    """
    setup = fixed_shape_setup(options, threads, device_resident)
    if setup is None or spec.dims != 3 or spec.previous_stage is not None:
        return None
    if device == "auto" and provider_plan(device, ort_available_providers())[0] == CUDA:
        device = "cuda"
    if device == "cuda" or (device == "cpu" and device_resident):
        return dataclasses.replace(setup, models=tuple(models), device=device)
    return None
