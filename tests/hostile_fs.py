"""Hostile filesystem objects for tests: a FIFO whose blocked readers get released, and a
check run as an unprivileged user (permissions do not apply to root)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

UNBLOCK_S = 8.0  # a reader stuck on a FIFO is released after this (then the test fails)
NOBODY = 65534  # the unprivileged user a root test process drops to for permission cases

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no os.mkfifo on this OS")
needs_posix_ids = pytest.mark.skipif(not hasattr(os, "geteuid"), reason="no POSIX user ids")


def unprivileged(check: Callable[[Path], None]) -> None:
    """Run ``check(folder)`` as a user that permissions apply to.

    Root reads a chmod-000 file anyway, so as root the check runs in a forked child that
    drops to ``nobody`` (skipped with the reason where that is not allowed); ``folder`` is
    a fresh world-writable folder (pytest's own tmp folders are private to root).
    """
    folder = Path(tempfile.mkdtemp(prefix="hccatom-perm-"))
    folder.chmod(0o777)
    try:
        if os.geteuid() != 0:
            check(folder)
            return
        pid = os.fork()
        if pid == 0:  # the child: drop privileges, run, report by exit status only
            code = 1
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                check(folder)
                code = 0
            except PermissionError:
                code = 3
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code == 3:
            pytest.skip("running as root and not allowed to drop to an unprivileged user")
        assert code == 0, "the check failed as an unprivileged user (traceback above)"
    finally:
        for p in folder.rglob("*"):
            with contextlib.suppress(OSError):
                p.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def fifo(path: Path) -> Iterator[Path]:
    """Make a FIFO at ``path``; a watchdog releases any reader blocked on it."""
    os.mkfifo(path)
    done = threading.Event()

    def release() -> None:
        if done.wait(UNBLOCK_S):
            return
        while not done.is_set():  # a reader is (probably) blocked in open(): let it go
            with contextlib.suppress(OSError):  # no reader yet: ENXIO
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.05)

    watchdog = threading.Thread(target=release, daemon=True)
    watchdog.start()
    try:
        yield path
    finally:
        done.set()
        watchdog.join(2)
