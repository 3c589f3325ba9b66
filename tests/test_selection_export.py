"""ONNX export of SELECTION: names, dynamic batch, parity report, fused graph, CLI, failures."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.export
torch = pytest.importorskip("torch")

from hccatom.engines import OnnxRuntimeEngine, TensorSpec  # noqa: E402
from hccatom.errors import ExportError, ParityError  # noqa: E402
from hccatom.export import selection_cli  # noqa: E402
from hccatom.export import selection_onnx as so  # noqa: E402
from hccatom.export.selection_model import SelectionModel, init_random  # noqa: E402

COHORTS = ("TACE", "HAIC", "TC", "HC")


def _tiny(seed: int, fusion: str = "paper") -> SelectionModel:
    return init_random(SelectionModel("tiny", fusion=fusion), seed=seed).eval()  # type: ignore[arg-type]


def _numpy(inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in inputs.items()}


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    selection_cli.configure_parser(parser)
    return selection_cli.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[SelectionModel, Path]:
    """A tiny TACE model saved the authors' way (module. prefix) and exported by the CLI."""
    tmp = tmp_path_factory.mktemp("single")
    model = _tiny(seed=11)
    ckpt = tmp / "tace.pth"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, ckpt)
    assert _cli(["--checkpoint", str(ckpt), "--cohort", "tace", "--size", "tiny",
                 "--out", str(tmp / "out")]) == 0
    return model, tmp / "out"


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, SelectionModel], Path]:
    tmp = tmp_path_factory.mktemp("fused")
    models = {c: _tiny(seed=20 + i) for i, c in enumerate(COHORTS)}
    args = []
    for c, m in models.items():
        path = tmp / f"{c}.safetensors" if c == "HC" else tmp / f"{c}.pt"
        if c == "HC":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
        else:
            torch.save({"state_dict": m.state_dict()}, path)
        args.append(f"{c}={path}")
    assert _cli(["--fused", *args, "--size", "tiny", "--out", str(tmp / "out")]) == 0
    return models, tmp / "out"


def test_single_graph_interface(single: tuple[SelectionModel, Path]) -> None:
    _, out = single
    engine = OnnxRuntimeEngine(out / "selection_tace.onnx", device="cpu")
    assert engine.inputs == (
        TensorSpec("arterial", "float32", ("batch", 3, 224, 224)),
        TensorSpec("portal", "float32", ("batch", 3, 224, 224)),
        TensorSpec("lab", "float32", ("batch", 8)),
        TensorSpec("demo", "float32", ("batch", 6)),
        TensorSpec("iv", "float32", ("batch", 6)),
    )
    assert [(o.name, o.dtype, o.shape[1:]) for o in engine.outputs] == [
        ("logit", "float32", (1,)), ("score", "float32", (1,))
    ]
    assert isinstance(engine.outputs[0].shape[0], str)  # dynamic batch
    assert engine.metadata["hccatom.cohorts"] == "TACE"
    assert engine.metadata["hccatom.fusion"] == "paper"


def test_single_report(single: tuple[SelectionModel, Path]) -> None:
    _, out = single
    report = json.loads((out / "selection_tace.parity.json").read_text())
    parity = report["parity"]
    assert parity["passed"] is True and parity["tolerance"] == 1e-5
    assert parity["compared_output"] == "score"
    assert [b["batch"] for b in parity["batches"]] == [1, 4]
    assert parity["max_abs_diff"] <= 1e-5
    assert all(b["score"]["shape"] == [b["batch"], 1] for b in parity["batches"])
    assert report["opset"] >= 17 and report["fusion"] == "paper"
    assert report["size"]["name"] == "tiny" and report["size"]["hidden"] == 64
    assert report["inputs"]["arterial"] == ["batch", 3, 224, 224]
    assert {"torch", "onnxruntime", "onnx"} <= set(report["versions"])
    assert "dynamo=True" in report["exporter"]
    assert len(report["checkpoints_sha256"]["TACE"]) == 64
    assert report["model_sha256"] == so.file_sha256(out / "selection_tace.onnx")


def test_onnx_matches_torch_and_batch_is_per_sample(
    single: tuple[SelectionModel, Path],
) -> None:
    model, out = single
    engine = OnnxRuntimeEngine(out / "selection_tace.onnx", device="cpu")
    inp = so.example_inputs(model.size, 3, seed=99)
    batched = engine.run(_numpy(inp))
    with torch.no_grad():
        ref = torch.sigmoid(model(*inp.values())).numpy()
    np.testing.assert_allclose(batched["score"], ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(batched["score"], 1 / (1 + np.exp(-batched["logit"])), atol=1e-6)
    for i in range(3):
        one = engine.run(_numpy({k: v[i:i + 1] for k, v in inp.items()}))
        np.testing.assert_allclose(one["score"], batched["score"][i:i + 1], atol=1e-6, rtol=0)


def test_fused_graph_equals_separate_models(
    fused: tuple[dict[str, SelectionModel], Path],
) -> None:
    models, out = fused
    engine = OnnxRuntimeEngine(out / "selection_fused.onnx", device="cpu")
    assert [o.name for o in engine.outputs] == ["scores", "logits"]
    assert engine.outputs[0].shape[1] == 4
    assert engine.metadata["hccatom.cohorts"] == "TACE,HAIC,TC,HC"
    inp = so.example_inputs(models["TACE"].size, 2, seed=5)
    scores = engine.run(_numpy(inp))["scores"]
    assert scores.shape == (2, 4)
    for j, cohort in enumerate(COHORTS):
        with torch.no_grad():
            ref = torch.sigmoid(models[cohort](*inp.values()))[:, 0].numpy()
        np.testing.assert_allclose(scores[:, j], ref, atol=1e-5, rtol=0, err_msg=cohort)
    report = json.loads((out / "selection_fused.parity.json").read_text())
    assert report["parity"]["passed"] and report["parity"]["compared_output"] == "scores"
    assert report["cohorts"] == list(COHORTS) and set(report["checkpoints_sha256"]) == set(COHORTS)
    # the four models really differ, so a mixed-up order would show
    assert np.ptp(scores[0]) > 1e-4


def test_image_only_export_ignores_clinical(tmp_path: Path) -> None:
    model = _tiny(seed=3, fusion="image_only")
    result = so.export_selection(model, tmp_path, "HAIC", exporter="legacy")
    assert result.report["fusion"] == "image_only" and "dynamo=False" in result.report["exporter"]
    engine = OnnxRuntimeEngine(result.model_path, device="cpu")
    inp = _numpy(so.example_inputs(model.size, 2, seed=1))
    moved = {**inp, "lab": inp["lab"] + 5.0, "iv": inp["iv"] - 5.0}
    np.testing.assert_array_equal(engine.run(inp)["score"], engine.run(moved)["score"])
    assert engine.metadata["hccatom.fusion"] == "image_only"


def test_parity_failure_raises_with_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Export a graph whose head differs from the PyTorch model: export must fail."""
    model = _tiny(seed=4)
    real_export = so._onnx_export

    def export_tampered(module: torch.nn.Module, *args: object) -> None:
        tampered = copy.deepcopy(module)
        with torch.no_grad():
            tampered.model.head.bias += 0.05
        real_export(tampered, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(so, "_onnx_export", export_tampered)
    with pytest.raises(ParityError) as err:
        so.export_selection(model, tmp_path, "TC", exporter="legacy")
    msg = str(err.value)
    assert "> tolerance 1e-05" in msg and "batch 1: max" in msg and "batch 4: max" in msg
    report = json.loads((tmp_path / "selection_tc.parity.json").read_text())
    assert report["parity"]["passed"] is False
    assert report["parity"]["max_abs_diff"] > 1e-3
    assert not (tmp_path / "selection_tc.onnx").exists()


def test_cli_bad_input_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], single: tuple[SelectionModel, Path]
) -> None:
    model, _ = single
    ckpt = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), ckpt)
    assert _cli(["--checkpoint", str(ckpt), "--size", "tiny", "--out", str(tmp_path)]) == 2
    assert "--cohort is required" in capsys.readouterr().err
    code = _cli(["--checkpoint", str(ckpt), "--cohort", "HC", "--size", "small",
                 "--out", str(tmp_path)])
    assert code == 2
    assert "looks like size 'tiny'" in capsys.readouterr().err
    assert _cli(["--fused", f"TACE={ckpt}", f"TACE={ckpt}", f"TC={ckpt}", f"HC={ckpt}",
                 "--size", "tiny", "--out", str(tmp_path)]) == 2
    assert "twice" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.onnx"))


def test_api_rejects_bad_requests() -> None:
    model = _tiny(seed=1)
    with pytest.raises(ExportError, match="cohort"):
        so.export_selection(model, "/nonexistent", "RFA")
    with pytest.raises(ExportError, match="opset"):
        so.export_selection(model, "/nonexistent", "TACE", opset=13)
    with pytest.raises(ExportError, match="exactly the cohorts"):
        so.FusedSelection({"TACE": model})


@pytest.mark.slow
def test_paper_size_parity(tmp_path: Path) -> None:
    model = init_random(SelectionModel("paper"), seed=1).eval()
    result = so.export_selection(model, tmp_path, "TACE")
    assert result.report["size"]["hidden"] == 768 and result.report["size"]["layers"] == 12
    assert result.max_abs_diff <= 1e-5
    assert [b["batch"] for b in result.report["parity"]["batches"]] == [1, 4]
    assert "external_data" not in result.report  # ~400 MB fits one file
