"""Start what the first CT read needs while a bundle loads, in the background.

A fresh process's first phase read (the ``read_arterial`` stage) paid one-time costs on top
of reading the file: importing SciPy's spline module for the z resampling
(:func:`hccatom.preprocess.resample_z`; about 1.1 s on a loaded 2-core VM), finding the BLAS
library (:mod:`hccatom.blas_threads`) and starting the header probe child
(:mod:`hccatom.header_guard`; about 0.35 s). :meth:`hccatom.Predictor.from_bundle` calls
:func:`start_read_warmup`, so these overlap loading the bundle's engines instead of delaying
the first recommendation. The warm-up changes no result; a failure in it only means the
first read pays the cost itself.
"""

from __future__ import annotations

import importlib
import logging
import threading

from hccatom.blas_threads import single_blas_thread
from hccatom.header_guard import start_prober

__all__ = ["start_read_warmup", "warm_up_reading"]

log = logging.getLogger(__name__)


def warm_up_reading() -> None:
    """Import SciPy's spline module, find the BLAS library (:mod:`hccatom.blas_threads`)
    and start the header probe child (blocking)."""
    try:
        importlib.import_module("scipy.interpolate")
        with single_blas_thread():
            pass
    except ImportError as exc:  # the read reports a missing library itself
        log.debug("read warm-up: %s", exc)
    start_prober()


def start_read_warmup() -> threading.Thread:
    """Run :func:`warm_up_reading` in a daemon thread; returns the started thread."""
    thread = threading.Thread(target=warm_up_reading, name="hccatom-read-warmup", daemon=True)
    thread.start()
    return thread
