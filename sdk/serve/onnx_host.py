"""Host a Triton model repository's ONNX files through ONNX Runtime in PyTriton.

A full Triton server with the ONNX Runtime backend is not on PyPI; PyTriton ships Triton
with the Python backend only. This host reads each model's ``config.pbtxt`` written by
``hccatom export triton`` and serves the same ``model.onnx`` under the same name, inputs,
outputs and batching, running it with :class:`~hccatom.engines.OnnxRuntimeEngine`. Clients
(:class:`~hccatom.engines.TritonEngine`) cannot tell it from a real server with the
repository; tests use it to prove remote results equal in-process ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.engines import OnnxRuntimeEngine
from hccatom.serve import pytriton_server
from hccatom.serve.pytriton_server import Ports
from hccatom.serve.triton_repo import MODEL_VERSION, TRITON_DTYPES, check_repository

_NUMPY_OF = {v: k for k, v in TRITON_DTYPES.items()}


def _infer_function(engine: OnnxRuntimeEngine, batched: bool
                    ) -> Callable[[Sequence[Any]], list[dict[str, np.ndarray]]]:
    """A PyTriton callable: the requests Triton's batcher grouped -> one engine run."""

    def infer(requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        if not batched:
            return [engine.run(dict(r.data)) for r in requests]
        sizes = [len(next(iter(r.data.values()))) for r in requests]
        feeds = {s.name: np.concatenate([r.data[s.name] for r in requests])
                 for s in engine.inputs}
        outs = engine.run(feeds)
        bounds = np.cumsum(sizes)[:-1]
        split = {k: np.split(v, bounds) for k, v in outs.items()}
        return [{k: v[i] for k, v in split.items()} for i in range(len(requests))]

    return infer


def _tensors(config_tensors: Any) -> list[Any]:
    from pytriton.model_config import Tensor
    from tritonclient.grpc import model_config_pb2 as pb

    return [Tensor(name=t.name, shape=tuple(t.dims),
                   dtype=np.dtype(_NUMPY_OF[pb.DataType.Name(t.data_type)[len("TYPE_"):]]))
            for t in config_tensors]


class OnnxRepositoryHost:
    """A PyTriton server hosting every model of a repository (ONNX Runtime, CPU).

    Use as a context manager; :attr:`url` is what ``TritonEngine``/``Predictor.from_bundle
    (engines=...)`` take.
    """

    def __init__(self, repository: Path, ports: Ports | None = None, *,
                 threads: int | None = 1) -> None:
        self.repository = Path(repository)
        self.ports = ports or Ports.free()
        self._threads = threads
        self._triton: Any = None

    @property
    def url(self) -> str:
        """``triton://host:grpc_port``."""
        return f"triton://{self.ports.grpc_url}"

    def start(self) -> OnnxRepositoryHost:
        """Load every model and start serving (returns when the models are ready)."""
        from pytriton.model_config import DynamicBatcher, ModelConfig

        configs = check_repository(self.repository)
        engines = {name: OnnxRuntimeEngine(self.repository / name / MODEL_VERSION / "model.onnx",
                                           device="cpu", threads=self._threads)
                   for name in configs}

        def bind(triton: Any) -> None:
            for name, cfg in configs.items():
                batched = cfg.max_batch_size > 0
                batcher = DynamicBatcher(max_queue_delay_microseconds=(
                    cfg.dynamic_batching.max_queue_delay_microseconds))
                triton.bind(
                    model_name=name, infer_func=_infer_function(engines[name], batched),
                    inputs=_tensors(cfg.input), outputs=_tensors(cfg.output),
                    config=ModelConfig(batching=batched,
                                       max_batch_size=max(cfg.max_batch_size, 1),
                                       batcher=batcher),
                    strict=True,
                )

        self._triton = pytriton_server.start_and_run(self.ports, bind)
        return self

    def stop(self) -> None:
        """Stop the server (in-flight requests finish first)."""
        if self._triton is not None:
            self._triton.stop()
            self._triton = None

    def __enter__(self) -> OnnxRepositoryHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
