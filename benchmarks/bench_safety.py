"""Cost of the safety checks per phase, each beside the reference it is weighed against.

A realistic phase after z resampling (250 x 512 x 512, 1 x 0.8 x 0.8 mm) and the
sliding window's float16 logits for a 4 mm plan (the demo's) and a 1.5 mm plan:

* ``measure_phase`` (label counts, tumour centroid, fingerprint) vs the two label passes
  ``phase_report`` made before (it now reuses ``measure_phase``'s counts);
* ``check_body`` (every 4th slice) vs a full-volume count;
* ``mean_max_probability`` (int16 order keys) vs the float32 argmax + softmax way.

Run:  .venv/bin/pytest benchmarks/bench_safety.py -o python_files='bench_*.py' \\
          --benchmark-only --benchmark-columns=median,min,max,rounds
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hccatom.safety import DEFAULT_SAFETY_LIMITS, check_body, measure_phase
from hccatom.segmentation.confidence import mean_max_probability
from hccatom.volume import Volume

SHAPE = (250, 512, 512)


@pytest.fixture(scope="module")
def phase() -> tuple[Volume, Volume]:
    rng = np.random.default_rng(0)
    ct = Volume.from_array(rng.normal(0, 300, SHAPE).astype(np.float32), (1.0, 0.8, 0.8))
    lab = np.zeros(SHAPE, np.uint8)
    lab[60:200, 100:400, 80:380] = 1
    lab[100:140, 200:260, 150:210] = 2
    return ct, ct.with_array(lab)


def _logits(shape: tuple[int, int, int]) -> np.ndarray:
    """Background-dominated logits with a liver and a small tumour, like a real output."""
    rng = np.random.default_rng(1)
    out = rng.normal(0, 0.5, (3, *shape)).astype(np.float32)
    z, y, x = shape
    out[0] += 4
    out[1, z // 4:3 * z // 4, y // 5:4 * y // 5, x // 6:5 * x // 6] += 8
    out[2, 2 * z // 5:3 * z // 5, 2 * y // 5:y // 2, 2 * x // 5:x // 2] += 14
    return out.astype(np.float16)


def _two_label_passes(lab: np.ndarray) -> tuple[int, int]:
    return int(np.count_nonzero(lab == 1)), int(np.count_nonzero(lab == 2))


def _argmax_softmax(logits: np.ndarray, channel: int) -> float:
    f = logits.astype(np.float32)
    mask = f.argmax(0) == channel
    sel = f[:, mask]
    sel -= sel.max(0)
    return float(np.mean(1.0 / np.exp(sel).sum(0)))


@pytest.mark.parametrize("way", ["measure_phase", "reference_two_label_passes"])
def test_measure_phase(benchmark: Any, phase: tuple[Volume, Volume], way: str) -> None:
    ct, labels = phase
    if way == "measure_phase":
        m = benchmark.pedantic(measure_phase, args=(ct, labels),
                               kwargs={"liver_label": 1, "tumour_label": 2}, rounds=5)
        assert m.tumour_voxels == 40 * 60 * 60
    else:
        benchmark.pedantic(_two_label_passes, args=(np.asarray(labels.array),), rounds=5)


@pytest.mark.parametrize("way", ["every_4th_slice", "reference_full_count"])
def test_check_body(benchmark: Any, phase: tuple[Volume, Volume], way: str) -> None:
    ct, _ = phase
    if way == "every_4th_slice":
        benchmark.pedantic(check_body, args=(ct, DEFAULT_SAFETY_LIMITS), rounds=5)
    else:
        arr = np.asarray(ct.array)
        benchmark.pedantic(lambda: np.count_nonzero(arr > -500.0), rounds=5)


@pytest.mark.parametrize("plan", ["4mm_63x103x103", "1.5mm_167x273x273"])
@pytest.mark.parametrize("way", ["int16_keys", "reference_float32_argmax_softmax"])
def test_tumour_confidence(benchmark: Any, plan: str, way: str) -> None:
    shape = (63, 103, 103) if plan.startswith("4mm") else (167, 273, 273)
    logits = _logits(shape)
    if way == "int16_keys":
        got = benchmark.pedantic(mean_max_probability, args=(logits, 2), rounds=3)
    else:
        got = benchmark.pedantic(_argmax_softmax, args=(logits, 2), rounds=3)
    assert got == pytest.approx(_argmax_softmax(logits, 2), rel=1e-5)
