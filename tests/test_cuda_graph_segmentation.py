"""CUDA graphs in the device-resident segmentation (issue #11, section 3).

With ``CudaOptions(enable_cuda_graph=True)`` the network runs through a
:class:`FixedShapeEngine` per fold: the tiles graph writes straight into its fixed input
buffer, the last, short batch is padded to the fixed size and the padding's outputs are
dropped. On the CPU provider the same code runs without capture; checked here: parity with
the plain device path, that padding never reaches the accumulator, the network runs once
per batch, and the errors. The CUDA test skips without a GPU.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from fixtures.nnunet.helpers import load_volume as load

from hccatom import Segmenter
from hccatom.engines import OnnxRuntimeEngine
from hccatom.engines.providers import CudaOptions
from hccatom.errors import EngineInputError, InputError
from hccatom.segmentation import preprocess
from hccatom.segmentation.device_window import padded_starts
from hccatom.segmentation.sliding_window import tile_starts

EXPORT = Path(__file__).parent / "fixtures" / "nnunet" / "export"
GRAPHS = CudaOptions(enable_cuda_graph=True)


def _segmenters(batch_size: int, folds: list[int], mirroring: Any
                ) -> tuple[Segmenter, Segmenter]:
    kw: dict[str, Any] = dict(device="cpu", threads=1, folds=folds, mirroring=mirroring,
                              device_resident=True, batch_size=batch_size)
    return Segmenter(EXPORT, **kw), Segmenter(EXPORT, cuda_options=GRAPHS, **kw)


def _n_tiles(seg: Segmenter, vol: Any) -> int:
    pre = preprocess(vol.array, vol.spacing, seg.spec)
    shape = [max(s, p) for s, p in zip(pre.data.shape[1:], seg.spec.patch_size, strict=True)]
    return len(tile_starts(shape, seg.spec.patch_size, seg.step_size))


def test_padded_starts_repeat_the_last_tile() -> None:
    chunk = np.asarray([[0, 0, 0], [4, 8, 12]], np.int64)
    full = padded_starts(chunk, 4)
    assert full.shape == (4, 3)
    np.testing.assert_array_equal(full[:2], chunk)
    np.testing.assert_array_equal(full[2:], [[4, 8, 12], [4, 8, 12]])
    assert padded_starts(chunk, 2) is chunk
    with pytest.raises(ValueError, match="does not fit"):
        padded_starts(chunk, 1)


def test_fixed_shape_engine_device_api() -> None:
    """input_buffer + replay (what the device window uses) equal run(); outputs stay
    OrtValues in the engine's fixed buffers."""
    from hccatom.engines.fixed_shape_engine import FixedShapeEngine

    eng = FixedShapeEngine(EXPORT / "fold_0.onnx", device="cpu", fixed={"batch": 2}, threads=1)
    assert not eng.cuda_graph
    x = np.random.default_rng(0).normal(size=eng.inputs[0].shape).astype(np.float32)
    expected = eng.run({"image": x})["logits"]
    with eng.lock:
        eng.input_buffer("image").update_inplace(x)
        first = eng.replay()["logits"]
        second = eng.replay()["logits"]
    assert isinstance(first, ort.OrtValue) and first.data_ptr() == second.data_ptr()
    np.testing.assert_array_equal(second.numpy(), expected)
    assert eng.runs == 3
    with pytest.raises(EngineInputError, match="unknown input 'x'"):
        eng.input_buffer("x")


def test_outputs_are_bound_before_the_first_run(tmp_path: Path) -> None:
    """On CUDA the first run captures the graph with the addresses bound then: the output
    buffers exist (shapes from the inputs' fixed sizes, or a throw-away probe session when
    an output dimension is open) before any run, and runs write into them."""
    from hccatom.engines.fixed_shape_engine import FixedShapeEngine
    from hccatom.engines.graph_writer import Graph

    eng = FixedShapeEngine(EXPORT / "fold_0.onnx", device="cpu", fixed={"batch": 2}, threads=1)
    assert eng.output_shapes == {"logits": (2, 3, 24, 32, 40)} and eng.runs == 0
    bound = eng._out["logits"].data_ptr()
    with eng.lock:
        assert eng.replay()["logits"].data_ptr() == bound

    g = Graph("open_output")  # y = flatten(x) * 2: y's length is a dimension of its own
    x = g.input("x", "float32", ["n", 4])
    (flat,) = g.node("Reshape", [x, g.const([-1])])
    g.node("Mul", [flat, g.const(np.float32(2))], outputs=["y"])
    g.output("y", "float32", ["m"])
    path = tmp_path / "open_output.onnx"
    path.write_bytes(g.to_bytes())
    eng = FixedShapeEngine(path, device="cpu", fixed={"n": 3}, threads=1)
    assert eng.output_shapes == {"y": (12,)} and eng.runs == 0
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(eng.run({"x": data})["y"], 2 * data.ravel())


@pytest.mark.parametrize(("volume", "folds", "mirroring", "batch"), [
    ("typical_ct.nii.gz", [0, 1], [0], 4),
    ("anisotropic_ct.nii.gz", [0], [1], 5),
])
def test_fixed_shape_network_equals_the_plain_device_path(
    volume: str, folds: list[int], mirroring: Any, batch: int
) -> None:
    """Same labels, max |dp| tiny; the tile count is not a multiple of the batch, so the
    last batch is padded (a padding tile accumulated twice would change its region)."""
    vol = load(volume)
    plain, fixed = _segmenters(batch, folds, mirroring)
    assert fixed.fixed_shape_network and not plain.fixed_shape_network
    assert not fixed.cuda_graphs  # CPU provider: the fixed buffers run, nothing is captured
    n = _n_tiles(fixed, vol)
    assert n % batch != 0, "the case must pad its last batch"
    p_plain, _ = plain.probabilities(vol)
    p_fixed, _ = fixed.probabilities(vol)
    dp = np.abs(p_fixed - p_plain)
    print(f"{volume}: {n} tiles, batch {batch}: max |dp| {dp.max():.2e}")
    np.testing.assert_array_equal(np.argmax(p_fixed, 0), np.argmax(p_plain, 0))
    assert dp.max() <= 1e-5
    networks = fixed._device_window.networks  # type: ignore[union-attr]
    assert networks is not None and len(networks) == len(folds)
    # one network run per batch, none extra for the padding
    assert all(net.runs == math.ceil(n / batch) for net in networks)
    assert networks[0].inputs[0].shape[0] == batch * (2 ** len(mirroring))


def test_padding_never_reaches_the_accumulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every accumulated tile is a real tile of its batch: count and indices."""
    vol = load("typical_ct.nii.gz")
    batch = 4
    plain, fixed = _segmenters(batch, [0], False)
    n = _n_tiles(fixed, vol)
    seen: list[tuple[int, tuple[int, ...]]] = []
    real_run = OnnxRuntimeEngine.run_device

    def spy(self: OnnxRuntimeEngine, feeds: Any, **kw: Any) -> Any:
        if self.path.name == "hccatom_accumulate.onnx":
            seen.append((int(np.asarray(feeds["tile"])[0]),
                         tuple(int(v) for v in np.asarray(feeds["start"]))))
        return real_run(self, feeds, **kw)

    expected = plain.segment(vol).array
    monkeypatch.setattr(OnnxRuntimeEngine, "run_device", spy)
    np.testing.assert_array_equal(fixed.segment(vol).array, expected)
    assert len(seen) == n  # each tile once, none of the padding rows
    last = n - (n // batch) * batch
    assert all(i < batch for i, _ in seen)
    assert [i for i, _ in seen[-last:]] == list(range(last))
    assert len({s for _, s in seen}) == n  # no start accumulated twice


def test_cuda_graphs_refuse_tensorrt_engines() -> None:
    from hccatom.segmentation import SegmentationSpec

    spec = SegmentationSpec.load(EXPORT)
    engine = OnnxRuntimeEngine(EXPORT / spec.folds[0].onnx, device="cpu", threads=1)
    engine._providers = ["TensorrtExecutionProvider", "CPUExecutionProvider"]  # as TRT reports
    with pytest.raises(InputError, match="TensorRT"):
        Segmenter(None, spec=spec.model_copy(update={"folds": spec.folds[:1]}),
                  engines=[engine], batch_size=2, cuda_options=GRAPHS)


def test_ordinary_engines_get_the_options_without_cuda_graphs() -> None:
    from hccatom.segmentation.cuda_graphs import engine_cuda_options, fixed_shape_setup

    opts = CudaOptions(enable_cuda_graph=True, cudnn_conv_algo_search="HEURISTIC")
    plain = engine_cuda_options(opts)
    assert plain is not None and not plain.enable_cuda_graph
    assert plain.cudnn_conv_algo_search == "HEURISTIC"
    assert engine_cuda_options(None) is None
    assert fixed_shape_setup(CudaOptions(), 1, None) is None  # not asked for
    setup = fixed_shape_setup(opts, 2, None)
    assert setup is not None and setup.cuda_options == opts and setup.threads == 2


def test_cuda_graphs_need_the_device_path() -> None:
    with pytest.raises(InputError, match="device-resident"):
        Segmenter(EXPORT, device="cpu", threads=1, folds=[0], device_resident=False,
                  cuda_options=GRAPHS)
    # default on the CPU provider: the host path, nothing fixed, nothing captured
    seg = Segmenter(EXPORT, device="cpu", threads=1, folds=[0], cuda_options=GRAPHS)
    assert not seg.device_resident and not seg.fixed_shape_network and not seg.cuda_graphs


def test_fixed_shape_segmenter_serves_two_threads() -> None:
    """A replay owns the fixed buffers: threads wait for each other, results unchanged."""
    import threading

    vol = load("small_ct.nii.gz")
    _, fixed = _segmenters(2, [0, 1], [0])
    expected = fixed.segment(vol).array
    got: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            got.append(fixed.segment(vol).array)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == 3 and all(np.array_equal(g, expected) for g in got)


def test_predictor_passes_cuda_options_to_the_segmenter() -> None:
    """from_bundle(cuda_options=...) builds the fixed-shape network on the device path; its
    ordinary engines get the options without CUDA graphs; labels equal the plain path."""
    from hccatom import Predictor
    from hccatom.demo import demo_bundle_path
    from hccatom.synthetic import ScanSpec, draw_cohort, generate_patient

    member = draw_cohort("TACE", 1, seed=11).patients[0]
    phase = generate_patient(member.seed, ScanSpec.demo(), member.features).portal
    kw: dict[str, Any] = dict(device="cpu", threads=1, phase_workers=1, device_resident=True,
                              mirroring=False)
    fixed = Predictor.from_bundle(demo_bundle_path(), cuda_options=GRAPHS, **kw)
    plain = Predictor.from_bundle(demo_bundle_path(), **kw)
    assert fixed.segmenter.fixed_shape_network and not fixed.segmenter.cuda_graphs
    assert not plain.segmenter.fixed_shape_network
    np.testing.assert_array_equal(fixed.segment(phase).array, plain.segment(phase).array)


@pytest.mark.gpu
def test_cuda_graph_segmentation_on_a_gpu() -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu and a CUDA GPU (this machine has neither)")
    vol = load("typical_ct.nii.gz")
    host = Segmenter(EXPORT, device="cpu", folds=[0, 1], mirroring=[0])
    gpu = Segmenter(EXPORT, device="cuda", folds=[0, 1], mirroring=[0], batch_size=4,
                    cuda_options=GRAPHS)
    assert gpu.device_resident and gpu.cuda_graphs
    for _ in range(2):  # the second call replays the captured graph
        p_gpu, _ = gpu.probabilities(vol)
    p_host, _ = host.probabilities(vol)
    assert np.mean(np.argmax(p_gpu, 0) == np.argmax(p_host, 0)) >= 0.9999
    assert np.abs(p_gpu - p_host).mean() <= 1e-4
