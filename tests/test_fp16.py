"""fp16 graphs beside fp32 (issue 11, section 2): export gate, bundle record, runtime choice.

Everything runs on ONNX Runtime's CPU provider: fp16 graphs are allowed there when forced,
so the very graph a GPU would run is exercised here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hccatom.errors import BundleFormatError, InputError
from hccatom.precision import check_precision, choose_graph, default_precision

FIXTURES = Path(__file__).parent / "fixtures"
NNUNET_MODEL = FIXTURES / "nnunet" / "model" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


# --- runtime choice (no extra needed) -----------------------------------------------------
def test_default_precision_by_device() -> None:
    assert default_precision("cuda", [CUDA, CPU]) == "fp16"
    assert default_precision("auto", [CUDA, CPU]) == "fp16"
    assert default_precision("auto", [CPU]) == "fp32"
    assert default_precision("cpu", [CUDA, CPU]) == "fp32"
    assert default_precision("tensorrt", [TRT, CUDA, CPU]) == "fp32"  # TRT builds its own fp16
    assert default_precision("auto", [TRT, CUDA, CPU]) == "fp32"


def test_choose_graph_rules() -> None:
    kw: dict[str, Any] = {"what": "fold 0"}
    assert choose_graph("a.onnx", "a.fp16.onnx", requested=None, preferred="fp16", **kw) == (
        "a.fp16.onnx", "fp16")
    assert choose_graph("a.onnx", None, requested=None, preferred="fp16", **kw) == (
        "a.onnx", "fp32")
    assert choose_graph("a.onnx", "a.fp16.onnx", requested=None, preferred="fp32", **kw) == (
        "a.onnx", "fp32")
    assert choose_graph("a.onnx", "a.fp16.onnx", requested="fp32", preferred="fp16", **kw) == (
        "a.onnx", "fp32")
    assert choose_graph("a.onnx", "a.fp16.onnx", requested="fp16", preferred="fp32", **kw) == (
        "a.fp16.onnx", "fp16")
    with pytest.raises(BundleFormatError, match="no fp16 graph for fold 0"):
        choose_graph("a.onnx", None, requested="fp16", preferred="fp32", **kw)
    assert check_precision(None) is None
    with pytest.raises(InputError):
        check_precision("bf16")


def test_fp32_only_entries_serialise_as_before() -> None:
    """Older runtimes (extra fields forbidden in the spec) still read fp32-only bundles."""
    from pydantic import ValidationError

    from hccatom.bundle.manifest import SelectionModel
    from hccatom.segmentation.spec import FoldModel

    f = FoldModel(fold=0, onnx="fold_0.onnx", sha256="0" * 64)
    assert "fp16" not in f.model_dump_json()
    g = f.model_copy(update={"onnx_fp16": "fold_0.fp16.onnx", "sha256_fp16": "1" * 64})
    assert FoldModel.model_validate_json(g.model_dump_json()) == g
    assert "fp16" not in SelectionModel(path="m.onnx").model_dump_json()
    with pytest.raises(ValidationError, match="go together"):
        FoldModel(fold=0, onnx="a.onnx", sha256="0" * 64, onnx_fp16="a.fp16.onnx")


# --- export gate and bundle (export extra) ------------------------------------------------
def _export_extra() -> None:
    pytest.importorskip("torch", reason="fp16 export needs the export extra")
    pytest.importorskip("nnunetv2", reason="fp16 export needs the export extra")
    pytest.importorskip("onnx", reason="fp16 conversion needs onnx (export extra)")


def _fixture_volume() -> Any:
    import SimpleITK as sitk

    from hccatom import Volume

    img = sitk.ReadImage(str(FIXTURES / "nnunet" / "volumes" / "typical_ct.nii.gz"))
    return Volume.from_array(sitk.GetArrayFromImage(img).astype(np.float32),
                             img.GetSpacing()[::-1])


@pytest.fixture(scope="module")
def seg_fp16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nnU-Net fixture exported with fp16 twins, gated on the fixture volume and a small
    realistic synthetic two-phase study (the default parity volumes)."""
    _export_extra()
    from hccatom.export.fp16 import default_parity_volumes
    from hccatom.export.nnunet_export import export_nnunet

    out = tmp_path_factory.mktemp("seg16")
    volumes = {"fixture_typical": _fixture_volume(), **default_parity_volumes()}
    export_nnunet(NNUNET_MODEL, out, folds=[0], precision="both", fp16_volumes=volumes)
    return out


@pytest.fixture(scope="module")
def fused_fp16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _export_extra()
    from hccatom.export.selection_model import SelectionModel, init_random
    from hccatom.export.selection_onnx import COHORTS, export_fused

    models = {c: init_random(SelectionModel("tiny"), seed=30 + i).eval()  # type: ignore[arg-type]
              for i, c in enumerate(COHORTS)}
    out = tmp_path_factory.mktemp("fused16")
    export_fused(models, out, exporter="legacy", batches=(1, 2), precision="both")
    return out


@pytest.mark.export
def test_segmentation_fp16_graph_passes_its_gate(seg_fp16: Path) -> None:
    import onnxruntime as ort

    from hccatom.segmentation.spec import SegmentationSpec

    spec = SegmentationSpec.load(seg_fp16)
    fold = spec.folds[0]
    assert fold.onnx_fp16 == "fold_0.fp16.onnx" and (seg_fp16 / fold.onnx_fp16).is_file()
    from hccatom.engines.providers import file_sha256

    assert fold.sha256_fp16 == file_sha256(seg_fp16 / fold.onnx_fp16)
    report = json.loads((seg_fp16 / "fp16_parity_report.json").read_text())
    assert report["passed"] is True
    assert set(report["cases"]) == {"fixture_typical", "synthetic_arterial", "synthetic_portal"}
    for case in report["cases"].values():
        assert case["agreement"] >= 0.999
        assert all(d >= 0.99 for d in case["dice"].values())
    # the graph really is fp16 inside, fp32 at its edges
    sess = ort.InferenceSession(str(seg_fp16 / fold.onnx_fp16), providers=[CPU])
    assert sess.get_inputs()[0].type == "tensor(float)"
    assert sess.get_outputs()[0].type == "tensor(float)"
    assert (seg_fp16 / fold.onnx_fp16).stat().st_size < 0.6 * (seg_fp16 / fold.onnx).stat().st_size


@pytest.mark.export
def test_segmentation_fp16_gate_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _export_extra()
    import hccatom.export.fp16 as fp16
    from hccatom.export.nnunet_export import export_nnunet
    from hccatom.segmentation.spec import SegmentationSpec

    monkeypatch.setattr(fp16, "LABEL_AGREEMENT_MIN", 1.01)  # no segmentation can pass
    with pytest.raises(fp16.Fp16ParityError, match="not kept") as info:
        export_nnunet(NNUNET_MODEL, tmp_path, folds=[0], precision="fp16",
                      fp16_volumes={"fixture_typical": _fixture_volume()})
    assert info.value.report["passed"] is False
    assert not (tmp_path / "fold_0.fp16.onnx").exists()
    assert (tmp_path / "fold_0.onnx").is_file()
    assert SegmentationSpec.load(tmp_path).folds[0].onnx_fp16 is None
    assert json.loads((tmp_path / "fp16_parity_report.json").read_text())["passed"] is False


@pytest.mark.export
def test_selection_fp16_graph_within_1e_3(fused_fp16: Path) -> None:
    report = json.loads((fused_fp16 / "selection_fused.fp16.parity.json").read_text())
    gate = report["parity"]
    assert gate["passed"] is True and gate["tolerance"] == 1e-3
    assert gate["max_abs_diff"] <= 1e-3
    assert [b["batch"] for b in gate["batches"]] == [1, 2]
    assert (fused_fp16 / "selection_fused.fp16.onnx").is_file()


@pytest.mark.export
def test_selection_fp16_gate_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _export_extra()
    import hccatom.export.fp16 as fp16
    from hccatom.export.selection_model import SelectionModel, init_random
    from hccatom.export.selection_onnx import export_selection

    monkeypatch.setattr(fp16, "SCORE_TOLERANCE", 0.0)  # fp16 never matches exactly
    model = init_random(SelectionModel("tiny"), seed=5).eval()  # type: ignore[arg-type]
    with pytest.raises(fp16.Fp16ParityError):
        export_selection(model, tmp_path, "TACE", exporter="legacy", batches=(1,),
                         precision="both")
    assert not (tmp_path / "selection_tace.fp16.onnx").exists()
    assert (tmp_path / "selection_tace.fp16.refused.json").is_file()
    assert (tmp_path / "selection_tace.onnx").is_file()


@pytest.fixture(scope="module")
def bundle16(seg_fp16: Path, fused_fp16: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hccatom.atom import PAPER_MSS
    from hccatom.export.bundle_writer import build_bundle
    from hccatom.safety import SafetyLimits

    out = tmp_path_factory.mktemp("b16") / "bundle"
    return build_bundle(out, segmentation=seg_fp16, selection=None, fused=fused_fp16,
                        name="fp16-test", version="0.0.1", thresholds=dict(PAPER_MSS),
                        synthetic=True,
                        # the fixture phantom's liver is ~200 mL (40 mm field of view)
                        safety=SafetyLimits(liver_volume_min_ml=100.0))


@pytest.mark.export
def test_bundle_records_fp16_graphs(bundle16: Path) -> None:
    from hccatom.bundle import load_bundle

    with load_bundle(bundle16) as b:
        m = b.manifest
        assert m.segmentation.spec.folds[0].onnx_fp16 == "fold_0.fp16.onnx"
        assert m.selection.fused is not None
        assert m.selection.fused.path_fp16 == "selection/fused/selection_fused.fp16.onnx"
        roles = {f.path: f.role for f in m.files}
        assert roles["selection/fused/selection_fused.fp16.onnx"] == "selection.fused.fp16"
        assert roles["segmentation/fold_0.fp16.onnx"] == "segmentation"
        assert "selection.fused.fp16" in m.parity


@pytest.mark.export
def test_predictor_picks_fp16_on_cuda_and_obeys_the_caller(bundle16: Path) -> None:
    from hccatom import Predictor
    from hccatom.engines import OnnxRuntimeEngine

    loaded: list[str] = []

    def factory(p: Path) -> OnnxRuntimeEngine:  # records the graph, runs it on the CPU
        loaded.append(p.name)
        return OnnxRuntimeEngine(p, device="cpu")

    Predictor.from_bundle(bundle16, device="cuda", engine_factory=factory)
    assert loaded == ["fold_0.fp16.onnx", "selection_fused.fp16.onnx"]
    loaded.clear()
    p = Predictor.from_bundle(bundle16, device="cuda", engine_factory=factory, precision="fp32")
    assert loaded == ["fold_0.onnx", "selection_fused.onnx"]
    assert set(p.precisions.values()) == {"fp32"}
    p = Predictor.from_bundle(bundle16, device="cpu")
    assert set(p.precisions.values()) == {"fp32"}


@pytest.mark.export
def test_forced_fp16_runs_on_the_cpu_provider_close_to_fp32(bundle16: Path) -> None:
    from hccatom import Predictor

    sys.path.insert(0, str(FIXTURES / "bundle"))
    try:
        from helpers import phantom
    finally:
        sys.path.pop(0)
    ph = phantom()
    kw: dict[str, Any] = {"device": "cpu", "phase_workers": 1, "mirroring": False}
    p32 = Predictor.from_bundle(bundle16, precision="fp32", **kw)
    p16 = Predictor.from_bundle(bundle16, precision="fp16", **kw)
    assert p16.precisions == {"segmentation fold 0": "fp16", "selection.fused": "fp16"}
    assert p16.segmenter.providers == [CPU]
    a = p32.segment(ph["arterial"]).array
    b = p16.segment(ph["arterial"]).array
    assert np.mean(a == b) >= 0.999


@pytest.mark.export
def test_recommend_cli_precision_picks_the_graph(
    bundle16: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``hccatom recommend --precision`` reaches the graph choice (CPU provider)."""
    from hccatom.cli import main
    from hccatom.ct_io import write_volume

    sys.path.insert(0, str(FIXTURES / "bundle"))
    try:
        from helpers import clinical_example, phantom
    finally:
        sys.path.pop(0)
    ph = phantom()
    clinical = tmp_path / "clinical.json"
    clinical.write_text(json.dumps(clinical_example()))
    base = ["recommend", "--bundle", str(bundle16), "--device", "cpu", "--no-mirroring",
            "--arterial", str(write_volume(ph["arterial"], tmp_path / "a.nii.gz")),
            "--portal", str(write_volume(ph["portal"], tmp_path / "p.nii.gz")),
            "--clinical", str(clinical)]
    for precision in ("fp16", "fp32"):
        assert main([*base, "--precision", precision]) == 0
        assert f"network graphs {precision})" in capsys.readouterr().out


@pytest.mark.export
def test_forcing_fp16_without_twins_is_a_clear_error(tmp_path: Path) -> None:
    from hccatom import Predictor

    sys.path.insert(0, str(FIXTURES / "bundle"))
    try:
        from helpers import build_fixture_bundle
    finally:
        sys.path.pop(0)
    bundle = build_fixture_bundle(tmp_path / "b", separate=False, verify=False)
    with pytest.raises(BundleFormatError, match="no fp16 graph"):
        Predictor.from_bundle(bundle, device="cpu", precision="fp16")
