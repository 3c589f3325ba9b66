"""Start and stop PyTriton's Triton server in this process (shared by the ONNX host and
``hccatom serve``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
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


# PyTriton's model instances start in parallel; the first opens a Unix socket to hand the
# others their configuration, and another instance that connects after the socket file
# appears but before it listens gets "Connection refused" and fails its load (PyTriton 0.7,
# seen with 2 instances on a loaded machine). A new server on the same ports usually starts.
_STARTUP_RACE = ("get_config_from_handshake_server", "Connection refused")


def is_startup_race(exc: BaseException) -> bool:
    """Whether a failed start is PyTriton's instance-handshake race (worth one more try)."""
    text = str(exc)
    return all(part in text for part in _STARTUP_RACE)


def start_and_run(ports: Ports, bind: Callable[[Any], None], *, exit_timeout_s: int = 30,
                  attempts: int = 3) -> Any:
    """A running server with ``bind``'s models ready: :func:`start`, ``bind``, :func:`run`.

    A start that fails with PyTriton's instance-handshake race (:func:`is_startup_race`) is
    retried with a new server on the same ports, up to ``attempts`` starts in all, with a
    warning each time; any other failure is raised at once.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        triton = start(ports, exit_timeout_s=exit_timeout_s)
        bind(triton)
        try:
            run(triton)
        except ServeError as exc:
            if attempt == attempts or not is_startup_race(exc):
                raise
            log.warning("the Triton server's model instances did not start (PyTriton's "
                        "handshake race); starting it again (attempt %d of %d)",
                        attempt + 1, attempts)
            continue
        return triton
    raise AssertionError("unreachable: the last attempt returns or raises")
