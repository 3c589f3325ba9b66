"""The engine protocol: what the SDK needs from anything that runs a model file.

An engine knows its input and output tensors (:class:`TensorSpec`), which execution
providers actually run it, and maps feeds to outputs. ``run`` must be safe to call from
several threads at once, so that one loaded engine can serve a multi-threaded viewer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from hccatom.errors import EngineInputError

Dim = int | str
"""One dimension of a tensor shape: a fixed size, or a symbolic name such as ``"batch"``."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype (numpy name, e.g. ``"float32"``) and shape of one model input or output.

    Shape entries are ints for fixed sizes and strings for symbolic (dynamic) dimensions.
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def describe(self) -> str:
        """Human-readable form such as ``float32[batch, 3, 224, 224]``."""
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"

    def check(self, value: object, bindings: dict[str, int] | None = None) -> np.ndarray:
        """Return ``value`` as an array of this spec or raise :class:`EngineInputError`.

        ``bindings`` maps symbolic dimension names to sizes already seen in other inputs of
        the same call; a symbolic dimension must have one size across all inputs (e.g. the
        same batch size everywhere). It is updated in place.
        """
        where = f"input {self.name!r} (expected {self.describe()})"
        if not isinstance(value, np.ndarray):
            raise EngineInputError(
                f"{where}: got {type(value).__name__}, need a numpy array; "
                "convert with numpy.asarray(..., dtype=...) first"
            )
        if value.dtype != np.dtype(self.dtype):
            raise EngineInputError(
                f"{where}: got dtype {value.dtype}; cast it with .astype({self.dtype!r})"
            )
        if value.ndim != self.rank:
            raise EngineInputError(
                f"{where}: got {value.ndim} dimensions {tuple(value.shape)}, need {self.rank}"
            )
        seen = bindings if bindings is not None else {}
        for axis, (want, got) in enumerate(zip(self.shape, value.shape, strict=True)):
            if isinstance(want, int):
                if want != got:
                    raise EngineInputError(
                        f"{where}: axis {axis} has size {got}, need {want} "
                        f"(got shape {tuple(value.shape)})"
                    )
            elif got < 1:
                raise EngineInputError(f"{where}: axis {axis} ({want}) is empty")
            elif want in seen and seen[want] != got:
                raise EngineInputError(
                    f"{where}: axis {axis} ({want}) has size {got} but another input "
                    f"has {want} = {seen[want]}; all inputs must agree"
                )
            else:
                seen[want] = got
        return value


def check_feeds(
    specs: Sequence[TensorSpec], feeds: Mapping[str, object]
) -> dict[str, np.ndarray]:
    """Validate ``feeds`` against ``specs`` (all present, none unknown, dtypes and shapes).

    Returns C-contiguous arrays keyed by input name, in the order of ``specs``.
    """
    if not isinstance(feeds, Mapping):
        raise EngineInputError(
            f"feeds must be a mapping of input name to array, got {type(feeds).__name__}"
        )
    names = [s.name for s in specs]
    unknown = sorted(set(feeds) - set(names))
    if unknown:
        raise EngineInputError(
            f"unknown input(s) {unknown}; this model takes "
            + ", ".join(f"{s.name}: {s.describe()}" for s in specs)
        )
    bindings: dict[str, int] = {}
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name not in feeds:
            raise EngineInputError(
                f"missing input {spec.name!r} (expected {spec.describe()})"
            )
        arr = spec.check(feeds[spec.name], bindings)
        out[spec.name] = np.ascontiguousarray(arr)
    return out


@runtime_checkable
class Engine(Protocol):
    """Something that runs one model file. ``run`` is safe to call from several threads."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs, in graph order."""
        ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs, in graph order."""
        ...

    @property
    def providers(self) -> list[str]:
        """Execution providers actually in use, most preferred first."""
        ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on ``feeds`` (input name -> array); return output name -> array."""
        ...


@dataclass
class TransferStats:
    """Bytes that cross (or, on the CPU provider, would cross) the host <-> device bus.

    ``host_to_device`` counts every array handed in from host memory (numpy feeds, uploads);
    ``constant_inputs`` is the part of it that is small graph constants (tile starts, pad
    widths, the Gaussian weight map), reported apart so that bounds can name it.
    ``device_to_host`` counts every array fetched back into host memory. On the CPU
    provider nothing moves, but the same calls are counted, so the accounting of a GPU run
    is tested on the CPU.
    """

    host_to_device: int = 0
    device_to_host: int = 0
    constant_inputs: int = 0
    calls: int = 0

    def __add__(self, other: TransferStats) -> TransferStats:
        return TransferStats(
            self.host_to_device + other.host_to_device,
            self.device_to_host + other.device_to_host,
            self.constant_inputs + other.constant_inputs,
            self.calls + other.calls,
        )

    def __sub__(self, other: TransferStats) -> TransferStats:
        return TransferStats(
            self.host_to_device - other.host_to_device,
            self.device_to_host - other.device_to_host,
            self.constant_inputs - other.constant_inputs,
            self.calls - other.calls,
        )


class TransferMeter:
    """A thread-safe running :class:`TransferStats` (one per engine, one per caller's job)."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._stats = TransferStats()

    def add(
        self, h2d: int = 0, d2h: int = 0, *, constant: bool = False, calls: int = 0
    ) -> None:
        """Count ``h2d`` bytes up (``constant``: graph constants), ``d2h`` down, ``calls``."""
        with self._lock:
            s = self._stats
            self._stats = TransferStats(
                s.host_to_device + h2d, s.device_to_host + d2h,
                s.constant_inputs + (h2d if constant else 0), s.calls + calls,
            )

    def snapshot(self) -> TransferStats:
        """The counts so far (a copy)."""
        with self._lock:
            return self._stats


@runtime_checkable
class MeteredEngine(Engine, Protocol):
    """An :class:`Engine` that counts the bytes it moves (ONNX Runtime: host <-> device;
    Triton: client <-> server), in :meth:`transfer_stats` and in a caller's ``meter``."""

    def run(
        self, feeds: Mapping[str, np.ndarray], *, meter: TransferMeter | None = None
    ) -> dict[str, np.ndarray]:
        """Run as :meth:`Engine.run`; also count this call's bytes into ``meter``."""
        ...

    def transfer_stats(self) -> TransferStats:
        """Bytes moved by this engine so far (all calls, all threads)."""
        ...
