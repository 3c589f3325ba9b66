"""Grad-CAM (export extra): shape, scaling, and agreement with a hand-made case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.export
torch = pytest.importorskip("torch", reason="Grad-CAM needs the export extra (torch)")


def test_grad_cam_shapes_and_scaling() -> None:
    from hccatom.export.selection_gradcam import grad_cam
    from hccatom.export.selection_model import SelectionModel, init_random
    from hccatom.export.selection_onnx import example_inputs

    model = init_random(SelectionModel("tiny"), seed=1)
    cam = grad_cam(model, example_inputs(model.size, 2, seed=4))
    assert cam.shape == (2, 2, 14, 14)
    assert (cam >= 0).all() and (cam <= 1).all()
    for b in range(2):
        for k in range(2):
            assert cam[b, k].max() in (0.0, 1.0)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_grad_cam_matches_a_computation_by_hand() -> None:
    """The CAM recomputed from the last block's output by hand (its gradient through the
    final norm, the token mean and the head): checks the hook, the token slicing (class
    tokens dropped, arterial then portal) and the grid layout."""
    from hccatom.export.selection_gradcam import grad_cam
    from hccatom.export.selection_model import SelectionModel, init_random
    from hccatom.export.selection_onnx import example_inputs

    model = init_random(SelectionModel("tiny"), seed=2)
    inputs = example_inputs(model.size, 1, seed=6)
    cam = grad_cam(model, inputs)
    acts: dict[str, torch.Tensor] = {}
    h = model.transformer.encoder.layer[-1].register_forward_hook(
        lambda m, a, o: acts.setdefault("a", o.detach()))
    with torch.no_grad():
        model(**inputs)
    h.remove()
    a = acts["a"][0].clone().requires_grad_(True)
    normed = model.transformer.encoder.encoder_norm(a.unsqueeze(0))
    model.head(normed.mean(dim=1)).sum().backward()
    n_phase = 1 + model.size.patches_per_phase
    assert a.grad is not None
    w = a.grad[: 2 * n_phase].mean(dim=0)
    ref = torch.relu((a.detach()[: 2 * n_phase] * w).sum(-1))
    for k in range(2):
        patches = ref[k * n_phase + 1:(k + 1) * n_phase].reshape(14, 14).numpy()
        np.testing.assert_allclose(cam[0, k], patches / patches.max(), atol=1e-6)


def test_cli_explain_writes_gradcam_and_rollout(explain_bundle: Path, tmp_path: Path) -> None:
    """`hccatom explain --checkpoint`: Grad-CAM of a tiny checkpoint on the demo patient,
    beside the explain bundle's rollout (a different, demo-size model: 7 x 7 patches)."""
    import json

    from hccatom.cli import main
    from hccatom.ct_io import write_volume
    from hccatom.demo import demo_case
    from hccatom.export.selection_model import SelectionModel, init_random

    ckpt = tmp_path / "tace.pth"
    torch.save(init_random(SelectionModel("tiny"), seed=3).state_dict(), ckpt)
    ct, clinical, _ = demo_case(0)
    art = write_volume(ct["arterial"], tmp_path / "art.nii.gz")
    por = write_volume(ct["portal"], tmp_path / "por.nii.gz")
    cj = tmp_path / "clinical.json"
    cj.write_text(json.dumps(clinical.model_dump(mode="json")))
    out = tmp_path / "out"
    code = main(["explain", "--checkpoint", str(ckpt), "--cohort", "TACE", "--size", "tiny",
                 "--bundle", str(explain_bundle), "--arterial", str(art), "--portal", str(por),
                 "--clinical", str(cj), "--out", str(out)])
    assert code == 0
    record = json.loads((out / "gradcam_tace.json").read_text())
    assert np.asarray(record["gradcam"]["arterial"]).shape == (14, 14)
    assert np.asarray(record["rollout"]["portal"]).shape == (7, 7)  # the bundle's model
    assert 0.0 < record["checkpoint_score"] < 1.0
    if (out / "gradcam_tace.png").exists():
        assert (out / "gradcam_tace.png").stat().st_size > 5_000
