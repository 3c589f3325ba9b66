"""Attention rollout: the explain graph + hccatom.explain.rollout vs a direct PyTorch
computation of the same definition (attention from q/k by hand, joint matrix, rollout).

The regular test uses the ``small`` size (192 hidden, 6 layers, 3 heads) with the paper's
token geometry (224 px, 16 px patches: 2 x 197 image + 20 clinical = 414 tokens) and the
TorchScript exporter; the paper-size model (ViT-B/16, 12 layers, dynamo exporter) runs in
the ``slow`` test.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.export

torch = pytest.importorskip("torch", reason="the rollout reference needs the export extra")
pytest.importorskip("onnx", reason="explain graphs are built with onnx (export extra)")


def _reference(model: Any, inputs: dict[str, Any]) -> tuple[list[Any], Any]:
    """Per-layer joint matrices and the mean-row rollout, from q/k by hand (float64)."""
    from hccatom.export.selection_model import Attention

    seen: list[tuple[Any, Any | None]] = []
    for module in model.modules():
        if isinstance(module, Attention):
            original = module.forward_multimodal

            def record_mm(x: Any, text: Any, _o: Any = original) -> Any:
                seen.append((x, text))
                return _o(x, text)

            module.forward_multimodal = record_mm  # type: ignore[method-assign]
            module.register_forward_pre_hook(lambda m, args: seen.append((args[0], None)))
    with torch.no_grad():
        model(**inputs)
    attns = [m for m in model.modules() if isinstance(m, Attention)]

    def probs(attn: Any, q_in: Any, k_in: Any, q_text: bool, k_text: bool) -> Any:
        q = (attn.query_text if q_text else attn.query)(q_in).double()
        k = (attn.key_text if k_text else attn.key)(k_in).double()
        b, n, h = q.shape
        d = h // attn.heads
        q = q.view(b, n, attn.heads, d).transpose(1, 2)
        k = k.view(b, k.shape[1], attn.heads, d).transpose(1, 2)
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1).mean(dim=1)

    joint = []
    with torch.no_grad():
        for attn, (x, text) in zip(attns, seen, strict=True):
            if text is None:
                joint.append(probs(attn, x, x, False, False))
            else:
                ii, it = probs(attn, x, x, False, False), probs(attn, x, text, False, True)
                tt, ti = probs(attn, text, text, True, True), probs(attn, text, x, True, False)
                joint.append(0.5 * torch.cat([torch.cat([ii, it], 2),
                                              torch.cat([ti, tt], 2)], 1))
        n = joint[0].shape[-1]
        r = torch.eye(n, dtype=torch.float64).expand(joint[0].shape[0], n, n)
        for j in joint:
            a = j + torch.eye(n, dtype=torch.float64)
            r = (a / a.sum(-1, keepdim=True)) @ r
    return joint, r.mean(dim=1)


def _check(size: str, tmp_path: Path, exporter: str) -> None:
    from hccatom.explain.rollout import ExplainLayout, joint_attention, token_relevance
    from hccatom.export.selection_explain import layout_metadata
    from hccatom.export.selection_model import SelectionModel, init_random
    from hccatom.export.selection_onnx import example_inputs, export_selection

    model = init_random(SelectionModel(size), seed=3).eval()
    export_selection(model, tmp_path, "TACE", batches=(1,), explain=True,
                     exporter=exporter)  # type: ignore[arg-type]
    twin = tmp_path / "selection_tace.explain.onnx"
    assert twin.is_file() and (tmp_path / "selection_tace.explain.parity.json").is_file()
    inputs = example_inputs(model.size, 2, seed=5)
    joint_ref, rel_ref = _reference(model, inputs)

    import onnxruntime as ort

    sess = ort.InferenceSession(str(twin), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, {k: v.numpy() for k, v in inputs.items()}),
                   strict=True))
    fast = ort.InferenceSession(str(tmp_path / "selection_tace.onnx"),
                                providers=["CPUExecutionProvider"])
    assert set(o.name for o in fast.get_outputs()) == {"logit", "score"}  # fast graph unchanged
    layout = ExplainLayout.from_metadata(layout_metadata(model.size, "paper"), "test")
    assert layout.n_img + layout.n_txt == 414
    for i, ref in enumerate(joint_ref):
        diff = np.abs(joint_attention(got, i, layout) - ref.numpy()).max()
        assert diff <= 1e-5, f"layer {i}: joint matrix differs by {diff:.2e}"
    rel = token_relevance(got, layout)
    assert np.abs(rel - rel_ref.numpy()).max() <= 1e-5
    np.testing.assert_allclose(rel.sum(axis=1), 1.0, atol=1e-9)
    assert (rel >= 0).all()
    with torch.no_grad():
        score = torch.sigmoid(model(**inputs)).numpy()
    assert np.abs(got["score"] - score).max() <= 1e-5


def test_rollout_matches_pytorch_small(tmp_path: Path) -> None:
    """TorchScript exporter (fast to export); the dynamo exporter runs in the slow test."""
    _check("small", tmp_path, "legacy")


@pytest.mark.slow
def test_rollout_matches_pytorch_paper_size(tmp_path: Path) -> None:
    """ViT-B/16 sizes, the default (dynamo) exporter: ~1-2 min on a 2-core machine."""
    _check("paper", tmp_path, "dynamo")


@pytest.mark.slow
def test_fused_export_with_explain_feeds_the_bundle_writer(tmp_path: Path) -> None:
    """``export_fused(..., explain=True)`` writes one explain twin per cohort beside the
    fused graph; ``build_bundle`` lists them in ``selection.explain`` (~35 s on a loaded
    2-core machine: five exports)."""
    from fixtures.bundle.helpers import SEGMENTATION

    from hccatom.atom import MODELS
    from hccatom.bundle import load_bundle
    from hccatom.bundle.writer import build_bundle
    from hccatom.export.selection_model import SelectionModel, init_random
    from hccatom.export.selection_onnx import export_fused

    models = {c: init_random(SelectionModel("tiny"), seed=i).eval()
              for i, c in enumerate(MODELS)}
    fused_dir = tmp_path / "fused"
    export_fused(models, fused_dir, batches=(1,), explain=True,
                 exporter="legacy")  # type: ignore[arg-type]
    assert sorted(p.name for p in fused_dir.glob("*.explain.onnx")) == sorted(
        f"selection_{c.lower()}.explain.onnx" for c in MODELS)
    out = build_bundle(tmp_path / "bundle", segmentation=SEGMENTATION, fused=fused_dir,
                       name="t", version="1", thresholds=dict.fromkeys(MODELS, 0.5),
                       verify=False)
    with load_bundle(out) as b:
        spec = b.manifest.selection.explain
        assert spec is not None and sorted(spec.graphs) == sorted(MODELS)
        assert spec.clinical_reference is None
