"""The "explain" twin of an exported SELECTION graph (build time: needs ``onnx``).

The fast graph computes every attention map as an explicit ``Softmax`` (the exporters
decompose scaled-dot-product attention), but keeps them internal. The explain graph is the
same graph with, per attention map, one extra output: the map averaged over heads,
``(B, N_query, N_key)``. Nothing else changes, so its score is the fast graph's score
(checked by :func:`check_explain_graph`), and the fast graph stays as it was.

Outputs are named ``attn.<layer>.<map>``: ``ii`` (image->image), ``it`` (image queries,
clinical keys), ``tt`` (clinical->clinical) and ``ti`` (clinical queries, image keys) for
the multimodal blocks, ``all`` for the plain blocks. The runtime
(:mod:`hccatom.explain.rollout`) forms the joint token-by-token matrix per layer and the
rollout from them; the graph's metadata ``hccatom.explain`` records the layout as JSON.

The maps are found in topological order: a SELECTION graph runs, per multimodal block, the
four attentions in the order image->image, image->clinical, clinical->clinical,
clinical->image, then one per plain block. The count must match the model's size and
fusion, else the export fails rather than guessing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.errors import ExportError, ParityError
from hccatom.export.selection_sizes import Fusion, SelectionSize

EXPLAIN_SUFFIX = ".explain.onnx"
MULTIMODAL_MAPS: tuple[str, ...] = ("ii", "it", "tt", "ti")


def explain_path(fast: Path) -> Path:
    """``selection_tace.onnx`` -> ``selection_tace.explain.onnx`` (same folder)."""
    return fast.with_name(fast.name[: -len(".onnx")] + EXPLAIN_SUFFIX)


def attention_layout(size: SelectionSize, fusion: Fusion) -> list[tuple[int, str]]:
    """(layer, map) of every attention of one model, in the order the graph computes them."""
    if fusion == "image_only":
        return [(i, "all") for i in range(size.layers)]
    out: list[tuple[int, str]] = []
    for i in range(size.layers):
        if i < size.multimodal_layers:
            out += [(i, m) for m in MULTIMODAL_MAPS]
        else:
            out.append((i, "all"))
    return out


def layout_metadata(size: SelectionSize, fusion: Fusion) -> dict[str, Any]:
    """What the runtime needs to read the explain outputs (stored as graph metadata)."""
    p = size.patches_per_phase
    return {
        "fusion": fusion,
        "layers": size.layers,
        "multimodal_layers": size.multimodal_layers if fusion == "paper" else 0,
        "tokens_per_phase": 1 + p,
        "patch_grid": [size.image_size // size.patch] * 2,
        "patch_px": size.patch,
        "image_size_px": size.image_size,
        # a list, in token order (a JSON object would be re-ordered by sort_keys)
        "clinical_groups": [["lab", size.n_lab], ["demo", size.n_demo], ["iv", size.n_iv]],
        "maps": [f"attn.{i}.{m}" for i, m in attention_layout(size, fusion)],
    }


def add_explain_outputs(fast: Path, size: SelectionSize, fusion: Fusion,
                        out: Path | None = None) -> Path:
    """Write the explain twin of the single-model graph ``fast``; returns its path."""
    import onnx
    from onnx import helper

    out = out or explain_path(fast)
    proto = onnx.load(str(fast))
    graph = proto.graph
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    layout = attention_layout(size, fusion)
    if len(softmax) != len(layout):
        raise ExportError(
            f"{fast.name}: found {len(softmax)} attention softmaxes, but a {size.name} model "
            f"with fusion {fusion!r} has {len(layout)}; was it exported by hccatom with this "
            "size and fusion?"
        )
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                default=18)
    axes_name = "hccatom_explain_head_axis"
    if opset >= 18:
        graph.initializer.append(onnx.numpy_helper.from_array(
            np.asarray([1], dtype=np.int64), axes_name))
    for node, (layer, kind) in zip(softmax, layout, strict=True):
        name = f"attn.{layer}.{kind}"
        if opset >= 18:
            mean = helper.make_node("ReduceMean", [node.output[0], axes_name], [name],
                                    keepdims=0, name=f"explain_{layer}_{kind}")
        else:
            mean = helper.make_node("ReduceMean", [node.output[0]], [name], axes=[1],
                                    keepdims=0, name=f"explain_{layer}_{kind}")
        graph.node.append(mean)
        graph.output.append(helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, ["batch", None, None]))
    meta = {p.key: p.value for p in proto.metadata_props}
    meta["hccatom.explain"] = json.dumps(layout_metadata(size, fusion), sort_keys=True)
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


def check_explain_graph(fast: Path, explain: Path, feeds: Mapping[str, np.ndarray],
                        score: str = "score", tolerance: float = 1e-6) -> float:
    """Max |score difference| explain vs fast graph (ONNX Runtime CPU); raises
    :class:`ParityError` above ``tolerance`` (the twin must not change the score)."""
    import onnxruntime as ort

    def run(path: Path) -> np.ndarray:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(sess.run([score], dict(feeds))[0])

    diff = float(np.max(np.abs(run(fast) - run(explain))))
    if not diff <= tolerance:
        raise ParityError(f"{explain.name}: scores differ from {fast.name} by {diff:.2e} "
                          f"(> {tolerance:.0e}).")
    return diff


__all__ = [
    "EXPLAIN_SUFFIX",
    "MULTIMODAL_MAPS",
    "add_explain_outputs",
    "attention_layout",
    "check_explain_graph",
    "explain_path",
    "layout_metadata",
]
