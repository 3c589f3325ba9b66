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
