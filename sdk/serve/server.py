"""``hccatom serve``: ``Predictor.recommend`` behind Triton (PyTriton).

Triton does the serving: gRPC and HTTP endpoints, health and readiness (``/v2/health/ready``),
Prometheus metrics (``:8002/metrics``), a bounded request queue and graceful shutdown. This
module adds the recommend callable (:class:`RecommendService`): it rebuilds the phases and
clinical values from the wire format (:mod:`hccatom.serve.wire`), refuses requests over the
size limit, and turns every :class:`~hccatom.errors.HccatomError` into an error response
that carries the type and message to the client.

Concurrency: ``instances`` recommend calls run at once (one Predictor, thread-safe); up to
``max_queue`` more wait in Triton's queue; any request beyond that is refused at once with
"Exceeds maximum queue size", which the client raises as
:class:`~hccatom.serve.errors.ServerBusyError`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.errors import ClinicalInputError, HccatomError, InputError
from hccatom.phases import PHASES
from hccatom.serve import allocator, pytriton_server, wire
from hccatom.serve.errors import RequestTooLargeError, ServeError
from hccatom.serve.pytriton_server import Ports

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """Limits and endpoints of ``hccatom serve``.

    ``max_request_bytes``: largest request (arrays and JSON) accepted; larger ones get
    :class:`RequestTooLargeError`. ``study_root``: the only folder ``study_path`` requests
    may name (None: such requests are refused). ``exit_timeout_s``: on SIGTERM, how long
    in-flight requests may take to finish. ``malloc_trim``: hand freed memory back to the
    system after each request (:mod:`hccatom.serve.allocator`).
    """

    ports: Ports
    instances: int = 1
    max_queue: int = 4
    max_request_bytes: int = 1 << 30
    study_root: Path | None = None
    exit_timeout_s: int = 30
    malloc_trim: bool = True

    def check(self) -> None:
        """Raise :class:`ServeError` naming the first option out of range."""
        if self.instances < 1:
            raise ServeError(f"instances must be >= 1, got {self.instances}")
        if self.max_queue < 1:
            raise ServeError(f"max_queue must be >= 1, got {self.max_queue}")
        if self.max_request_bytes < 1:
            raise ServeError(f"max_request_bytes must be >= 1, got {self.max_request_bytes}")


class TritonResponseError(Exception):
    """Raised inside the PyTriton callable; its text becomes the Triton error message."""


class RecommendService:
    """The PyTriton callable: one request -> one Recommendation JSON (or a typed error)."""

    def __init__(self, predictor: Any, options: ServeOptions) -> None:
        self.predictor = predictor
        self.options = options

    def _study_path(self, value: Any) -> Path:
        root = self.options.study_root
        if root is None:
            raise InputError("this server does not read studies from paths; send the phases "
                             "as arrays (or start it with --study-root)")
        if not isinstance(value, str):
            raise InputError("study_path must be a string")
        path = (root / value).resolve()
        if not path.is_relative_to(root.resolve()):
            raise InputError(f"study_path {value!r} is outside the server's study root")
        return path

    def handle(self, data: dict[str, np.ndarray]) -> str:
        """Rebuild, check the size, recommend; return the Recommendation JSON."""
        size = sum(int(a.nbytes) for a in data.values())
        if size > self.options.max_request_bytes:
            raise RequestTooLargeError(
                f"request of {size / 2**20:.1f} MiB is over this server's limit of "
                f"{self.options.max_request_bytes / 2**20:.1f} MiB; crop or downsample "
                "the phases, or raise --max-request-mb")
        raw = data[wire.REQUEST].reshape(-1)
        if raw.size != 1:
            raise InputError(f"'{wire.REQUEST}' must hold one JSON text, got {raw.size}")
        req = wire.parse_request(bytes(raw[0]))
        if not isinstance(req["clinical"], dict):  # a string would be read as a server path
            raise ClinicalInputError("request: 'clinical' must be a JSON object of field -> "
                                     "value")
        if "study_path" in req:
            rec = self.predictor.recommend(study=self._study_path(req["study_path"]),
                                           clinical=req["clinical"])
        else:
            ct = {name: wire.phase_volume(name, req.get(name),
                                          None if name not in data else data[name][0])
                  for name in PHASES}
            # the clinical mapping as sent: validated by the same code, in the same order,
            # as an in-process call with a mapping
            rec = self.predictor.recommend(ct, req["clinical"])
        return str(rec.to_json(indent=0))

    def __call__(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        out = []
        for request in requests:
            try:
                text = self.handle(dict(request.data))
            except HccatomError as exc:
                raise TritonResponseError(wire.encode_error(exc)) from None
            except Exception as exc:  # a bug: say what, not the inputs
                log.exception("recommend failed")
                raise TritonResponseError(wire.encode_error(ServeError(
                    f"internal server error ({type(exc).__name__}); see the server log"))
                ) from None
            finally:
                if self.options.malloc_trim:
                    allocator.trim()
            out.append({wire.OUTPUT: np.array([[text.encode()]], dtype=object)})
        return out


def bind(triton: Any, service: RecommendService, options: ServeOptions) -> None:
    """Bind the recommend model to a (not yet running) PyTriton server."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor

    triton.bind(
        model_name=wire.MODEL_NAME,
        infer_func=[service] * options.instances,
        inputs=[Tensor(name=wire.REQUEST, dtype=bytes, shape=(1,)),
                *(Tensor(name=p, dtype=np.float32, shape=(-1, -1, -1), optional=True)
                  for p in PHASES)],
        outputs=[Tensor(name=wire.OUTPUT, dtype=bytes, shape=(1,))],
        config=ModelConfig(max_batch_size=1, batcher=DynamicBatcher(
            max_queue_delay_microseconds=0,
            default_queue_policy=QueuePolicy(max_queue_size=options.max_queue))),
        strict=True,
    )


def serve(predictor: Any, options: ServeOptions, *,
          on_ready: Callable[[Ports], None] | None = None,
          stop: threading.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set); in-flight requests finish first."""
    options.check()
    stop = stop or threading.Event()
    service = RecommendService(predictor, options)
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    triton: Any = None
    try:
        triton = pytriton_server.start_and_run(
            options.ports, lambda t: bind(t, service, options),
            exit_timeout_s=options.exit_timeout_s)
        if on_ready is not None:
            on_ready(options.ports)
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise ServeError("the Triton server stopped unexpectedly; see its log above")
    finally:
        if triton is not None:
            log.info("stopping: in-flight requests finish first (up to %d s)",
                     options.exit_timeout_s)
            triton.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
