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

from hccatom.engines.providers import CudaOptions
from hccatom.errors import InputError
from hccatom.segmentation.device_window import FixedShape


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
