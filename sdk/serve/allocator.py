"""glibc malloc settings of ``hccatom serve``: few arenas, and freed memory handed back.

A long-running server that runs ONNX Runtime, numpy and SciPy from many threads (Triton's
request threads, ONNX Runtime's pools) lets glibc create up to eight malloc arenas per core;
each keeps the memory its thread freed, so the resident size creeps up request after request
without any object being kept alive (``benchmarks/serve_memory.py`` measured it: Python's heap
and object count flat, the process's anonymous memory growing). Two settings stop that:

- ``M_ARENA_MAX`` (:data:`ARENA_MAX` arenas): set with ``mallopt`` in this process before the
  models load (arenas are made lazily, per thread, on first use), and as ``MALLOC_ARENA_MAX``
  in the environment that the Triton server this process starts inherits;
- ``malloc_trim(0)`` after each request: returns the free pages at the top of the heaps and
  the free whole pages inside them to the system.

Both are set in code, so nobody has to export variables in a shell. Elsewhere than glibc
(musl, macOS) they do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)

ARENA_MAX = 2
"""Malloc arenas of the serving process (glibc's default: 8 per core)."""
_M_ARENA_MAX = -8  # malloc.h


@lru_cache(maxsize=1)
def _libc() -> Any:
    """glibc, or None where the C library is another (no mallopt/malloc_trim then)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENA_MAX) -> bool:
    """At most ``arenas`` malloc arenas in this process and the processes it starts.

    Call before the models load. Returns whether this process's allocator took it (False
    off glibc); the environment variable is set either way. A value the user already set in
    ``MALLOC_ARENA_MAX`` is kept for the children.
    """
    value = os.environ.get("MALLOC_ARENA_MAX", "")
    if not value.isdigit() or int(value) < 1:
        value = str(arenas)
        os.environ["MALLOC_ARENA_MAX"] = value
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, int(value)))


def trim() -> bool:
    """Hand the allocator's free memory back to the system (after a request)."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
