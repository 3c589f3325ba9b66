"""Seconds-long check that the CUDA provider runs kernels here, before the long benchmark.

The carried CUDA EP keeps only one GPU architecture's code (``strip_fatbin.py``); if that
did not suit this GPU, the benchmark would fail minutes in. This runs a tiny graph (a Conv
from cuDNN, then ONNX Runtime's own kernels: Softmax, Mul, ReduceMax, ArgMax, Cast) on the
CUDA provider and on the CPU provider and compares them. Exit 0: the CUDA EP placed the
nodes and agrees with the CPU; exit 1 otherwise, saying so. Then, for information, the same
graph as a captured CUDA graph (``FixedShapeEngine``), replayed on a second input. ``--provider
CPUExecutionProvider`` exercises the script itself on a machine without a GPU.

    python3 benchmarks/gpu/cuda_smoke.py
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def tiny_model() -> bytes:
    """Conv3d(1->3) -> Softmax -> *2 -> (ReduceMax, ArgMax -> Cast uint8), serialized."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(3, 1, 3, 3, 3)).astype(np.float32), "w")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 6),
        helper.make_node("Softmax", ["c"], ["p"], axis=1),
        helper.make_node("Mul", ["p", "two"], ["p2"]),
        helper.make_node("ReduceMax", ["p2"], ["m"], keepdims=0),
        helper.make_node("ArgMax", ["p2"], ["a"], axis=1, keepdims=0),
        helper.make_node("Cast", ["a"], ["labels"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes, "cuda_smoke",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 16, 16])],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("labels", TensorProto.UINT8, [1, 16, 16, 16])],
        initializer=[w, two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--provider", default="CUDAExecutionProvider")
    args = p.parse_args(argv)
    import onnxruntime as ort

    model = tiny_model()
    x = np.random.default_rng(1).normal(size=(1, 1, 16, 16, 16)).astype(np.float32)
    if args.provider not in ort.get_available_providers():
        print(f"cuda_smoke: {args.provider} is not in this onnxruntime "
              f"({ort.__version__}: {ort.get_available_providers()})", file=sys.stderr)
        return 1
    if args.provider == "CUDAExecutionProvider":  # torch-free process: as the SDK does it
        from hccatom.engines.providers import preload_cuda_libraries

        print(f"cuda_smoke: preload_cuda_libraries(): {preload_cuda_libraries()}",
              file=sys.stderr)
    try:
        sess = ort.InferenceSession(model, providers=[args.provider])
        got = sess.run(None, {"x": x})
    except Exception as exc:  # a missing cubin for this GPU surfaces here
        print(f"cuda_smoke: {args.provider} failed: {type(exc).__name__}: {exc}\n"
              "  if this says 'no kernel image is available', the CUDA EP lacks this GPU's "
              "architecture: re-run prepare.sh with CUDA_ARCH=<sm> or CUDA_ARCH=all",
              file=sys.stderr)
        return 1
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    used = sess.get_providers()
    same_labels = float(np.mean(got[1] == ref[1]))
    diff = abs(float(got[0]) - float(ref[0]))
    ok = used[0] == args.provider and same_labels >= 0.999 and diff < 1e-3
    print(f"cuda_smoke: providers {used}; label agreement with the CPU {same_labels:.4f}, "
          f"|max diff| {diff:.2e}: {'ok' if ok else 'FAILED'}", file=sys.stderr)
    cuda_graph_check(model, ref, x, args.provider)
    return 0 if ok else 1


def cuda_graph_check(model: bytes, ref: list[np.ndarray], x: np.ndarray, provider: str) -> bool:
    """Informational: the same graph through ``FixedShapeEngine`` (a captured CUDA graph on
    the CUDA EP), replayed on a second input; only ``--cuda-graphs`` runs depend on it."""
    import tempfile
    from pathlib import Path

    import onnxruntime as ort

    from hccatom.engines.fixed_shape_engine import FixedShapeEngine

    device = "cuda" if provider == "CUDAExecutionProvider" else "cpu"
    x2 = np.ascontiguousarray(x[..., ::-1])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "cuda_smoke.onnx"
            path.write_bytes(model)
            eng = FixedShapeEngine(path, device=device)
            first = eng.run({"x": x})
            second = eng.run({"x": x2})  # a replay on CUDA
        ref2 = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x2})
        ok = all(float(np.mean(got["labels"] == want[1])) >= 0.999
                 and abs(float(got["m"]) - float(want[0])) < 1e-3
                 for got, want in ((first, ref), (second, ref2)))
    except Exception as exc:
        print(f"cuda_smoke: CUDA graph ({device}) failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return False
    how = "captured run + replay" if device == "cuda" else "fixed buffers, nothing captured"
    print(f"cuda_smoke: CUDA graph ({device}, FixedShapeEngine, {how}): "
          f"{'ok' if ok else 'FAILED (differs from the CPU)'}", file=sys.stderr)
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
