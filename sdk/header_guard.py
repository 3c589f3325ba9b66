"""Last guard against an image header that hangs or crashes SimpleITK: probe it in a child.

:mod:`hccatom.image_headers` refuses the broken headers we know of (e.g. an infinite sform
row, which makes ITK's ``ReadImageInformation`` spin for minutes). For what nobody has found
yet, :func:`probe_header` reads the header in a separate Python process with a time limit.
A thread could not do this: a native call cannot be interrupted, so a timed-out thread would
keep spinning in the caller's process. The child is killed when the limit passes, and a
child killed by a signal (a crash in native code) is reported too; the caller's process is
never at risk.

Cost: one child process, started on the first file read (0.15-0.8 s on a 2-core VM), or
ahead of it by :func:`start_prober` (``Predictor.from_bundle`` does, see
:mod:`hccatom.read_warmup`), and kept for later reads (milliseconds each); a child that
timed out or crashed is killed and replaced on the next read. The limit comes from
``HCCATOM_HEADER_TIMEOUT_S`` (seconds, default 20; ``0`` turns the guard off, e.g. where
starting processes is not allowed). POSIX only: on Windows the guard is off and the header
checks of :mod:`hccatom.image_headers` stand alone.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from hccatom.errors import CTInputError

__all__ = ["DEFAULT_TIMEOUT_S", "ENV_VAR", "probe_header", "start_prober", "timeout_s"]

ENV_VAR = "HCCATOM_HEADER_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 20.0

#: The child: reads one JSON-encoded path per line, answers one line per path ("0" read, "3"
#: ITK refused it); ends at end of input (the parent closed the pipe or exited).
_PROBE = (
    "import json, sys, SimpleITK as s\n"
    "for line in sys.stdin:\n"
    "    r = s.ImageFileReader()\n"
    "    r.SetFileName(json.loads(line))\n"
    "    try:\n"
    "        r.ReadImageInformation()\n"
    "        code = 0\n"
    "    except RuntimeError:\n"
    "        code = 3\n"
    "    sys.stdout.write(f'{code}\\n')\n"
    "    sys.stdout.flush()\n"
)


class _Prober:
    """One long-lived child process that reads headers on request (started on first use).

    Starting Python and SimpleITK costs 0.15-0.8 s; a warm child answers in milliseconds.
    Requests are serialised by a lock; a child that times out or crashes is killed and the
    next request starts a fresh one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._script = ""

    def start(self) -> None:
        """Start the child now (no request), so that the first probe finds it warm."""
        with self._lock:
            self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None or self._script != _PROBE:
            self._stop()
            self._script = _PROBE
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _PROBE],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
        return self._proc

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def probe(self, path: Path, limit: float) -> int | None:
        """0 or 3 as the child answered; None when it timed out; -signal when it crashed."""
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write((json.dumps(str(path)) + "\n").encode())
                proc.stdin.flush()
            except OSError:  # the child died before the request: report how
                proc.wait()
                self._proc = None
                return proc.returncode if proc.returncode < 0 else -1
            fd = proc.stdout.fileno()
            deadline = time.monotonic() + limit
            answer = b""
            while not answer.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                ready, _, _ = select.select([fd], [], [], max(0.0, remaining))
                if not ready:
                    self._stop()
                    return None
                chunk = os.read(fd, 64)
                if not chunk:  # end of output: the child died
                    code = proc.wait()
                    self._proc = None
                    return code if code < 0 else -1
                answer += chunk
            return int(answer.strip() or b"3")

    def close(self) -> None:
        """Stop the child (also at interpreter exit)."""
        with self._lock:
            self._stop()


_PROBER = _Prober()
atexit.register(_PROBER.close)


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


def start_prober() -> None:
    """Start the probe child ahead of the first read (e.g. while a bundle loads): its start
    (Python and SimpleITK, 0.15-0.8 s) then overlaps other work instead of delaying the
    first file read. Nothing where the guard is off or processes cannot be started."""
    try:
        if timeout_s() <= 0 or os.name == "nt":
            return
        _PROBER.start()
    except (OSError, CTInputError):  # a bad limit is reported by the read itself
        return


def probe_header(path: Path, limit_s: float | None = None) -> None:
    """Read ``path``'s image header in the child process; raise if it hangs or crashes.

    A header ITK merely rejects is left to the caller's own reader, whose error message is
    the one users see.
    """
    limit = timeout_s() if limit_s is None else limit_s
    if limit <= 0 or os.name == "nt":  # select() on pipes is POSIX-only
        return
    try:
        code = _PROBER.probe(path, limit)
    except OSError:
        return  # cannot start a process here: rely on the header checks alone
    if code is None:
        raise CTInputError(
            f"{path}: reading its image header did not finish within {limit:g} s (the "
            "reader was stopped). The header is broken or crafted; re-export the image. "
            f"(Limit: {ENV_VAR}.)"
        )
    if code < 0:
        raise CTInputError(
            f"{path}: reading its image header crashed the image reader"
            f"{f' (signal {-code})' if code < -1 else ''}. The file is broken or crafted; "
            "re-export the image."
        )
