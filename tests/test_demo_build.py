"""Pieces of the demo builder that need no training (the build itself never runs in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from hccatom.export.demo import (
    DemoConfig,
    DemoFigures,
    SegmentationTraining,
    dice,
    finish_segmentation,
    phase_image_plane,
)
from hccatom.export.nnunet_train import (
    PlanOverrides,
    TrainConfig,
    shrink_plans,
)
from hccatom.preprocess import PreprocessSpec
from hccatom.synthetic import ScanSpec, generate_patient

pytestmark = pytest.mark.export


def test_dice_known_values() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def _plans(transpose: list[int]) -> dict:
    return {
        "transpose_forward": transpose,
        "configurations": {
            "2d": {},
            "3d_fullres": {"patch_size": [1, 1, 1], "batch_size": 9, "spacing": [1, 1, 1],
                           "architecture": {"arch_kwargs": {}}},
        },
    }


@pytest.mark.parametrize("transpose", [[0, 1, 2], [1, 0, 2]])
def test_shrink_plans_maps_zyx_overrides_onto_nnunet_axes(tmp_path: Path,
                                                          transpose: list[int]) -> None:
    f = tmp_path / "plans.json"
    f.write_text(json.dumps(_plans(transpose)))
    ov = PlanOverrides(patch_size=(24, 72, 80), features_per_stage=(4, 8, 16),
                       strides=((1, 1, 1), (1, 2, 2), (2, 2, 2)), spacing_mm=(5.0, 4.0, 3.0))
    shrink_plans(f, ov)
    cfg = json.loads(f.read_text())["configurations"]
    assert set(cfg) == {"3d_fullres"}
    c = cfg["3d_fullres"]
    assert c["patch_size"] == [[24, 72, 80][a] for a in transpose]
    assert c["spacing"] == [[5.0, 4.0, 3.0][a] for a in transpose]
    assert c["architecture"]["arch_kwargs"]["strides"][1] == [[1, 2, 2][a] for a in transpose]
    assert c["architecture"]["arch_kwargs"]["n_stages"] == 3
    assert c["batch_size"] == 2


def test_train_config_round_trips(tmp_path: Path) -> None:
    cfg = TrainConfig(workspace="w", dataset_id=7, dataset_name="X", fold=0,
                      overrides=PlanOverrides(spacing_mm=(4.0, 4.0, 4.0)))
    cfg.to_json(tmp_path / "c.json")
    assert TrainConfig.from_json(tmp_path / "c.json") == cfg


def test_phase_image_is_the_predictors_model_image() -> None:
    p = generate_patient(2, ScanSpec(shape_yx=(96, 96), spacing_yx_mm=(4.0, 4.0),
                                     slice_thickness_mm=5.0, n_slices=40))
    spec = PreprocessSpec.model_validate({})
    img = phase_image_plane(p.arterial, p.arterial_labels, spec)
    assert img.shape == (224, 224) and img.dtype == np.float32
    assert float(img.min()) >= -1.0 and float(img.max()) <= 1.0
    assert float(img.std()) > 0.1  # a real crop, not padding


def test_config_and_figures_serialise() -> None:
    json.dumps(DemoConfig().as_dict())
    f = DemoFigures(seed=1, dice_liver=[0.9, 0.95], dice_tumour=[0.7, 0.8])
    d = f.as_dict()
    assert d["segmentation_dice_heldout"]["liver_mean"] == pytest.approx(0.925)
    json.dumps(d)


def test_a_failed_segmentation_process_is_reported_with_its_log(tmp_path: Path) -> None:
    """The build waits for nnU-Net's process, logs its epoch while waiting, and raises with
    the tail of its log when it fails (a stand-in process, no training)."""
    log_file = tmp_path / "nnunet_train.log"
    script = ("import sys, time\n"
              "print('2026-11-27 Epoch 7', flush=True)\n"
              "time.sleep(0.6)\n"
              "print('RuntimeError: out of patience', flush=True)\n"
              "sys.exit(3)\n")
    with log_file.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=sink,
                                stderr=subprocess.STDOUT)
    run = SegmentationTraining(proc, log_file, tmp_path / "model", time.time())
    messages: list[str] = []
    with pytest.raises(RuntimeError, match=r"(?s)nnU-Net training failed.*out of patience"):
        finish_segmentation(run, tmp_path, messages.append, seed=0, poll_s=0.2)
    assert proc.returncode == 3
    assert any("epoch 7" in m for m in messages)


def test_threads_file_raises_torch_threads_once_it_appears(tmp_path: Path) -> None:
    import torch

    from hccatom.export.nnunet_train import _maybe_more_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        flag = tmp_path / "threads.txt"
        _maybe_more_threads(flag)  # not there yet
        assert torch.get_num_threads() == 1
        flag.write_text("")  # half written
        _maybe_more_threads(flag)
        assert torch.get_num_threads() == 1
        flag.write_text("2\n")
        _maybe_more_threads(flag)
        assert torch.get_num_threads() == 2
        _maybe_more_threads(None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_cores_are_handed_over_only_to_a_running_training(tmp_path: Path) -> None:
    from hccatom.export.demo import SEG_THREADS_FILE, hand_over_cores

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    run = SegmentationTraining(done, tmp_path / "log", tmp_path / "model", time.time())
    hand_over_cores(run, tmp_path, 2, print)
    assert not (tmp_path / SEG_THREADS_FILE).exists()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        messages: list[str] = []
        hand_over_cores(SegmentationTraining(alive, tmp_path / "log", tmp_path, time.time()),
                        tmp_path, 2, messages.append)
        assert (tmp_path / SEG_THREADS_FILE).read_text() == "2"
        assert "2 threads" in messages[0]
    finally:
        alive.kill()
        alive.wait()
