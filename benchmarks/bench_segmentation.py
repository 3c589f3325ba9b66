"""Segmentation speed: our runtime (ONNX Runtime CPU) vs nnU-Net's nnUNetPredictor (PyTorch CPU).

Same model (tests/fixtures/nnunet: both folds), same volume, step 0.5, mirroring on and off,
the same number of CPU threads for both (``HCCATOM_BENCH_THREADS``, default 2). Outputs are
checked to agree before timing. Our per-stage seconds go into ``extra_info``.

Run:  .venv/bin/pytest benchmarks/bench_segmentation.py -o python_files='bench_*.py' \
          --benchmark-only --benchmark-columns=median,min,max,rounds
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: E402

from hccatom import Segmenter, Volume, read_ct  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "nnunet"
MODEL = FIXTURE / "model" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
EXPORT = FIXTURE / "export"
REAL_CT = ROOT / "tests" / "data" / "real" / "totalseg_example" / "example_ct_sm.nii.gz"
THREADS = int(os.environ.get("HCCATOM_BENCH_THREADS", "2"))
ROUNDS = int(os.environ.get("HCCATOM_BENCH_ROUNDS", "3"))


VOLUME = os.environ.get("HCCATOM_BENCH_VOLUME", "typical")


@pytest.fixture(scope="module")
def volume() -> Volume:
    """``typical`` (default): the fixture phantom, 39 x 54 x 62 voxels -> 18 tiles;
    ``real``: the real CT, 30 x 101 x 122 at 3 mm -> 26 x 124 x 150 at the plan spacing, 98
    tiles (about 5x the work; with mirroring nnU-Net needs minutes per round on 2 cores)."""
    if VOLUME == "real":
        return read_ct(REAL_CT)
    return read_ct(FIXTURE / "volumes" / "typical_ct.nii.gz")


def _nnunet(mirroring: bool) -> nnUNetPredictor:
    torch.set_num_threads(THREADS)
    pred = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
        perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False,
    )
    pred.initialize_from_trained_model_folder(str(MODEL), use_folds=(0, 1))
    return pred


def _ours(mirroring: bool) -> Segmenter:
    return Segmenter(EXPORT, device="cpu", threads=THREADS, mirroring=mirroring, batch_size=2)


@pytest.mark.parametrize("mirroring", [False, True], ids=["no-mirror", "mirror"])
def test_bench_nnunet_predictor(benchmark, volume: Volume, mirroring: bool) -> None:  # type: ignore[no-untyped-def]
    pred = _nnunet(mirroring)
    arr = volume.array.astype(np.float32)[None]
    props = {"spacing": list(volume.spacing)}
    benchmark.group = f"segmentation {'mirror' if mirroring else 'no-mirror'}"
    benchmark.extra_info.update(threads=THREADS, shape=list(volume.shape), folds=[0, 1])
    seg = benchmark.pedantic(
        lambda: pred.predict_single_npy_array(arr, dict(props), None, None, False),
        rounds=ROUNDS, iterations=1,
    )
    assert seg.shape == volume.shape


@pytest.mark.parametrize("mirroring", [False, True], ids=["no-mirror", "mirror"])
def test_bench_hccatom_segmenter(benchmark, volume: Volume, mirroring: bool) -> None:  # type: ignore[no-untyped-def]
    seg = _ours(mirroring)
    benchmark.group = f"segmentation {'mirror' if mirroring else 'no-mirror'}"
    # equal outputs first (labels vs nnU-Net's, same settings)
    ref = _nnunet(mirroring).predict_single_npy_array(
        volume.array.astype(np.float32)[None], {"spacing": list(volume.spacing)}, None, None,
        False,
    )
    timings: dict[str, float] = {}
    labels = seg.segment(volume, timings=timings).array
    agreement = float((labels == ref).mean())
    assert agreement >= 0.999
    benchmark.extra_info.update(
        threads=THREADS, shape=list(volume.shape), folds=[0, 1], label_agreement=agreement,
        stage_seconds={k: round(v, 3) for k, v in timings.items()},
    )
    out = benchmark.pedantic(lambda: seg.segment(volume), rounds=ROUNDS, iterations=1)
    assert out.shape == volume.shape


@pytest.mark.parametrize("mirroring", [False, True], ids=["no-mirror", "mirror"])
def test_bench_hccatom_device_resident(benchmark, volume: Volume, mirroring: bool) -> None:  # type: ignore[no-untyped-def]
    """The device-resident path on the CPU EP (same graphs as on CUDA), with the host <->
    device bytes of both paths (on the CPU EP: what would cross the bus on a GPU)."""
    seg = Segmenter(EXPORT, device="cpu", threads=THREADS, mirroring=mirroring,
                    device_resident=True)
    benchmark.group = f"segmentation {'mirror' if mirroring else 'no-mirror'}"
    moved: dict[str, int] = {}
    moved_host: dict[str, int] = {}
    labels = seg.segment(volume, transfers=moved).array
    ref = _ours(mirroring).segment(volume, transfers=moved_host).array
    agreement = float((labels == ref).mean())
    assert agreement >= 0.9999
    benchmark.extra_info.update(
        threads=THREADS, shape=list(volume.shape), folds=[0, 1], label_agreement=agreement,
        tiles_per_call=seg._device_window.batch_size,  # type: ignore[union-attr]
        transfer_bytes=moved, host_path_transfer_bytes=moved_host,
    )
    out = benchmark.pedantic(lambda: seg.segment(volume), rounds=ROUNDS, iterations=1)
    assert out.shape == volume.shape
