"""An engine for one fixed set of input shapes, with CUDA graph capture on the CUDA EP.

ONNX Runtime's CUDA graphs capture a whole run once and replay it; the replay reads and
writes the same device buffers every time, so inputs and outputs must be bound through IO
binding to buffers that never move, bound before the first run (the first run captures the
graph with the addresses bound then). :class:`FixedShapeEngine` owns those buffers: ``run``
copies the feeds into the input buffers, replays, and copies the outputs back. One session
and one set of buffers per engine; a lock serialises runs (a replay owns the buffers), so
one engine is still safe to share across threads.

On the CPU provider the same buffers and binding run without capture, which is how the
tests exercise this code on machines without a GPU.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.engines.base import TensorSpec, check_feeds
from hccatom.engines.onnxruntime_engine import _spec
from hccatom.engines.providers import (
    CPU,
    CUDA,
    CudaOptions,
    check_cuda_graph,
    cuda_provider_options,
    preload_cuda_libraries,
)
from hccatom.errors import EngineError, EngineInputError, EngineUnavailableError


def output_shapes_from_inputs(
    outputs: Sequence[TensorSpec], inputs: Sequence[TensorSpec],
    input_shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, tuple[int, ...]] | None:
    """Output shapes whose symbolic dimensions all appear in the inputs (e.g. ``batch``),
    sized as the fixed input shapes size them; None when any output dimension is open."""
    sizes: dict[str, int] = {}
    for spec in inputs:
        for dim, size in zip(spec.shape, input_shapes[spec.name], strict=True):
            if isinstance(dim, str):
                sizes[dim] = size
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in outputs:
        if not all(isinstance(d, int) or d in sizes for d in spec.shape):
            return None
        shapes[spec.name] = tuple(d if isinstance(d, int) else sizes[d] for d in spec.shape)
    return shapes


class FixedShapeEngine:
    """Run an ONNX model on one fixed set of input shapes; CUDA graphs on ``device="cuda"``.

    Args:
        path: the ``.onnx`` file.
        device: ``"cuda"`` (CUDA EP, graph captured on the first run) or ``"cpu"``.
        fixed: sizes of the model's symbolic dimensions, e.g. ``{"batch": 4}``.
        cuda_options: CUDA EP options; ``enable_cuda_graph`` is forced on for ``cuda``.
        threads: CPU intra-op threads.
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "cuda",
        *,
        fixed: Mapping[str, int] | None = None,
        cuda_options: CudaOptions | None = None,
        threads: int | None = None,
    ) -> None:
        import dataclasses

        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise EngineError(f"model file not found: {self.path}")
        if device not in ("cuda", "cpu"):
            raise EngineUnavailableError(
                f"FixedShapeEngine runs on 'cuda' or 'cpu', not {device!r}"
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
        providers: list[Any]
        if device == "cuda":
            if CUDA not in ort.get_available_providers():
                raise EngineUnavailableError(
                    "device='cuda' needs onnxruntime-gpu (pip install 'hccatom[gpu]')"
                )
            opts = dataclasses.replace(cuda_options or CudaOptions(), enable_cuda_graph=True)
            self.device_id = opts.device_id
            providers = [(CUDA, cuda_provider_options(opts))]
            self.preload = preload_cuda_libraries()
        else:
            self.device_id = 0
            providers = [CPU]
            self.preload = "not needed"
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:
            raise EngineUnavailableError(
                f"onnxruntime could not load {self.path.name} on {device}: {exc}"
            ) from exc
        self._providers = list(self._session.get_providers())
        if device == "cuda" and self._providers[:1] != [CUDA]:
            raise EngineUnavailableError(
                f"CUDA graphs need every node on the CUDA EP; onnxruntime runs {self._providers}"
            )
        self._inputs = tuple(_spec(n, "input") for n in self._session.get_inputs())
        self._outputs = tuple(_spec(n, "output") for n in self._session.get_outputs())
        self.input_shapes = check_cuda_graph(self._inputs, fixed)
        self._lock = threading.Lock()
        where = "cuda" if device == "cuda" else "cpu"
        self._in = {
            s.name: ort.OrtValue.ortvalue_from_shape_and_type(
                list(self.input_shapes[s.name]), np.dtype(s.dtype).type, where, self.device_id)
            for s in self._inputs
        }
        self._binding = self._session.io_binding()
        for name, value in self._in.items():
            self._binding.bind_ortvalue_input(name, value)
        self._where = where
        self.device = device
        self.runs = 0
        # Outputs are bound to fixed buffers BEFORE the first run: on the CUDA EP the first
        # run captures the graph with the output addresses bound then, and later runs replay
        # into those addresses only.
        shapes = output_shapes_from_inputs(self._outputs, self._inputs, self.input_shapes)
        if shapes is None:
            shapes = self._probe_output_shapes(
                source=str(self.path), options=options, device=device,
                cuda_options=cuda_options)
        self.output_shapes: dict[str, tuple[int, ...]] = shapes
        """The fixed shape of every output buffer."""
        self._out: dict[str, Any] = {}
        for spec in self._outputs:
            buf = ort.OrtValue.ortvalue_from_shape_and_type(
                list(self.output_shapes[spec.name]), np.dtype(spec.dtype).type, where,
                self.device_id)
            self._out[spec.name] = buf
            self._binding.bind_ortvalue_output(spec.name, buf)

    @property
    def cuda_graph(self) -> bool:
        """Whether runs are captured once and replayed as a CUDA graph (CUDA EP only)."""
        return self.device == "cuda"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Model inputs, with their fixed shapes."""
        return tuple(TensorSpec(s.name, s.dtype, self.input_shapes[s.name])
                     for s in self._inputs)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Model outputs in graph order."""
        return self._outputs

    @property
    def providers(self) -> list[str]:
        """Providers onnxruntime actually runs this session with."""
        return list(self._providers)

    def _probe_output_shapes(
        self, *, source: str, options: Any, device: str, cuda_options: CudaOptions | None
    ) -> dict[str, tuple[int, ...]]:
        """Output shapes the model's metadata leaves open, from one run on zero inputs in a
        throw-away session (without CUDA graphs: a capture there would pin its buffers)."""
        import dataclasses

        import onnxruntime as ort

        if device == "cuda":
            opts = dataclasses.replace(cuda_options or CudaOptions(), enable_cuda_graph=False)
            providers: list[Any] = [(CUDA, cuda_provider_options(opts))]
        else:
            providers = [CPU]
        probe = ort.InferenceSession(source, options, providers=providers)
        feeds = {s.name: np.zeros(self.input_shapes[s.name], dtype=s.dtype)
                 for s in self._inputs}
        outs = probe.run([s.name for s in self._outputs], feeds)
        del probe
        return {s.name: tuple(int(d) for d in np.shape(o))
                for s, o in zip(self._outputs, outs, strict=True)}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy feeds in, run (replay), copy outputs out. Shapes must be the fixed ones."""
        arrays = check_feeds(self.inputs, feeds)
        with self._lock:
            try:
                for name, arr in arrays.items():
                    self._in[name].update_inplace(arr)
            except Exception as exc:
                raise EngineError(f"could not fill the input buffers of {self.path.name}: "
                                  f"{exc}") from exc
            out = self._replay()
            return {name: np.array(v.numpy(), copy=True) for name, v in out.items()}

    # --- device-resident use: fill the input buffers on the device, read outputs there ------
    @property
    def lock(self) -> threading.Lock:
        """Held by :meth:`run`; a caller using :meth:`input_buffer` and :meth:`replay` holds
        it from filling the inputs until it has read the outputs (they are overwritten by
        the next run)."""
        return self._lock

    def input_buffer(self, name: str) -> Any:
        """The fixed ``OrtValue`` input ``name`` is bound to (bind it as another graph's
        output to fill it without leaving the device)."""
        if name not in self._in:
            raise EngineInputError(f"unknown input {name!r}; this model takes {sorted(self._in)}")
        return self._in[name]

    def replay(self) -> dict[str, Any]:
        """Run on what the input buffers hold now; return the fixed output ``OrtValue``s
        (on the engine's device). Call with :attr:`lock` held."""
        return self._replay()

    def _replay(self) -> dict[str, Any]:
        try:
            self._session.run_with_iobinding(self._binding)
        except Exception as exc:
            raise EngineError(f"onnxruntime failed running {self.path.name}: {exc}") from exc
        self.runs += 1
        return dict(self._out)

    def __repr__(self) -> str:
        return f"FixedShapeEngine({self.path.name!r}, shapes={self.input_shapes})"
