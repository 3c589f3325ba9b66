"""SELECTION speed on the CPU, ``paper`` size (ViT-B/16, 414 tokens): ONNX Runtime vs
PyTorch eager at batch 1 and 8, and the fused four-model graph vs four separate calls.

The models have seeded random weights (speed does not depend on the values). Before timing,
ONNX Runtime's scores are checked against PyTorch's. Both sides use the same number of CPU
threads (``HCCATOM_BENCH_THREADS``, default 2). The four separate ONNX calls use four
engines loaded from one exported single-model file (same graph and size as four cohort
files). Exports land in a temporary folder; the fused paper graph is about 1.6 GB.

Run:  .venv/bin/pytest benchmarks/bench_selection.py -o python_files='bench_*.py' \
          --benchmark-only --benchmark-columns=median,min,max,rounds
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hccatom.engines import OnnxRuntimeEngine  # noqa: E402
from hccatom.export.selection_model import SelectionModel, get_size, init_random  # noqa: E402
from hccatom.export.selection_onnx import (  # noqa: E402
    COHORTS,
    example_inputs,
    export_fused,
    export_selection,
)

THREADS = int(os.environ.get("HCCATOM_BENCH_THREADS", "2"))
ROUNDS = int(os.environ.get("HCCATOM_BENCH_ROUNDS", "3"))
SIZE = os.environ.get("HCCATOM_BENCH_SIZE", "paper")
# batch 8 of the three four-model variants costs ~2 min a round at paper size on 2 cores
FOUR_BATCHES = [int(b) for b in os.environ.get("HCCATOM_BENCH_FOUR_BATCHES", "1,8").split(",")]


@pytest.fixture(scope="module")
def models() -> dict[str, SelectionModel]:
    torch.set_num_threads(THREADS)
    return {c: init_random(SelectionModel(SIZE), seed=i).eval() for i, c in enumerate(COHORTS)}


@pytest.fixture(scope="module")
def exported(
    models: dict[str, SelectionModel], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bench_selection")
    single = export_selection(models["TACE"], out, "TACE", batches=(1,)).model_path
    fused = export_fused(models, out, batches=(1,)).model_path
    return {"single": single, "fused": fused}


def _feeds(batch: int) -> dict[str, np.ndarray]:
    inputs = example_inputs(get_size(SIZE), batch, seed=batch)
    return {k: v.numpy() for k, v in inputs.items()}


def _run(benchmark, fn: Callable[[], object], group: str, **info: object) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = group
    benchmark.extra_info.update({"threads": THREADS, "size": SIZE, **info})
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)


# --- one model: ONNX Runtime vs PyTorch eager ----------------------------------------------
@pytest.mark.parametrize("batch", [1, 8])
def test_bench_single_torch(benchmark, models: dict[str, SelectionModel], batch: int) -> None:  # type: ignore[no-untyped-def]
    model = models["TACE"]
    inp = tuple(example_inputs(model.size, batch, seed=batch).values())

    def call() -> object:
        with torch.inference_mode():
            return torch.sigmoid(model(*inp))

    _run(benchmark, call, f"single model, batch {batch}", path="pytorch eager")


@pytest.mark.parametrize("batch", [1, 8])
def test_bench_single_ort(  # type: ignore[no-untyped-def]
    benchmark, models: dict[str, SelectionModel], exported: dict[str, Path], batch: int
) -> None:
    engine = OnnxRuntimeEngine(exported["single"], device="cpu", threads=THREADS)
    feeds = _feeds(batch)
    with torch.inference_mode():
        ref = torch.sigmoid(models["TACE"](*(torch.from_numpy(v) for v in feeds.values())))
    np.testing.assert_allclose(engine.run(feeds)["score"], ref.numpy(), atol=1e-5)
    _run(benchmark, lambda: engine.run(feeds), f"single model, batch {batch}",
         path="onnxruntime cpu", providers=engine.providers)


# --- four models: fused graph vs four calls -------------------------------------------------
@pytest.mark.parametrize("batch", FOUR_BATCHES)
def test_bench_four_torch(benchmark, models: dict[str, SelectionModel], batch: int) -> None:  # type: ignore[no-untyped-def]
    inp = tuple(example_inputs(models["TACE"].size, batch, seed=batch).values())

    def call() -> object:
        with torch.inference_mode():
            return [torch.sigmoid(models[c](*inp)) for c in COHORTS]

    _run(benchmark, call, f"four models, batch {batch}", path="pytorch eager x4")


@pytest.mark.parametrize("batch", FOUR_BATCHES)
def test_bench_four_ort_separate(benchmark, exported: dict[str, Path], batch: int) -> None:  # type: ignore[no-untyped-def]
    engines = [OnnxRuntimeEngine(exported["single"], device="cpu", threads=THREADS)
               for _ in COHORTS]
    feeds = _feeds(batch)
    _run(benchmark, lambda: [e.run(feeds) for e in engines], f"four models, batch {batch}",
         path="onnxruntime x4 calls")


@pytest.mark.parametrize("batch", FOUR_BATCHES)
def test_bench_four_ort_fused(  # type: ignore[no-untyped-def]
    benchmark, models: dict[str, SelectionModel], exported: dict[str, Path], batch: int
) -> None:
    engine = OnnxRuntimeEngine(exported["fused"], device="cpu", threads=THREADS)
    feeds = _feeds(batch)
    got = engine.run(feeds)["scores"]
    with torch.inference_mode():
        x = tuple(torch.from_numpy(v) for v in feeds.values())
        ref = torch.cat([torch.sigmoid(models[c](*x)) for c in COHORTS], dim=1).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    _run(benchmark, lambda: engine.run(feeds), f"four models, batch {batch}",
         path="onnxruntime fused graph", providers=engine.providers)
