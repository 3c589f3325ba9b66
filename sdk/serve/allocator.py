"""glibc malloc settings of ``hccatom serve``: few arenas, large blocks in their own mappings,
and freed memory handed back.

A long-running server that runs ONNX Runtime, numpy and SciPy from many threads (Triton's
request threads, ONNX Runtime's pools) lets glibc create up to eight malloc arenas per core;
each keeps the memory its thread freed, so the resident size creeps up request after request
without any object being kept alive (``benchmarks/serve_memory.py`` measured it: Python's heap
and object count flat, the process's anonymous memory growing). Three settings stop that:

- ``M_ARENA_MAX`` (:data:`ARENA_MAX` arenas): set with ``mallopt`` in this process before the
  models load (arenas are made lazily, per thread, on first use), and as ``MALLOC_ARENA_MAX``
  in the environment that the Triton server this process starts inherits;
- ``M_MMAP_THRESHOLD`` fixed at :data:`MMAP_THRESHOLD` (1 MiB), with ``mallopt`` here and
  as ``MALLOC_MMAP_THRESHOLD_`` for the Triton server: glibc's threshold is dynamic by
  default, and each time a large block that was ``mmap``-ed is freed it raises the threshold
  to that block's size, so the next request's multi-MB tensors and protobuf buffers come from
  the heap, where they fragment it. A fixed threshold keeps every block of 1 MiB or more in
  its own mapping, returned to the system when freed (measured on the demo bundle: Triton's
  process grew 81 -> 125 MB over 250 requests with the dynamic threshold and levelled at
  98-104 MB with the fixed one; ``benchmarks/README.md``);
- ``malloc_trim(0)`` after each request: returns the free pages at the top of the heaps and
  the free whole pages inside them to the system.

All are set in code, so nobody has to export variables in a shell. Elsewhere than glibc
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
MMAP_THRESHOLD = 1 << 20
"""Blocks of this many bytes or more get their own mapping (glibc: dynamic, 128 kB to 32 MB)."""
_M_ARENA_MAX = -8  # malloc.h
_M_MMAP_THRESHOLD = -3


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


def _set(param: int, env_name: str, default: int) -> bool:
    """Set a malloc parameter here (``mallopt``) and in the environment children inherit.

    A positive whole number the user already put in ``env_name`` is kept (for this process
    too). Returns whether this process's allocator took it (False off glibc).
    """
    value = os.environ.get(env_name, "")
    if not value.isdigit() or int(value) < 1:
        value = str(default)
        os.environ[env_name] = value
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(param, int(value)))


def limit_arenas(arenas: int = ARENA_MAX) -> bool:
    """At most ``arenas`` malloc arenas in this process and the processes it starts.

    Call before the models load (arenas are made on first use). Returns whether this
    process's allocator took it; ``MALLOC_ARENA_MAX`` is set for the children either way.
    """
    return _set(_M_ARENA_MAX, "MALLOC_ARENA_MAX", arenas)


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Blocks of ``threshold`` bytes or more ``mmap``-ed, here and in the processes this one
    starts, with glibc's dynamic raising of the threshold turned off (setting it does that).

    Returns whether this process's allocator took it; ``MALLOC_MMAP_THRESHOLD_`` is set for
    the children either way.
    """
    return _set(_M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", threshold)


def use_serving_settings() -> bool:
    """``--malloc serving``: :func:`limit_arenas` and :func:`fix_mmap_threshold` (call before
    the models load and before the Triton server starts). True when both took."""
    return limit_arenas() & fix_mmap_threshold()


def trim() -> bool:
    """Hand the allocator's free memory back to the system (after a request)."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
