"""Helpers of the serving tests: a hard per-test deadline and comparable recommendations."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hccatom.serve.loadtest import comparable

__all__ = ["ServerProcess", "comparable", "hard_deadline", "start_server"]


@contextmanager
def hard_deadline(seconds: float) -> Iterator[None]:
    """Kill the test process with a traceback if the block runs longer than ``seconds``
    (a hung server must never hang CI)."""
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


class ServerProcess:
    """``hccatom serve`` in a child process on free loopback ports (killed on exit)."""

    def __init__(self, bundle: Path, log: Path, *extra: str, ports: Any = None) -> None:
        from hccatom.serve.pytriton_server import Ports

        self.ports = ports or Ports.free()
        self.log = log
        args = [sys.executable, "-m", "hccatom.cli", "serve", "--bundle", str(bundle),
                "--device", "cpu", "--grpc-port", str(self.ports.grpc),
                "--http-port", str(self.ports.http), "--metrics-port",
                str(self.ports.metrics), *extra]
        with open(log, "ab") as err:
            # its own process group: kill() takes Triton and its stubs down with it
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True)

    @property
    def url(self) -> str:
        return f"triton://{self.ports.grpc_url}"

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Wait for the ready line; fail with the server's log tail otherwise."""
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                line = self.proc.stdout.readline().decode()
                if "hccatom serve: ready" in line:
                    return
                if not line:  # exited
                    break
        self.kill()
        tail = self.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"hccatom serve did not become ready:\n{tail}")

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL the server and every process it started (its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


def start_server(bundle: Path, log: Path, *extra: str, ports: Any = None) -> ServerProcess:
    server = ServerProcess(bundle, log, *extra, ports=ports)
    server.wait_ready()
    return server
