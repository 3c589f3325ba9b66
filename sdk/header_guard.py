"""Last guard against an image header that hangs or crashes SimpleITK: probe it in a child.

:mod:`hccatom.image_headers` refuses the broken headers we know of (e.g. an infinite sform
row, which makes ITK's ``ReadImageInformation`` spin for minutes). For what nobody has found
yet, :func:`probe_header` reads the header in a separate Python process with a time limit.
A thread could not do this: a native call cannot be interrupted, so a timed-out thread would
keep spinning in the caller's process. The child is killed when the limit passes, and a
child killed by a signal (a crash in native code) is reported too; the caller's process is
never at risk.

Cost: one short process (about 0.15 s on a 2-core VM) per image file read. The limit comes
from ``HCCATOM_HEADER_TIMEOUT_S`` (seconds, default 20; ``0`` turns the guard off, e.g.
where starting processes is not allowed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hccatom.errors import CTInputError

__all__ = ["DEFAULT_TIMEOUT_S", "ENV_VAR", "probe_header", "timeout_s"]

ENV_VAR = "HCCATOM_HEADER_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 20.0

_PROBE = (
    "import sys, SimpleITK as s\n"
    "r = s.ImageFileReader()\n"
    "r.SetFileName(sys.argv[1])\n"
    "try:\n"
    "    r.ReadImageInformation()\n"
    "except RuntimeError:\n"
    "    sys.exit(3)\n"
)


def timeout_s() -> float:
    """The probe's time limit in seconds (0 = guard off)."""
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise CTInputError(
            f"{ENV_VAR}={text!r} is not a number of seconds; unset it or write e.g. 20."
        ) from None
    return max(0.0, value)


def probe_header(path: Path, limit_s: float | None = None) -> None:
    """Read ``path``'s image header in a child process; raise if it hangs or crashes.

    A header ITK merely rejects (exit 3) is left to the caller's own reader, whose error
    message is the one users see.
    """
    limit = timeout_s() if limit_s is None else limit_s
    if limit <= 0:
        return
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _PROBE, str(path)],
            capture_output=True, timeout=limit, check=False,
        )
    except subprocess.TimeoutExpired:
        raise CTInputError(
            f"{path}: reading its image header did not finish within {limit:g} s (the "
            "reader was stopped). The header is broken or crafted; re-export the image. "
            f"(Limit: {ENV_VAR}.)"
        ) from None
    except OSError:
        return  # cannot start a process here: rely on the header checks alone
    if done.returncode < 0:
        raise CTInputError(
            f"{path}: reading its image header crashed the image reader (signal "
            f"{-done.returncode}). The file is broken or crafted; re-export the image."
        )
