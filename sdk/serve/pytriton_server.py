"""Start and stop PyTriton's Triton server in this process (shared by the ONNX host and
``hccatom serve``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hccatom.serve import pytriton_env
from hccatom.serve.errors import ServeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ports:
    """Where the server listens: gRPC (inference), HTTP (health, inference), metrics."""

    grpc: int
    http: int
    metrics: int
    host: str = "127.0.0.1"

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> Ports:
        """Three ports free right now on ``host``."""
        return cls(pytriton_env.free_port(host), pytriton_env.free_port(host),
                   pytriton_env.free_port(host), host)

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (what tritonclient takes)."""
        return f"{self.host}:{self.grpc}"


def start(ports: Ports, *, exit_timeout_s: int = 30, verbose: bool = False) -> Any:
    """A ``pytriton.triton.Triton`` ready for ``bind`` (not yet running).

    ``exit_timeout_s``: on stop (SIGTERM, SIGINT, :meth:`stop`) how long Triton waits for
    in-flight requests to finish before it unloads the models.
    """
    pytriton_env.prepare()
    from pytriton.triton import Triton, TritonConfig

    cfg = TritonConfig(
        grpc_address=ports.host, grpc_port=ports.grpc, http_address=ports.host,
        http_port=ports.http, metrics_address=ports.host, metrics_port=ports.metrics,
        exit_timeout_secs=exit_timeout_s, log_verbose=1 if verbose else 0,
    )
    try:
        return Triton(config=cfg)
    except Exception as exc:  # pytriton raises its own types; name what failed
        raise ServeError(f"PyTriton could not prepare a Triton server: {exc}") from exc


def run(triton: Any) -> None:
    """Start the server in the background and wait until its models are ready."""
    try:
        triton.run()
    except Exception as exc:
        triton.stop()
        raise ServeError(f"the Triton server did not start: {exc}") from exc
