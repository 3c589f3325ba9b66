"""How much memory a step may use, and the check run *before* allocating it.

A 2 MB ``.nii.gz`` can declare a 1024^3 image, a 400-slice scan at 20 mm resampled to 1 mm
asks for 7.8 GiB, a manifest can ask for 4096^3 patches. Each step computes what it will
need from sizes it already knows (header, grid, manifest) and calls :func:`check_memory`,
which raises a typed :class:`~hccatom.errors.TooLargeError` saying how large and what to do,
instead of letting the allocation fail (or the machine swap) minutes later.

The budget, in order of precedence:

1. the ``budget_bytes`` argument where a function takes one;
2. :func:`set_memory_budget` (process-wide, e.g. ``set_memory_budget("32GiB")`` in a viewer
   that knows its own share of the machine);
3. the environment variable ``HCCATOM_MEMORY_BUDGET`` (bytes, or with a unit: ``16GiB``,
   ``800MB``, ``0`` or ``off`` = no limit);
4. 80 % of the memory available now (``MemAvailable`` in ``/proc/meminfo``, else the
   physical memory), at least 1 GiB.

The estimates are per step and deliberately simple (bytes of the arrays a step holds at
once); they are upper bounds of the right order, not exact peaks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from hccatom.errors import TooLargeError

__all__ = [
    "ENV_VAR",
    "array_bytes",
    "check_memory",
    "format_bytes",
    "memory_budget_bytes",
    "parse_bytes",
    "set_memory_budget",
]

ENV_VAR = "HCCATOM_MEMORY_BUDGET"
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
    "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_MIN_DEFAULT = 1 << 30


def parse_bytes(text: str) -> int | None:
    """``"16GiB"`` -> bytes; ``"0"``/``"off"``/``"none"`` -> None (no limit)."""
    if text.strip().lower() in ("0", "off", "none", "unlimited"):
        return None
    m = _SIZE.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(
            f"{ENV_VAR}={text!r} is not a size; write bytes or e.g. '16GiB', '800MB', 'off'"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


_UNSET = object()
_override: object = _UNSET


def set_memory_budget(budget: int | str | None) -> None:
    """Set the process-wide budget: bytes, a size such as ``"32GiB"``, ``0``/``"off"`` for no
    limit, or ``None`` to return to the environment variable / available-memory default."""
    global _override
    if budget is None:
        _override = _UNSET
    elif isinstance(budget, str):
        _override = parse_bytes(budget)
    else:
        _override = None if budget <= 0 else int(budget)


def memory_budget_bytes(budget_bytes: int | None = None) -> int | None:
    """The budget in bytes (None = no limit); see the module doc for the precedence."""
    if budget_bytes is not None:
        return None if budget_bytes <= 0 else int(budget_bytes)
    if _override is not _UNSET:
        return _override  # type: ignore[return-value]
    env = os.environ.get(ENV_VAR)
    if env is not None and env.strip():
        return parse_bytes(env)
    return max(_MIN_DEFAULT, int(0.8 * _available_bytes()))


def format_bytes(n: float) -> str:
    """Human size, binary units: ``format_bytes(7.8 * 2**30) == '7.8 GiB'``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover - loop always returns


def array_bytes(shape: Iterable[int], itemsize: int = 4) -> int:
    """Bytes of one array of ``shape`` (Python ints: no overflow for absurd shapes)."""
    n = int(itemsize)
    for s in shape:
        n *= max(0, int(s))
    return n


def check_memory(
    needed_bytes: int,
    step: str,
    advice: str,
    *,
    error: type[TooLargeError] = TooLargeError,
    budget_bytes: int | None = None,
) -> None:
    """Raise ``error`` when ``needed_bytes`` exceeds the budget, before anything is allocated.

    ``step`` says what would allocate (e.g. "reading scan.nii.gz (512 x 512 x 1024 int16)"),
    ``advice`` what to do about it; the message adds the sizes and how to raise the budget.
    """
    budget = memory_budget_bytes(budget_bytes)
    if budget is None or needed_bytes <= budget:
        return
    raise error(
        f"{step} needs about {format_bytes(needed_bytes)} of memory; the budget is "
        f"{format_bytes(budget)}. {advice} (The budget is 80% of available memory by default; "
        f"set {ENV_VAR}, e.g. {ENV_VAR}=32GiB, or call "
        "hccatom.memory_budget.set_memory_budget() to change it.)",
        needed_bytes,
        budget,
    )
