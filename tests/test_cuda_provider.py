"""CUDA EP done properly (issue 11, section 3), exercised up to the provider boundary.

Option dicts, the preload rule, CUDA-graph shape checks and the fixed-buffer engine run here
(the fixed-buffer engine on the CPU provider); what needs a GPU is marked ``gpu``.
"""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import hccatom.engines.providers as providers
from hccatom.engines import OnnxRuntimeEngine, TensorSpec
from hccatom.engines.fixed_shape_engine import FixedShapeEngine
from hccatom.engines.providers import (
    CudaOptions,
    check_cuda_graph,
    cuda_provider_options,
    preload_cuda_libraries,
)
from hccatom.errors import EngineInputError, EngineUnavailableError

SEG = Path(__file__).parent / "fixtures" / "nnunet" / "export" / "fold_0.onnx"
PATCH = (24, 32, 40)


def test_cuda_option_dict_defaults_and_choices() -> None:
    d = cuda_provider_options()
    assert d == {
        "device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE",
        "cudnn_conv_use_max_workspace": "1", "arena_extend_strategy": "kNextPowerOfTwo",
        "do_copy_in_default_stream": "1", "use_tf32": "1", "enable_cuda_graph": "0",
    }
    d = cuda_provider_options(CudaOptions(
        device_id=1, cudnn_conv_algo_search="HEURISTIC", arena_extend_strategy="kSameAsRequested",
        gpu_mem_limit_bytes=8 << 30, enable_cuda_graph=True, use_tf32=False,
        cudnn_conv_use_max_workspace=False))
    assert d["device_id"] == "1" and d["cudnn_conv_algo_search"] == "HEURISTIC"
    assert d["arena_extend_strategy"] == "kSameAsRequested"
    assert d["gpu_mem_limit"] == str(8 << 30)
    assert d["enable_cuda_graph"] == "1" and d["use_tf32"] == "0"
    assert d["cudnn_conv_use_max_workspace"] == "0"
    assert all(isinstance(v, str) for v in d.values())


@pytest.mark.parametrize("bad", [
    {"cudnn_conv_algo_search": "FAST"}, {"arena_extend_strategy": "grow"},
    {"device_id": -1}, {"gpu_mem_limit_bytes": 10},
])
def test_cuda_options_refuse_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CudaOptions(**bad)


def test_cuda_graph_needs_fixed_shapes() -> None:
    specs = [TensorSpec("image", "float32", ("batch", 1, 24, 32, 40))]
    with pytest.raises(EngineUnavailableError, match="batch"):
        check_cuda_graph(specs)
    assert check_cuda_graph(specs, {"batch": 4}) == {"image": (4, 1, 24, 32, 40)}


@pytest.fixture
def fresh_preload(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(providers, "_PRELOADED", [])
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: calls.append(1), raising=False)
    return calls


def test_preload_runs_once_without_torch(monkeypatch: pytest.MonkeyPatch,
                                         fresh_preload: list[int]) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert preload_cuda_libraries() == "preloaded"
    assert preload_cuda_libraries() == "skipped: already done"
    assert fresh_preload == [1]


def test_preload_is_skipped_when_torch_is_loaded(monkeypatch: pytest.MonkeyPatch,
                                                 fresh_preload: list[int]) -> None:
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    assert preload_cuda_libraries() == "skipped: torch is loaded"
    assert fresh_preload == []


def test_preload_failure_warns_and_returns(monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(providers, "_PRELOADED", [])
    monkeypatch.delitem(sys.modules, "torch", raising=False)

    def boom(*a: Any, **k: Any) -> None:
        raise OSError("libcudnn.so.9 not found")

    monkeypatch.setattr(ort, "preload_dlls", boom, raising=False)
    assert preload_cuda_libraries().startswith("failed: libcudnn")
    assert "preload_dlls() failed" in caplog.text


def test_preload_without_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "_PRELOADED", [])
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.delattr(ort, "preload_dlls", raising=False)
    assert preload_cuda_libraries().startswith("unavailable")


def test_engine_preloads_only_for_gpu_plans(monkeypatch: pytest.MonkeyPatch,
                                            fresh_preload: list[int]) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    eng = OnnxRuntimeEngine(SEG, device="cpu")
    assert eng.preload == "not needed" and fresh_preload == []


def test_engine_passes_cuda_options_to_the_session(monkeypatch: pytest.MonkeyPatch,
                                                   fresh_preload: list[int]) -> None:
    """Up to the provider boundary: the session gets our CUDA option dict (then we stop)."""
    seen: dict[str, Any] = {}

    class StopHereError(Exception):
        pass

    def fake_session(path: str, options: Any, providers: Any) -> Any:
        seen["providers"] = providers
        raise StopHereError

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(providers, "ort_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    import hccatom.engines.onnxruntime_engine as oe

    monkeypatch.setattr(oe, "ort_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    opts = CudaOptions(cudnn_conv_algo_search="HEURISTIC", device_id=0)
    with pytest.raises(EngineUnavailableError):
        OnnxRuntimeEngine(SEG, device="cuda", cuda_options=opts)
    name, given = seen["providers"][0]
    assert name == "CUDAExecutionProvider"
    assert given == cuda_provider_options(opts)
    assert seen["providers"][-1] == "CPUExecutionProvider"
    assert fresh_preload == [1]  # preloaded before the CUDA session, torch not loaded


# --- one session, fixed buffers, many threads ---------------------------------------------
def test_fixed_shape_engine_on_cpu_matches_the_plain_engine() -> None:
    fixed = FixedShapeEngine(SEG, device="cpu", fixed={"batch": 2}, threads=1)
    plain = OnnxRuntimeEngine(SEG, device="cpu", threads=1)
    assert fixed.inputs[0].shape == (2, 1, *PATCH)
    rng = np.random.default_rng(0)
    for _ in range(2):  # the second run replays into the same buffers
        x = rng.normal(size=(2, 1, *PATCH)).astype(np.float32)
        got = fixed.run({"image": x})["logits"]
        ref = plain.run({"image": x})["logits"]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert fixed.runs == 2
    with pytest.raises(EngineInputError):
        fixed.run({"image": np.zeros((1, 1, *PATCH), np.float32)})  # not the fixed batch


def test_one_session_shared_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[Any] = []
    real = ort.InferenceSession

    def counting(*a: Any, **k: Any) -> Any:
        s = real(*a, **k)
        created.append(s)
        return s

    monkeypatch.setattr(ort, "InferenceSession", counting)
    engines = [OnnxRuntimeEngine(SEG, device="cpu", threads=1),
               FixedShapeEngine(SEG, device="cpu", fixed={"batch": 1}, threads=1)]
    assert len(created) == 2  # one session per engine
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(1, 1, *PATCH)).astype(np.float32) for _ in range(4)]
    for eng in engines:
        serial = [eng.run({"image": x})["logits"] for x in xs]
        results: list[Any] = [None] * len(xs)

        def work(i: int, e: Any = eng, out: list[Any] = results) -> None:
            out[i] = e.run({"image": xs[i]})["logits"]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for a, b in zip(serial, results, strict=True):
            np.testing.assert_array_equal(a, b)
    assert len(created) == 2  # no session was made per call or per thread


@pytest.mark.gpu
def test_cuda_graph_engine_on_a_gpu() -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu and a CUDA GPU (this machine has neither)")
    eng = FixedShapeEngine(SEG, device="cuda", fixed={"batch": 2})
    plain = OnnxRuntimeEngine(SEG, device="cpu")
    x = np.random.default_rng(0).normal(size=(2, 1, *PATCH)).astype(np.float32)
    for _ in range(3):
        got = eng.run({"image": x})["logits"]
    np.testing.assert_allclose(got, plain.run({"image": x})["logits"], atol=1e-2)
