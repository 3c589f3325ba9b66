"""hccatom.engines: provider choice, TensorRT options, feed validation, thread safety.

Runtime tests: they use the committed tiny ONNX fixture and need neither torch nor onnx.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from hccatom.engines import (
    Engine,
    OnnxRuntimeEngine,
    TensorSpec,
    available_devices,
    provider_plan,
    tensorrt_cache_dir,
    tensorrt_profile_shapes,
    tensorrt_provider_options,
)
from hccatom.engines import onnxruntime_engine as ort_engine_mod
from hccatom.errors import EngineError, EngineInputError, EngineUnavailableError

FIXTURES = Path(__file__).parent / "fixtures" / "engines"
MODEL = FIXTURES / "tiny_model.onnx"
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
SHA = "ab" * 32


def _fixture_weights() -> dict[str, np.ndarray]:
    script = FIXTURES / "make_tiny_model.py"
    spec = importlib.util.spec_from_file_location("make_tiny_model", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.weights()  # type: ignore[no-any-return]


def _feeds(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "a": rng.standard_normal((batch, 4)).astype(np.float32),
        "b": rng.standard_normal((batch, 3)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def engine() -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(MODEL, device="cpu", threads=1)


# --- specs and results ------------------------------------------------------------------
def test_specs_and_protocol(engine: OnnxRuntimeEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.inputs == (
        TensorSpec("a", "float32", ("batch", 4)),
        TensorSpec("b", "float32", ("batch", 3)),
    )
    assert [o.name for o in engine.outputs] == ["logit", "score"]
    assert engine.providers == [CPU]
    assert engine.metadata["fixture"] == "tiny"
    assignment = engine.provider_assignment
    if assignment:  # onnxruntime >= 1.2x records which provider runs each node set
        assert set(assignment) == {CPU} and sum(assignment.values()) >= 1


def test_outputs_match_numpy(engine: OnnxRuntimeEngine) -> None:
    w = _fixture_weights()
    feeds = _feeds(5)
    out = engine.run(feeds)
    logit = feeds["a"] @ w["W"] + feeds["b"] @ w["V"] + w["c"]
    np.testing.assert_allclose(out["logit"], logit, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["score"], 1 / (1 + np.exp(-logit)), rtol=1e-5, atol=1e-6)
    assert out["score"].shape == (5, 2) and out["score"].dtype == np.float32


def test_io_binding_path_gives_same_results(engine: OnnxRuntimeEngine) -> None:
    bound = OnnxRuntimeEngine(MODEL, device="cpu", threads=1, io_binding="always")
    feeds = _feeds(3, seed=1)
    assert bound.uses_io_binding(feeds) and not engine.uses_io_binding(feeds)
    a, b = bound.run(feeds), engine.run(feeds)
    for name in ("logit", "score"):
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("io_binding", ["never", "always"])
def test_threads_identical_to_serial(io_binding: str) -> None:
    eng = OnnxRuntimeEngine(MODEL, device="cpu", threads=1, io_binding=io_binding)  # type: ignore[arg-type]
    n_threads, n_calls = 8, 25
    feeds = {(t, c): _feeds(1 + (t + c) % 3, seed=t * 100 + c)
             for t in range(n_threads) for c in range(n_calls)}
    serial = {k: eng.run(v) for k, v in feeds.items()}
    results: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        try:
            start.wait()
            for c in range(n_calls):
                results[(t, c)] = eng.run(feeds[(t, c)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(results) == n_threads * n_calls
    for key, want in serial.items():
        for name in ("logit", "score"):
            np.testing.assert_array_equal(results[key][name], want[name])


# --- bad feeds --------------------------------------------------------------------------
def test_missing_input_names_it(engine: OnnxRuntimeEngine) -> None:
    feeds = _feeds(1)
    del feeds["b"]
    with pytest.raises(EngineInputError, match=r"missing input 'b'.*float32\[batch, 3\]"):
        engine.run(feeds)


def test_unknown_input_lists_expected(engine: OnnxRuntimeEngine) -> None:
    feeds = {**_feeds(1), "c": np.zeros((1, 2), np.float32)}
    with pytest.raises(EngineInputError, match=r"unknown input.*'c'.*a: float32\[batch, 4\]"):
        engine.run(feeds)


def test_wrong_dtype(engine: OnnxRuntimeEngine) -> None:
    feeds = _feeds(1)
    feeds["a"] = feeds["a"].astype(np.float64)
    with pytest.raises(EngineInputError, match=r"'a'.*float32\[batch, 4\].*float64"):
        engine.run(feeds)


def test_wrong_rank(engine: OnnxRuntimeEngine) -> None:
    feeds = _feeds(1)
    feeds["a"] = feeds["a"][0]
    with pytest.raises(EngineInputError, match=r"'a'.*1 dimensions.*need 2"):
        engine.run(feeds)


def test_wrong_size(engine: OnnxRuntimeEngine) -> None:
    feeds = _feeds(2)
    feeds["b"] = np.zeros((2, 5), np.float32)
    with pytest.raises(EngineInputError, match=r"'b'.*float32\[batch, 3\].*axis 1 has size 5"):
        engine.run(feeds)


def test_batch_must_agree_across_inputs(engine: OnnxRuntimeEngine) -> None:
    feeds = {"a": np.zeros((2, 4), np.float32), "b": np.zeros((3, 3), np.float32)}
    with pytest.raises(EngineInputError, match=r"'b'.*batch.*3.*batch = 2"):
        engine.run(feeds)


def test_not_an_array_or_mapping(engine: OnnxRuntimeEngine) -> None:
    with pytest.raises(EngineInputError, match="numpy array"):
        engine.run({"a": [[0.0] * 4], "b": np.zeros((1, 3), np.float32)})  # type: ignore[dict-item]
    with pytest.raises(EngineInputError, match="mapping"):
        engine.run([np.zeros((1, 4), np.float32)])  # type: ignore[arg-type]
    with pytest.raises(EngineInputError, match="empty"):
        engine.run({"a": np.zeros((0, 4), np.float32), "b": np.zeros((0, 3), np.float32)})


def test_bad_inputs_are_value_errors_too() -> None:
    assert issubclass(EngineInputError, ValueError)


def test_missing_file_and_bad_model(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not found"):
        OnnxRuntimeEngine(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(EngineError, match=r"bad\.onnx"):
        OnnxRuntimeEngine(bad, device="cpu")


# --- provider choice --------------------------------------------------------------------
def test_provider_plan_orders_and_refuses() -> None:
    assert provider_plan("auto", [CPU, CUDA, TRT]) == [TRT, CUDA, CPU]
    assert provider_plan("auto", [CPU, "AzureExecutionProvider"]) == [CPU]
    assert provider_plan("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert provider_plan("cpu", [TRT, CUDA, CPU]) == [CPU]
    assert provider_plan("cuda", [TRT, CUDA, CPU]) == [CUDA, CPU]
    assert provider_plan("tensorrt", [TRT, CUDA, CPU]) == [TRT, CUDA, CPU]
    with pytest.raises(EngineUnavailableError, match="CUDA"):
        provider_plan("cuda", [CPU])
    with pytest.raises(EngineUnavailableError, match="TensorRT"):
        provider_plan("tensorrt", [CUDA, CPU])
    with pytest.raises(EngineUnavailableError, match="unknown device"):
        provider_plan("gpu", [CPU])
    assert available_devices([CPU]) == ["cpu"]
    assert available_devices([CPU, CUDA, TRT]) == ["tensorrt", "cuda", "cpu"]


def test_cuda_without_cuda_is_typed_error() -> None:
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(EngineUnavailableError, match="CUDA"):
        OnnxRuntimeEngine(MODEL, device="cuda")
    with pytest.raises(EngineUnavailableError, match="TensorRT"):
        OnnxRuntimeEngine(MODEL, device="tensorrt")


_NOT_AVAILABLE = pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")


def _pretend(monkeypatch: pytest.MonkeyPatch, providers: list[str]) -> None:
    """Make the engine believe these providers are compiled in (like onnxruntime-gpu
    installed on a machine without a usable GPU: the session then falls back)."""
    monkeypatch.setattr(ort_engine_mod, "ort_available_providers", lambda: list(providers))


@_NOT_AVAILABLE
def test_cuda_that_cannot_start_is_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend(monkeypatch, [CUDA, CPU])
    with pytest.raises(EngineUnavailableError, match="could not start the CUDA"):
        OnnxRuntimeEngine(MODEL, device="cuda")


@_NOT_AVAILABLE
def test_auto_fallback_warns_and_records(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    _pretend(monkeypatch, [TRT, CUDA, CPU])
    with caplog.at_level(logging.WARNING, logger="hccatom.engines"):
        eng = OnnxRuntimeEngine(MODEL, device="auto", fp16=True, cache_dir=tmp_path)
    assert eng.requested_providers == [TRT, CUDA, CPU]
    assert eng.providers == [CPU]
    text = caplog.text
    assert "asked for TensorrtExecutionProvider" in text and "fp16" in text
    # the TensorRT cache folder was keyed and created under the given root
    assert eng.tensorrt_cache_dir is not None
    assert eng.tensorrt_cache_dir.is_dir()
    assert eng.tensorrt_cache_dir.is_relative_to(tmp_path)
    assert eng.tensorrt_cache_dir.name == "fp16"
    np.testing.assert_array_equal(eng.run(_feeds(2))["score"], eng.run(_feeds(2))["score"])


# --- TensorRT EP options (pure) ---------------------------------------------------------
def test_tensorrt_cache_dir_keys_everything(tmp_path: Path) -> None:
    base = {
        "model_sha256": SHA, "device_name": "NVIDIA H100 80GB HBM3",
        "ort_version": "1.20.1", "trt_version": "10.7.0", "precision": "fp16",
    }
    ref = tensorrt_cache_dir(tmp_path, **base)
    assert ref.is_relative_to(tmp_path)
    assert "abababababababab" in ref.parts and "NVIDIA-H100-80GB-HBM3" in ref.parts
    assert ref.name == "fp16"
    for key, other in [
        ("model_sha256", "cd" * 32), ("device_name", "NVIDIA L4"), ("ort_version", "1.21.0"),
        ("trt_version", "10.8.0"), ("precision", "fp32"),
    ]:
        assert tensorrt_cache_dir(tmp_path, **{**base, key: other}) != ref, key
    with pytest.raises(ValueError, match="sha256"):
        tensorrt_cache_dir(tmp_path, **{**base, "model_sha256": "../../etc"})
    # a hostile device name cannot climb out of the cache root
    odd = tensorrt_cache_dir(tmp_path, **{**base, "device_name": "../../x y/.."})
    assert odd.resolve().is_relative_to(tmp_path.resolve())


def test_tensorrt_profile_shapes() -> None:
    specs = [
        TensorSpec("arterial", "float32", ("batch", 3, 224, 224)),
        TensorSpec("lab", "float32", ("batch", 8)),
    ]
    shapes = tensorrt_profile_shapes(specs, min_batch=1, opt_batch=2, max_batch=16)
    assert shapes == {
        "trt_profile_min_shapes": "arterial:1x3x224x224,lab:1x8",
        "trt_profile_opt_shapes": "arterial:2x3x224x224,lab:2x8",
        "trt_profile_max_shapes": "arterial:16x3x224x224,lab:16x8",
    }
    other = tensorrt_profile_shapes(
        [TensorSpec("x", "float32", ("n", "z", 64))], dims={"z": (32, 64, 128)}
    )
    assert other["trt_profile_max_shapes"] == "x:8x128x64"
    with pytest.raises(ValueError):
        tensorrt_profile_shapes(specs, min_batch=4, opt_batch=2)


def test_tensorrt_provider_options(tmp_path: Path) -> None:
    specs = [TensorSpec("a", "float32", ("batch", 4))]
    opts = tensorrt_provider_options(cache_dir=tmp_path, inputs=specs, fp16=True, max_batch=4,
                                     workspace_bytes=2 << 30, device_id=1)
    assert opts["trt_fp16_enable"] == "True"
    assert opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path)
    assert opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_timing_cache_path"] == str(tmp_path)
    assert opts["trt_max_workspace_size"] == str(2 << 30)
    assert opts["device_id"] == "1"
    assert opts["trt_profile_max_shapes"] == "a:4x4"
    assert all(isinstance(v, str) for v in opts.values())
    fp32 = tensorrt_provider_options(cache_dir=tmp_path, inputs=specs)
    assert fp32["trt_fp16_enable"] == "False" and "trt_max_workspace_size" not in fp32


# --- hardware -----------------------------------------------------------------------------
@pytest.mark.gpu
def test_cuda_run_matches_cpu(engine: OnnxRuntimeEngine) -> None:
    gpu = OnnxRuntimeEngine(MODEL, device="cuda", io_binding="always")
    assert gpu.providers[0] == CUDA
    feeds = _feeds(4, seed=3)
    np.testing.assert_allclose(gpu.run(feeds)["score"], engine.run(feeds)["score"], atol=1e-5)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_tensorrt_run_matches_cpu(engine: OnnxRuntimeEngine, tmp_path: Path) -> None:
    trt = OnnxRuntimeEngine(MODEL, device="tensorrt", cache_dir=tmp_path)
    assert trt.providers[0] == TRT
    feeds = _feeds(4, seed=4)
    np.testing.assert_allclose(trt.run(feeds)["score"], engine.run(feeds)["score"], atol=1e-3)
    assert trt.tensorrt_cache_dir is not None
    assert any(trt.tensorrt_cache_dir.iterdir()), "TensorRT wrote no engine/timing cache"
