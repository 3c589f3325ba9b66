"""Ensembles and cascades: our runtime (ONNX Runtime CPU) vs nnU-Net (PyTorch CPU), same run.

* ensemble: the fixture 3d_fullres model with fold 0 and with fold 1 as two configurations
  (probabilities averaged on the input grid), mirroring on; nnU-Net: two ``nnUNetPredictor``
  runs returning probabilities, averaged and argmaxed as ``nnUNetv2_ensemble`` does (in
  memory; nnU-Net itself round-trips .npz files). Baseline: one member alone (ours).
* cascade: ``tests/fixtures/nnunet_cascade`` (3d_lowres -> 3d_cascade_fullres, no mirroring
  allowed); nnU-Net: the lowres predictor, then the cascade predictor given its labels.
  Baseline: the lowres stage alone (ours).

Outputs are checked to agree before timing. Threads: ``HCCATOM_BENCH_THREADS`` (default 1).

Run:  .venv/bin/pytest benchmarks/bench_stages.py -o python_files='bench_*.py' \\
          --benchmark-only --benchmark-columns=median,min,max,rounds
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: E402

from hccatom import Segmenter, Volume, read_ct  # noqa: E402
from hccatom.segmentation.spec import SegmentationSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "nnunet"
MODEL = FIXTURE / "model" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
EXPORT = FIXTURE / "export"
CASCADE = ROOT / "tests" / "fixtures" / "nnunet_cascade"
THREADS = int(os.environ.get("HCCATOM_BENCH_THREADS", "1"))
ROUNDS = int(os.environ.get("HCCATOM_BENCH_ROUNDS", "3"))


@pytest.fixture(scope="module")
def volume() -> Volume:
    """The fixture phantom ``typical`` (39 x 54 x 62 voxels)."""
    return read_ct(FIXTURE / "volumes" / "typical_ct.nii.gz")


def _ensemble_spec() -> SegmentationSpec:
    data = json.loads(SegmentationSpec.load(EXPORT).to_json())
    member = dict(data, folds=[data["folds"][1]])
    return SegmentationSpec.model_validate(dict(data, folds=[data["folds"][0]],
                                                ensemble=[member]))


def _predictor(folder: Path, folds: tuple[Any, ...], mirroring: bool) -> nnUNetPredictor:
    torch.set_num_threads(THREADS)
    pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                           perform_everything_on_device=False, device=torch.device("cpu"),
                           allow_tqdm=False)
    pred.initialize_from_trained_model_folder(str(folder), use_folds=folds)
    return pred


def _nnunet_ensemble(volume: Volume) -> Callable[[], np.ndarray]:
    preds = [_predictor(MODEL, (f,), True) for f in (0, 1)]
    props = {"spacing": list(volume.spacing)}

    def run() -> np.ndarray:
        total = None
        for p in preds:
            _, probs = p.predict_single_npy_array(volume.array[None], props, None, None, True)
            total = probs.astype(np.float32) if total is None else total + probs
        assert total is not None
        return np.argmax(total / len(preds), axis=0)

    return run


def _nnunet_cascade(volume: Volume) -> Callable[[], np.ndarray]:
    model = CASCADE / "model"
    low = _predictor(model / "nnUNetTrainerNoDA__nnUNetPlans__3d_lowres", ("all",), False)
    full = _predictor(model / "nnUNetTrainerNoDA__nnUNetPlans__3d_cascade_fullres", ("all",),
                      False)
    props = {"spacing": list(volume.spacing)}

    def run() -> np.ndarray:
        seg = np.asarray(low.predict_single_npy_array(volume.array[None], props, None, None,
                                                      False))
        return np.asarray(full.predict_single_npy_array(
            volume.array[None], props, seg[None].astype(np.int16), None, False))

    return run


def _bench(benchmark: Any, fn: Callable[[], Any]) -> Any:
    return benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("path", ["ours_ensemble", "nnunet_ensemble", "ours_one_member"])
def test_ensemble(benchmark: Any, volume: Volume, path: str) -> None:
    benchmark.group = "ensemble (2 members, mirroring)"
    ours = Segmenter(EXPORT, device="cpu", threads=THREADS, spec=_ensemble_spec())
    if path == "ours_ensemble":
        fn: Callable[[], Any] = lambda: ours.segment(volume).array  # noqa: E731
    elif path == "nnunet_ensemble":
        fn = _nnunet_ensemble(volume)
        assert (fn() == ours.segment(volume).array).mean() >= 0.999
    else:
        one = Segmenter(EXPORT, device="cpu", threads=THREADS, folds=[0])
        fn = lambda: one.segment(volume).array  # noqa: E731
    _bench(benchmark, fn)


@pytest.mark.parametrize("path", ["ours_cascade", "nnunet_cascade", "ours_lowres_only"])
def test_cascade(benchmark: Any, volume: Volume, path: str) -> None:
    benchmark.group = "cascade (3d_lowres -> 3d_cascade_fullres)"
    ours = Segmenter(CASCADE / "export", device="cpu", threads=THREADS)
    if path == "ours_cascade":
        fn: Callable[[], Any] = lambda: ours.segment(volume).array  # noqa: E731
    elif path == "nnunet_cascade":
        fn = _nnunet_cascade(volume)
        assert (fn() == ours.segment(volume).array).mean() >= 0.999
    else:
        low = ours._previous
        assert low is not None
        fn = lambda: low.channel_indices(volume)  # noqa: E731
    _bench(benchmark, fn)
