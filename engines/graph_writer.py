"""A minimal ONNX model writer (protobuf wire format by hand), so the runtime can build the
small helper graphs of device-resident segmentation without importing ``onnx``.

ONNX Runtime has no graph-building API, and the runtime must not depend on ``onnx``
(DEVELOPERS.md). The helper graphs (tile slicing, weighting, accumulation, argmax) are tiny,
so this module writes ``ModelProto`` bytes directly: nodes with int / ints / float / string /
tensor attributes, typed graph inputs and outputs with static or symbolic dimensions, and
initializers. ``tests/test_graph_writer.py`` checks the output with ``onnx.checker`` (export
extra) and runs it in ONNX Runtime.

Field numbers follow ``onnx/onnx.proto`` (proto2; repeated scalars written unpacked).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

IR_VERSION = 8
OPSET = 17

_ELEM_TYPES: dict[str, int] = {
    "float32": 1, "uint8": 2, "int8": 3, "int32": 6, "int64": 7, "bool": 9,
    "float16": 10, "float64": 11,
}

Dim = int | str


def elem_type(dtype: str | np.dtype | type) -> int:
    """ONNX ``TensorProto.DataType`` number of a numpy dtype."""
    name = np.dtype(dtype).name
    if name not in _ELEM_TYPES:
        raise ValueError(f"dtype {name} is not supported by the graph writer")
    return _ELEM_TYPES[name]


# --- wire format ------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 two's complement, 10 bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _int(number: int, value: int) -> bytes:
    return _key(number, 0) + _varint(int(value))


def _bytes(number: int, value: bytes) -> bytes:
    return _key(number, 2) + _varint(len(value)) + value


def _str(number: int, value: str) -> bytes:
    return _bytes(number, value.encode("utf-8"))


def _float(number: int, value: float) -> bytes:
    return _key(number, 5) + struct.pack("<f", float(value))


# --- messages ---------------------------------------------------------------------------
def tensor_proto(name: str, array: np.ndarray) -> bytes:
    """``TensorProto`` with raw little-endian data."""
    arr = np.asarray(array, order="C")  # keeps 0-d arrays scalar (ascontiguousarray would not)
    out = b"".join(_int(1, d) for d in arr.shape)
    out += _int(2, elem_type(arr.dtype))
    out += _str(8, name)
    out += _bytes(9, arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return out


def _attribute(name: str, value: object) -> bytes:
    out = _str(1, name)
    if isinstance(value, int | np.integer):  # bool is an int
        return out + _int(3, int(value)) + _int(20, 2)
    if isinstance(value, float):
        return out + _float(2, value) + _int(20, 1)
    if isinstance(value, str):
        return out + _bytes(4, value.encode("utf-8")) + _int(20, 3)
    if isinstance(value, np.ndarray):
        return out + _bytes(5, tensor_proto("", value)) + _int(20, 4)
    if isinstance(value, list | tuple):
        if all(isinstance(v, int | np.integer) for v in value):
            return out + b"".join(_int(8, int(v)) for v in value) + _int(20, 7)
        if all(isinstance(v, float) for v in value):
            return out + b"".join(_float(7, v) for v in value) + _int(20, 6)
    raise TypeError(f"attribute {name!r}: unsupported value {value!r}")


def _value_info(name: str, dtype: str, shape: Sequence[Dim]) -> bytes:
    dims = b"".join(
        _bytes(1, _int(1, d) if isinstance(d, int) else _str(2, d)) for d in shape
    )
    tensor_type = _int(1, elem_type(dtype)) + _bytes(2, dims)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


@dataclass
class Graph:
    """Collects nodes, inputs, outputs and initializers; :meth:`to_bytes` writes the model.

    ``node`` returns the output names, so graphs read as chains of calls::

        g = Graph("double")
        x = g.input("x", "float32", ["n"])
        (y,) = g.node("Add", [x, x])
        g.output(y, "float32", ["n"])
    """

    name: str
    _nodes: list[bytes] = field(default_factory=list)
    _inputs: list[bytes] = field(default_factory=list)
    _outputs: list[bytes] = field(default_factory=list)
    _inits: list[bytes] = field(default_factory=list)
    _count: int = 0
    ops: set[str] = field(default_factory=set)
    """Operator types used (for the CUDA-kernel check in the docs and tests)."""

    def fresh(self, hint: str) -> str:
        """A new unique value name."""
        self._count += 1
        return f"{hint}_{self._count}"

    def input(self, name: str, dtype: str, shape: Sequence[Dim]) -> str:
        """Declare a graph input."""
        self._inputs.append(_value_info(name, dtype, shape))
        return name

    def output(self, name: str, dtype: str, shape: Sequence[Dim]) -> str:
        """Declare a graph output (``name`` must be produced by a node)."""
        self._outputs.append(_value_info(name, dtype, shape))
        return name

    def const(
        self, array: np.ndarray | np.generic | Sequence[int] | int, dtype: str = "int64"
    ) -> str:
        """An initializer holding ``array`` (numpy values keep their dtype; Python ints and
        lists become ``dtype``, int64 by default)."""
        if isinstance(array, np.ndarray | np.generic):
            arr = np.asarray(array)
        else:
            arr = np.asarray(array, dtype=dtype)
        name = self.fresh("const")
        self._inits.append(tensor_proto(name, arr))
        return name

    def node(
        self, op: str, inputs: Sequence[str], n_out: int = 1, *, outputs: Sequence[str] = (),
        **attrs: object,
    ) -> list[str]:
        """Add ``op`` reading ``inputs`` (``""`` = optional input left out)."""
        outs = list(outputs) or [self.fresh(op.lower()) for _ in range(n_out)]
        body = b"".join(_str(1, i) for i in inputs)
        body += b"".join(_str(2, o) for o in outs)
        body += _str(3, self.fresh(f"n_{op}"))
        body += _str(4, op)
        body += b"".join(_bytes(5, _attribute(k, v)) for k, v in attrs.items())
        self._nodes.append(body)
        self.ops.add(op)
        return outs

    def to_bytes(self, producer: str = "hccatom") -> bytes:
        """Serialized ``ModelProto`` (IR version 8, default-domain opset 17)."""
        graph = b"".join(_bytes(1, n) for n in self._nodes)
        graph += _str(2, self.name)
        graph += b"".join(_bytes(5, t) for t in self._inits)
        graph += b"".join(_bytes(11, i) for i in self._inputs)
        graph += b"".join(_bytes(12, o) for o in self._outputs)
        opset = _str(1, "") + _int(2, OPSET)
        return _int(1, IR_VERSION) + _str(2, producer) + _bytes(7, graph) + _bytes(8, opset)
