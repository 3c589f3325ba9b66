"""Run small BLAS products on one thread.

:func:`hccatom.preprocess.resample_z` computes each output slice as one small matrix-vector
product (about 30 source slices x one slice's voxels). NumPy's OpenBLAS splits every such
product over all cores; where the cores are busy (a loaded machine, or ONNX Runtime's
worker threads still spinning after a segmentation) each of the ~200 products waits for
its threads, and one phase's resampling took 0.3-1.5 s instead of 30 ms. One thread gives
the same numbers (each output voxel's sum is computed in the same order; a test checks
bitwise equality) without the waits.

Concurrent users (two phases read at once) share one limit: the first sets it, the last
restores the previous thread counts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["single_blas_thread"]

_LOCK = threading.Lock()
_state: dict[str, Any] = {"controller": None, "limiter": None, "depth": 0}


def _controller() -> Any:
    """threadpoolctl's view of the BLAS libraries loaded now (made once, after NumPy)."""
    if _state["controller"] is None:
        import numpy  # noqa: F401  (its OpenBLAS must be loaded before the scan)
        from threadpoolctl import ThreadpoolController

        _state["controller"] = ThreadpoolController()
    return _state["controller"]


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """Inside the block, BLAS calls run on one thread (process-wide, restored after)."""
    with _LOCK:
        if _state["depth"] == 0:
            _state["limiter"] = _controller().limit(limits=1, user_api="blas")
        _state["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                _state["limiter"].restore_original_limits()
                _state["limiter"] = None
