"""``hccatom bench``: the shipped latency command, run on the CPU with small sizes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from hccatom.bench import STAGES, summarise, transfer_delta, transfer_snapshot
from hccatom.bench_probe import (
    flops_from_profile,
    network_flops,
    node_flops,
    parse_size,
    peak_tflops,
    segmentation_evaluations,
)
from hccatom.cli import EXIT_BAD_INPUT, EXIT_NO_EXTRA, main
from hccatom.segmentation.sliding_window import tile_starts

FIXTURES = Path(__file__).parent / "fixtures"
NNUNET_MODEL = FIXTURES / "nnunet" / "model" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
NNUNET_EXPORT = FIXTURES / "nnunet" / "export"


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["bench", "--small", "--device", "cpu", "--repeats", "2", "--warmup",
                     "1", "--no-mirroring", "--threads", "1", "--cuda-graphs",
                     "--json", str(out)])
    assert code == 0
    return json.loads(out.read_text()), err.getvalue()


def test_bench_json_per_stage_statistics(bench_json: tuple[dict[str, Any], str]) -> None:
    result, _ = bench_json
    stages = result["stages_ms"]
    assert list(stages) == list(STAGES)
    for name, s in stages.items():
        assert s["n"] == 2, name
        assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"], name
    # the per-run rows are the source of the summaries
    totals = [r["total"] for r in result["runs_ms"]]
    assert stages["total"]["p50"] == pytest.approx(float(np.median(totals)))
    assert stages["total"]["p50"] >= stages["segment_arterial"]["p50"]
    assert result["studies_per_minute"] == pytest.approx(60000.0 / stages["total"]["p50"])


def test_bench_json_machine_providers_memory(bench_json: tuple[dict[str, Any], str]) -> None:
    result, stderr = bench_json
    assert result["providers"]["segmentation"] == ["CPUExecutionProvider"]
    assert result["providers"]["selection"] == ["CPUExecutionProvider"]
    m = result["machine"]
    assert m["onnxruntime"] == ort.__version__
    assert m["cpu_cores"] == os.cpu_count()
    assert m["cpu"]
    assert isinstance(m["gpus"], list)
    assert 50 < result["peak_host_rss_mib"] < 4096
    assert result["peak_device_memory_mib"] is None
    assert "CPU" in result["peak_device_memory_note"]
    assert result["bundle"]["name"]
    assert "128x128x48" in result["study"]
    # progress went to stderr, one line per run
    for i in (1, 2):
        assert f"run {i}/2" in stderr
    assert "warm-up 1/1" in stderr
    # and each run's stages and tile counts, as `hccatom recommend` shows them
    assert "hccatom: segment_arterial" in stderr and "tiles" in stderr
    # --cuda-graphs was asked for; the CPU provider runs the host path: reported as not used
    assert result["segmentation_runtime"] == {
        "device_resident": False, "fixed_shape_network": False,
        "cuda_graphs_requested": True, "cuda_graphs_used": False}


def test_bench_reports_whether_cuda_graphs_ran() -> None:
    """``segmentation_runtime`` reads the Segmenter: fixed-shape networks count as CUDA
    graphs only where they run on the CUDA provider."""
    from hccatom import Segmenter
    from hccatom.bench import segmentation_runtime
    from hccatom.engines.providers import CudaOptions

    seg = Segmenter(NNUNET_EXPORT, device="cpu", threads=1, folds=[0], device_resident=True,
                    cuda_options=CudaOptions(enable_cuda_graph=True))
    assert segmentation_runtime(seg, True) == {
        "device_resident": True, "fixed_shape_network": True,
        "cuda_graphs_requested": True, "cuda_graphs_used": False}
    for net in seg._device_window.networks or []:  # type: ignore[union-attr]
        net.device = "cuda"  # as a FixedShapeEngine on the CUDA EP reports itself
    assert segmentation_runtime(seg, True)["cuda_graphs_used"] is True
    plain = Segmenter(NNUNET_EXPORT, device="cpu", threads=1, folds=[0])
    assert segmentation_runtime(plain, False) == {
        "device_resident": False, "fixed_shape_network": False,
        "cuda_graphs_requested": False, "cuda_graphs_used": False}


def test_bench_json_flop_floor(bench_json: tuple[dict[str, Any], str]) -> None:
    result, _ = bench_json
    work = result["segmentation_work"]
    evals = sum(p["evaluations"] for p in work["phases"].values())
    assert evals > 0 and work["mirror_variants"] == 1
    assert work["tflop_both_phases"] == pytest.approx(evals * work["flops_per_evaluation"] / 1e12)
    floor = result["flop_floor"]
    assert floor["peak_source"] == "measured"
    assert floor["peak_tflops"] > 0
    assert floor["floor_ms"] == pytest.approx(floor["tflop"] / floor["peak_tflops"] * 1000)
    assert floor["achieved_fraction_of_peak"] > 0


def test_bench_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--arterial", "x.nii.gz", "--device", "cpu"]) == EXIT_BAD_INPUT
    assert "--arterial and --portal" in capsys.readouterr().err
    assert main(["bench", "--size", "512x512", "--device", "cpu"]) == EXIT_BAD_INPUT
    assert "--size" in capsys.readouterr().err
    assert main(["bench", "--small", "--repeats", "0", "--device", "cpu"]) == EXIT_BAD_INPUT


def test_bench_compare_nnunet_needs_export_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delitem(sys.modules, "hccatom.export.nnunet_reference", raising=False)
    for name in [m for m in sys.modules if m.split(".")[0] == "nnunetv2"] + ["nnunetv2"]:
        monkeypatch.setitem(sys.modules, name, None)  # importing any of nnunetv2 now fails
    code = main(["bench", "--small", "--device", "cpu", "--repeats", "1", "--warmup", "0",
                 "--no-mirroring", "--no-flops", "--compare-nnunet", str(tmp_path)])
    assert code == EXIT_NO_EXTRA
    err = capsys.readouterr().err
    # names the first missing module: nnunetv2 here, torch in the runtime-only environment
    assert "export extra" in err and ("nnunetv2" in err or "torch is not installed" in err)


@pytest.mark.export
def test_nnunet_reference_timing_on_fixture() -> None:
    """The --compare-nnunet timer on the nnU-Net fixture (one small volume, one fold)."""
    pytest.importorskip("torch", reason="--compare-nnunet needs the export extra")
    pytest.importorskip("nnunetv2", reason="--compare-nnunet needs the export extra")
    import SimpleITK as sitk

    from hccatom import Volume
    from hccatom.export.nnunet_reference import time_nnunet_predictor

    img = sitk.ReadImage(str(FIXTURES / "nnunet" / "volumes" / "small_ct.nii.gz"))
    vol = Volume.from_array(sitk.GetArrayFromImage(img).astype(np.float32),
                            img.GetSpacing()[::-1])
    ref = time_nnunet_predictor(NNUNET_MODEL, {"arterial": vol}, device="cpu", folds=[0],
                                mirroring=False, repeats=2, warmup=0)
    assert ref["device"] == "cpu" and ref["autocast_fp16"] is False
    assert ref["folds"] == [0] and ref["mirroring"] is False
    p = ref["phases"]["arterial"]
    assert len(p["runs_ms"]) == 2 and 0 < p["min_ms"] <= p["p50_ms"]


@pytest.mark.export
def test_nnunet_reference_refuses_a_non_model_folder(tmp_path: Path) -> None:
    pytest.importorskip("nnunetv2", reason="--compare-nnunet needs the export extra")
    from hccatom.errors import InputError
    from hccatom.export.nnunet_reference import time_nnunet_predictor

    with pytest.raises(InputError, match=r"plans\.json"):
        time_nnunet_predictor(tmp_path, {}, device="cpu")


# --- the pieces ---------------------------------------------------------------------------
def test_summarise_percentiles() -> None:
    s = summarise(list(range(1, 101)))
    assert s["p50"] == pytest.approx(50.5) and s["min"] == 1 and s["max"] == 100
    assert s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    with pytest.raises(ValueError):
        summarise([])


def test_parse_size_rows_columns_slices() -> None:
    assert parse_size("512x512x200") == (200, 512, 512)
    assert parse_size("256 X 128 x 64") == (64, 256, 128)
    for bad in ("512x512", "0x512x200", "axbxc"):
        with pytest.raises(ValueError):
            parse_size(bad)


class _CountingEngine:
    def __init__(self) -> None:
        self.h2d = 0
        self.d2h = 0

    def transfer_stats(self) -> dict[str, int]:
        return {"host_to_device_bytes": self.h2d, "device_to_host_bytes": self.d2h}


def test_transfer_counters_by_duck_typing() -> None:
    eng, plain = _CountingEngine(), object()
    before = transfer_snapshot({"seg": eng, "sel": plain})
    assert before == {"seg": {"host_to_device_bytes": 0.0, "device_to_host_bytes": 0.0}}
    eng.h2d, eng.d2h = 3000, 600
    after = transfer_snapshot({"seg": eng, "sel": plain})
    assert transfer_delta(before, after, 3) == {
        "seg": {"host_to_device_bytes": 1000.0, "device_to_host_bytes": 200.0}}
    assert transfer_snapshot({"sel": plain}) is None
    assert transfer_delta(None, None, 3) is None


def test_node_flops_formulas() -> None:
    # Conv 3x3x3, 2 -> 4 channels, output 1x4x8x8x8: 2 * 4*512 * 2*27
    assert node_flops("Conv", [[1, 2, 8, 8, 8], [4, 2, 3, 3, 3]], [[1, 4, 8, 8, 8]]) == (
        2 * 4 * 512 * 2 * 27)
    # ConvTranspose stride 2 kernel 2, 4 -> 2 channels, input 1x4x4x4x4
    assert node_flops("ConvTranspose", [[1, 4, 4, 4, 4], [4, 2, 2, 2, 2]],
                      [[1, 2, 8, 8, 8]]) == 2 * 4 * 64 * 2 * 8
    assert node_flops("MatMul", [[3, 5], [5, 7]], [[3, 7]]) == 2 * 3 * 7 * 5
    assert node_flops("Gemm", [[3, 5], [5, 7]], [[3, 7]]) == 2 * 3 * 7 * 5
    assert node_flops("Relu", [[3, 5]], [[3, 5]]) == 0.0


def test_flops_from_profile_reads_node_events() -> None:
    events = [
        {"cat": "Session", "name": "model_run"},
        {"cat": "Node", "name": "conv_kernel_time",
         "args": {"op_name": "Conv", "input_type_shape": [{"float": [1, 1, 4, 4, 4]},
                                                          {"float": [2, 1, 3, 3, 3]}],
                  "output_type_shape": [{"float": [1, 2, 4, 4, 4]}]}},
        {"cat": "Node", "name": "conv_fence_before", "args": {"op_name": "Conv"}},
    ]
    assert flops_from_profile(events) == 2 * 2 * 64 * 27


def test_network_flops_of_the_fixture_segmentation_graph() -> None:
    """The profiled count of a real graph: every conv's arithmetic, positive and stable."""
    spec = json.loads((NNUNET_EXPORT / "segmentation_spec.json").read_text())
    feeds = {"image": np.zeros((1, 1, *spec["patch_size"]), np.float32)}
    f1 = network_flops(NNUNET_EXPORT / "fold_0.onnx", feeds)
    feeds2 = {"image": np.zeros((2, 1, *spec["patch_size"]), np.float32)}
    f2 = network_flops(NNUNET_EXPORT / "fold_0.onnx", feeds2)
    assert f1 > 1e6
    assert f2 == pytest.approx(2 * f1)  # linear in the batch


@pytest.mark.export
def test_network_flops_matches_a_hand_count(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="builds a small conv net with torch")
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.LeakyReLU(),
        torch.nn.Conv3d(4, 8, 3, stride=2, padding=1),
        torch.nn.ConvTranspose3d(8, 4, 2, stride=2),
    ).eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 8, 8, 8),), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"])
    expected = (2 * 4 * 512 * 1 * 27) + (2 * 8 * 64 * 4 * 27) + (2 * 8 * 64 * 4 * 8)
    got = network_flops(path, {"x": np.zeros((1, 1, 8, 8, 8), np.float32)})
    assert got == expected


def test_segmentation_evaluations_match_the_tile_grid() -> None:
    tiles, evals = segmentation_evaluations(
        (100, 90, 80), (1.0, 0.8, 0.8), target_spacing=[2.0, 1.6, 1.6],
        transpose_forward=[0, 1, 2], patch_size=[24, 32, 32], step_size=0.5,
        mirror_variants=8, folds=2)
    assert tiles == len(tile_starts((50, 45, 40), (24, 32, 32), 0.5))
    assert evals == tiles * 16
    # smaller than the patch: padded to one tile per axis
    tiles, _ = segmentation_evaluations(
        (10, 10, 10), (1.0, 1.0, 1.0), target_spacing=[1.0, 1.0, 1.0],
        transpose_forward=[0, 1, 2], patch_size=[16, 16, 16], step_size=0.5,
        mirror_variants=1, folds=1)
    assert tiles == 1


def test_peak_tflops_sources() -> None:
    assert peak_tflops("gpu", 123.0).source == "given"
    cpu = peak_tflops("cpu")
    assert cpu.source == "measured" and cpu.tflops is not None and cpu.tflops > 0


def test_bench_counts_transfers_of_fixed_shape_folds() -> None:
    """With CUDA graphs the folds exist only as fixed-shape networks (no transfer counters of
    their own): the bench reads the segmenter's total instead, which counts the bytes."""
    from hccatom import Predictor
    from hccatom.bench import transfer_snapshot, transfer_sources
    from hccatom.demo import demo_bundle_path
    from hccatom.engines.providers import CudaOptions

    predictor = Predictor.from_bundle(demo_bundle_path(), device="cpu", threads=1,
                                      phase_workers=1, device_resident=True, mirroring=False,
                                      cuda_options=CudaOptions(enable_cuda_graph=True))
    sources = transfer_sources(predictor)
    assert "segmentation" in sources and not any(k.startswith("segmentation.fold")
                                                 for k in sources)
    from hccatom.synthetic import ScanSpec, draw_cohort, generate_patient

    member = draw_cohort("TACE", 1, seed=11).patients[0]
    predictor.segment(generate_patient(member.seed, ScanSpec.demo(), member.features).portal)
    snap = transfer_snapshot(sources)
    assert snap is not None and snap["segmentation"]["host_to_device"] > 0
