"""The device-resident sliding window (``Segmenter(device_resident=True)``) on the CPU EP.

Same code path as on CUDA: every step is an ONNX Runtime graph chained with IO binding on
``OrtValue`` objects. Checked here: parity with the host path on the committed nnU-Net fixture
(2 folds, mirroring, anisotropic with a separate z axis, smaller than the patch) and on a
synthetic study; the host <-> device byte bound of issue #11; the inf/NaN check on both
paths; the transfer accounting of the engine; and the helper graphs themselves.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from concurrency import results_from_threads
from fixtures.nnunet.helpers import load_volume as load

from hccatom import Segmenter, Volume
from hccatom.engines import OnnxRuntimeEngine
from hccatom.engines.graph_writer import Graph
from hccatom.errors import InputError
from hccatom.segmentation import NonFiniteLogitsError, SegmentationSpec, preprocess
from hccatom.segmentation import device_graphs as graphs
from hccatom.segmentation.device_window import tiles_per_call
from hccatom.segmentation.sliding_window import gaussian_importance

FIXTURE = Path(__file__).parent / "fixtures" / "nnunet"
EXPORT = FIXTURE / "export"
VOLUMES = FIXTURE / "volumes"


def synthetic_study(size: int = 96, slices: int = 32) -> Volume:
    """A small synthetic CT (liver, tumour, vessels; 2 mm in-plane, 2.5 mm slices), resampled
    to the fixture's grid with order 1 on one grid (the device Resize path)."""
    from hccatom.synthetic.phantom import ScanSpec, generate_patient

    scan = ScanSpec(shape_yx=(size, size), spacing_yx_mm=(2.0, 2.0), slice_thickness_mm=2.5,
                    n_slices=slices)
    return generate_patient(3, scan).portal


def pair(folds: list[int], mirroring: bool | list[int], accumulate: str = "float16"
         ) -> tuple[Segmenter, Segmenter]:
    kw = dict(device="cpu", threads=1, folds=folds, mirroring=mirroring, accumulate=accumulate)
    return Segmenter(EXPORT, **kw), Segmenter(EXPORT, device_resident=True, **kw)  # type: ignore[arg-type]


CASES = {
    # name: (volume, folds, mirroring, accumulate)
    "typical_2folds_mirror": (lambda: load("typical_ct.nii.gz"), [0, 1], [0], "float16"),
    "anisotropic_separate_z_mirror": (lambda: load("anisotropic_ct.nii.gz"), [0], [1],
                                      "float16"),
    "smaller_than_patch_2folds_mirror": (lambda: load("small_ct.nii.gz"), [0, 1], [0, 1, 2],
                                         "float16"),
    "zero_border_float32": (lambda: load("zero_border_ct.nii.gz"), [0, 1], False, "float32"),
    "synthetic_study_2folds": (synthetic_study, [0, 1], False, "float16"),
}


SEGMENT_TOO = {"smaller_than_patch_2folds_mirror", "synthetic_study_2folds"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_device_path_equals_host_path(case: str) -> None:
    """Labels agree on >= 99.99 % of voxels and mean |dp| <= 1e-4 (issue #11)."""
    make, folds, mirroring, accumulate = CASES[case]
    vol = make()
    host, device = pair(folds, mirroring, accumulate)
    assert device.device_resident and not host.device_resident
    p_host, _ = host.probabilities(vol)
    p_dev, grid = device.probabilities(vol)
    assert grid.shape == vol.shape
    assert p_dev.shape == p_host.shape == (3, *vol.shape) and p_dev.dtype == np.float32
    dp = np.abs(p_dev - p_host)
    agree = float(np.mean(np.argmax(p_dev, 0) == np.argmax(p_host, 0)))
    print(f"{case}: agreement {agree:.6f}, mean |dp| {dp.mean():.2e}, max {dp.max():.2e}")
    assert agree >= 0.9999, case
    assert dp.mean() <= 1e-4, case
    if case in SEGMENT_TOO:  # segment() takes the labels-only graph
        labels_dev = device.segment(vol).array
        labels_host = host.segment(vol).array
        assert labels_dev.dtype == np.uint8
        assert np.mean(labels_dev == labels_host) >= 0.9999, case


@pytest.mark.parametrize("case", sorted(SEGMENT_TOO))
def test_device_confidence_equals_host_confidence(case: str) -> None:
    """The tumour's mean max-probability, computed on the device (a reduction graph, two
    scalars down) and on the host (numpy on the downloaded logits), agree to 1e-4."""
    make, folds, mirroring, accumulate = CASES[case]
    vol = make()
    host, device = pair(folds, mirroring, accumulate)
    moved: dict[str, int] = {}
    lab_dev, c_dev = device.segment_with_confidence(vol, transfers=moved)
    lab_host, c_host = host.segment_with_confidence(vol)
    assert np.mean(lab_dev.array == lab_host.array) >= 0.9999
    assert (c_dev is None) == (c_host is None), case
    if c_host is not None:
        assert c_dev is not None and 0.0 < c_dev <= 1.0
        print(f"{case}: confidence device {c_dev:.6f} host {c_host:.6f}")
        assert abs(c_dev - c_host) <= 1e-4, (case, c_dev, c_host)
    # the label map and the two float32 scalars, nothing else
    assert moved["device_to_host"] <= lab_dev.array.size + 8


def test_transfer_bound_per_phase() -> None:
    """Up: <= 1.1 x the preprocessed volume + constant graph inputs; down: the label map
    (+ the probabilities only when asked). The host path moves far more (every tile)."""
    vol = synthetic_study(64, 24)
    device = pair([0], [0, 1, 2])[1]
    host = Segmenter(EXPORT, device="cpu", threads=1, folds=[0], mirroring=False)
    pre = preprocess(vol.array, vol.spacing, device.spec)
    labels_bytes = int(np.prod(vol.shape))  # uint8
    gauss = gaussian_importance(device.spec.patch_size).nbytes

    moved: dict[str, int] = {}
    device.segment(vol, transfers=moved)
    assert 0 < moved["host_to_device"] <= 1.1 * pre.data.nbytes + moved["constant_inputs"]
    # constants: the Gaussian (first call only) plus a few int64 vectors per tile
    assert moved["constant_inputs"] <= gauss + 16 * 1024
    assert 0 < moved["device_to_host"] <= labels_bytes

    again: dict[str, int] = {}
    device.segment(vol, transfers=again)  # the Gaussian stays on the device
    assert again["constant_inputs"] < moved["constant_inputs"] - gauss // 2

    with_probs: dict[str, int] = {}
    device.probabilities(vol, transfers=with_probs)
    assert with_probs["host_to_device"] <= 1.1 * pre.data.nbytes + with_probs["constant_inputs"]
    probs_bytes = 3 * 4 * int(np.prod(pre.shape_after_cropping))
    assert labels_bytes < with_probs["device_to_host"] <= labels_bytes + probs_bytes

    on_host: dict[str, int] = {}
    host.segment(vol, transfers=on_host)
    assert on_host["device_to_host"] > 20 * moved["device_to_host"]
    assert device.transfer_stats().device_to_host >= (
        moved["device_to_host"] + again["device_to_host"]
    )


def test_default_is_host_path_on_cpu_and_bad_switches() -> None:
    assert not Segmenter(EXPORT, device="cpu", threads=1).device_resident
    spec = SegmentationSpec.load(EXPORT)
    two_d = spec.model_copy(update={"dims": 2, "patch_size": spec.patch_size[1:]})
    with pytest.raises(InputError, match="3-D"):
        Segmenter(EXPORT, device="cpu", threads=1, spec=two_d, device_resident=True)


def _constant_network(value: float, patch: tuple[int, ...], channels: int = 3) -> bytes:
    """A stand-in network: logits = x * 0 + value (per channel: value * (c + 1))."""
    g = Graph("constant_net")
    x = g.input("x", "float32", ["n", 1, *patch])
    (zero,) = g.node("Mul", [x, g.const(np.float32(0.0))])
    scale = np.arange(1, channels + 1, dtype=np.float32).reshape(1, channels, 1, 1, 1)
    (out,) = g.node("Add", [zero, g.const(scale * np.float32(value))])
    g.node("Reshape", [out, g.const([-1, channels, *patch])], outputs=["logits"])
    g.output("logits", "float32", ["n", channels, *patch])
    return g.to_bytes()


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("device_resident", [False, True])
def test_non_finite_logits_raise_a_typed_error(device_resident: bool) -> None:
    """Logits of 1e5 overflow float16 accumulation (inf): nnU-Net raises, so do we, on both
    paths; float32 accumulation holds them."""
    spec = SegmentationSpec.load(EXPORT)
    net = _constant_network(1e5, tuple(spec.patch_size))
    vol = load("small_ct.nii.gz")

    def seg(accumulate: str) -> Segmenter:
        engine = OnnxRuntimeEngine(net, device="cpu", threads=1, name="constant_net.onnx")
        spec1 = spec.model_copy(update={"input_name": "x", "output_name": "logits",
                                        "folds": spec.folds[:1]})
        return Segmenter(None, spec=spec1, engines=[engine], mirroring=False,
                         accumulate=accumulate, device_resident=device_resident)  # type: ignore[arg-type]

    with pytest.raises(NonFiniteLogitsError, match="inf or NaN"):
        seg("float16").segment(vol)
    labels = seg("float32").segment(vol).array
    assert labels.max() == 2  # the last channel has the largest logit everywhere in the box


def test_engine_counts_transfers_and_keeps_values_on_device() -> None:
    g = Graph("double")
    x = g.input("x", "float32", ["n"])
    g.node("Add", [x, x], outputs=["y"])
    g.output("y", "float32", ["n"])
    engine = OnnxRuntimeEngine(g.to_bytes(), device="cpu", threads=1, name="double.onnx")
    a = np.arange(1000, dtype=np.float32)
    out = engine.run({"x": a})
    assert np.array_equal(out["y"], 2 * a)
    s = engine.transfer_stats()
    assert (s.host_to_device, s.device_to_host, s.calls) == (4000, 4000, 1)
    value = engine.upload(a)
    y = engine.run_device({"x": value})["y"]
    y2 = engine.run_device({"x": y})["y"]  # chained on the device: nothing counted
    s2 = engine.transfer_stats() - s
    assert (s2.host_to_device, s2.device_to_host, s2.calls) == (4000, 0, 2)
    assert np.array_equal(engine.download(y2), 4 * a)
    assert (engine.transfer_stats() - s).device_to_host == 4000


def test_accumulate_is_in_place_and_costs_a_tile_not_a_volume() -> None:
    """The ScatterND accumulator bound as input and output is updated in place (no copy of
    the volume): faster than the same update into a fresh output, which copies 192^3 halves."""
    patch = (16, 16, 16)
    add = OnnxRuntimeEngine(graphs.weights_graph(patch, "float16"), device="cpu", threads=1)
    zeros = OnnxRuntimeEngine(graphs.zeros_graph("float16", 4), device="cpu", threads=1)
    gauss = add.upload(np.ones(patch, np.float32))
    start = np.array([3, 5, 7], np.int64)
    acc = zeros.run_device({"shape": np.array([192, 192, 192, 1], np.int64)})["zeros"]
    feeds = {"acc": acc, "start": start, "gauss": gauss}

    def best_of(in_place: bool) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(4):
                if in_place:
                    add.run_device(feeds, outputs={"acc_out": acc})
                else:
                    add.run_device(feeds)  # a new output: ScatterND copies the volume first
            times.append((time.perf_counter() - t0) / 4)
        return min(times)

    copy, in_place = best_of(False), best_of(True)
    print(f"accumulate per call: in place {in_place * 1e3:.2f} ms, copying {copy * 1e3:.2f} ms")
    assert in_place < 0.5 * copy
    got = add.download(acc)
    assert got[3, 5, 7, 0] == 20 and got[2, 5, 7, 0] == 0 and got[18, 20, 22, 0] == 20
    assert got[19, 21, 23, 0] == 0
    assert got.astype(np.float64).sum() == 20 * 16**3


def test_tiles_per_call_from_a_budget() -> None:
    patch = (128, 128, 128)
    assert tiles_per_call(patch, 8, 1 << 30) == 1  # one tile at least
    assert tiles_per_call(patch, 1, 64 << 30) == 4  # capped
    assert 1 < tiles_per_call((24, 32, 40), 8, 1 << 30) <= 4


@pytest.mark.export
def test_helper_graphs_pass_onnx_checker_and_use_cuda_ops() -> None:
    """Every helper graph is valid ONNX and uses only ops with CUDA kernels."""
    onnx = pytest.importorskip("onnx", reason="onnx is in the export extra")
    patch = (8, 8, 8)
    models = [
        graphs.pad_graph(), graphs.zeros_graph("float16", 4),
        graphs.tiles_graph(patch, [(0,), (1,), (0, 1)], 2), graphs.tiles_graph(patch, [], 1),
        graphs.accumulate_graph(patch, 3, [(0,), (2,)], "float16"),
        graphs.accumulate_graph(patch, 3, [], "float32"),
        graphs.weights_graph(patch, "float16"),
        graphs.fold_graph(3, "float16", True), graphs.fold_graph(3, "float16", False),
        graphs.fold_graph(3, "float32", False), graphs.finish_graph(3, "float16", 2),
        graphs.labels_graph(3, "float16", True, True), graphs.labels_graph(3, "float32", False,
                                                                          False),
    ]
    for blob in models:
        model = onnx.load_from_string(blob)
        onnx.checker.check_model(model, full_check=True)
        used = {n.op_type for n in model.graph.node}
        assert used <= graphs.CUDA_OPS, used - graphs.CUDA_OPS


def test_device_resident_is_the_default_on_gpu_providers() -> None:
    """On by default where the engines run CUDA/TensorRT (decided from their providers)."""
    from hccatom.engines.providers import CUDA

    spec = SegmentationSpec.load(EXPORT)
    engine = OnnxRuntimeEngine(EXPORT / spec.folds[0].onnx, device="cpu", threads=1)
    engine._providers = [CUDA, "CPUExecutionProvider"]  # as a CUDA session reports them
    seg = Segmenter(None, spec=spec.model_copy(update={"folds": spec.folds[:1]}),
                    engines=[engine])
    assert seg.device_resident
    off = Segmenter(None, spec=spec.model_copy(update={"folds": spec.folds[:1]}),
                    engines=[engine], device_resident=False)
    assert not off.device_resident


@pytest.mark.gpu
def test_cuda_device_path_equals_host_path_and_moves_only_the_volume() -> None:
    vol = load("typical_ct.nii.gz")
    host = Segmenter(EXPORT, device="cpu", folds=[0, 1], mirroring=[0])
    gpu = Segmenter(EXPORT, device="cuda", folds=[0, 1], mirroring=[0])
    assert gpu.device_resident
    moved: dict[str, int] = {}
    p_gpu, _ = gpu.probabilities(vol, transfers=moved)
    p_host, _ = host.probabilities(vol)
    assert np.mean(np.argmax(p_gpu, 0) == np.argmax(p_host, 0)) >= 0.9999
    assert np.abs(p_gpu - p_host).mean() <= 1e-4
    pre = preprocess(vol.array, vol.spacing, gpu.spec)
    assert moved["host_to_device"] <= 1.1 * pre.data.nbytes + moved["constant_inputs"]


def test_one_device_segmenter_serves_two_threads() -> None:
    vol = load("small_ct.nii.gz")
    seg = pair([0, 1], [0])[1]
    expected = seg.segment(vol).array
    got = results_from_threads(lambda: seg.segment(vol).array, 2)
    assert len(got) == 2 and all(np.array_equal(g, expected) for g in got)


def test_device_path_runs_without_onnx_or_torch() -> None:
    """The helper graphs are written without the onnx package (runtime rule)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import builtins, sys
        real_import = builtins.__import__
        def guarded(name, *args, **kwargs):
            if name.split('.')[0] in {{'torch', 'nnunetv2', 'onnx'}}:
                raise ImportError('blocked in this test: ' + name)
            return real_import(name, *args, **kwargs)
        builtins.__import__ = guarded
        from hccatom import Segmenter, read_ct
        seg = Segmenter({str(EXPORT)!r}, device='cpu', threads=1, folds=[0], mirroring=False,
                        device_resident=True)
        labels = seg.segment(read_ct({str(VOLUMES / "typical_ct.nii.gz")!r})).array
        assert labels.max() == 2 and 'onnx' not in sys.modules
        print('ok')
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_predictor_reports_device_resident_transfers() -> None:
    """Predictor.from_bundle(device_resident=True): each phase report carries the bytes."""
    from hccatom import Predictor
    from hccatom.demo import demo_bundle_path
    from hccatom.synthetic import ScanSpec, draw_cohort, generate_patient

    member = draw_cohort("TACE", 1, seed=11).patients[0]
    study = generate_patient(member.seed, ScanSpec.demo(), member.features)
    predictor = Predictor.from_bundle(demo_bundle_path(), device="cpu", threads=1,
                                      phase_workers=1, device_resident=True)
    assert predictor.segmenter.device_resident
    rec = predictor.recommend({"arterial": study.arterial, "portal": study.portal},
                              member.clinical)
    for name in ("arterial", "portal"):
        moved = rec.phases[name].segmentation_transfer_bytes  # type: ignore[index]
        assert moved["device_to_host"] > 0 and moved["host_to_device"] > 0
