"""GPU benchmark: the two-phase study through the PyTorch reference and through our engines.

What it measures (one script, one table; meant for the lent H100, runs anywhere):

* segmentation of both phases of a 512 x 512 x 200 study at 0.8 x 0.8 x 1 mm with an nnU-Net
  default-style ``3d_fullres`` plan (PlainConvUNet, 6 stages, features up to 320, 128^3
  patch, random weights), step 0.5, no mirroring:
  reference = ``nnUNetPredictor`` (its own fp16 autocast on CUDA, everything on the device);
  ours = ``hccatom.Segmenter`` (ONNX Runtime, CUDA EP when present);
* scoring: the ``paper``-size SELECTION x 4 (random weights): PyTorch eager x 4 vs our fused
  ONNX graph (one call);
* the crop stage between them (ours, numpy), so the end-to-end sum is complete;
* per-stage wall times (median of ``--repeats``), peak GPU memory (PyTorch's allocator for
  the reference; ``nvidia-smi`` sampling for ONNX Runtime), label agreement of the two
  segmentations, and the floor: FLOPs of the work / ``--peak-tflops``.

``--small`` shrinks everything (tiny plan, 32^3 patch, small volume, ``tiny`` SELECTION) so
the script can be tested on a CPU; CI never runs it.

Usage (CPU smoke test):   python benchmarks/gpu_benchmark.py --small --device cpu --out /tmp/gb
Usage (device machine):   see benchmarks/README.md (carrying onnxruntime-gpu and nnunetv2).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_MODEL = ROOT / "tests" / "fixtures" / "nnunet" / "model"


# --- the nnU-Net model folder with random weights --------------------------------------------
def unet_architecture(small: bool) -> dict[str, Any]:
    """PlainConvUNet kwargs: nnU-Net's default 3d_fullres shape, or a tiny one (``small``)."""
    n = 4 if small else 6
    feats = [8, 16, 32, 32] if small else [32, 64, 128, 256, 320, 320]
    return {
        "n_stages": n,
        "features_per_stage": feats,
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def make_model_folder(dst: Path, small: bool, spacing_zyx: tuple[float, float, float]) -> Path:
    """An nnU-Net v2 results folder (plans, dataset.json, fold_0) with seeded random weights."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    src = next(FIXTURE_MODEL.iterdir())
    folder = dst / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "dataset.json", folder / "dataset.json")
    plans = json.loads((src / "plans.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    cfg["patch_size"] = [32, 32, 32] if small else [128, 128, 128]
    cfg["spacing"] = list(spacing_zyx)
    cfg["architecture"]["arch_kwargs"] = unet_architecture(small)
    cfg["architecture"]["_kw_requires_import"] = ["conv_op", "norm_op", "dropout_op", "nonlin"]
    plans["original_median_spacing_after_transp"] = list(spacing_zyx)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    arch = cfg["architecture"]
    torch.manual_seed(0)
    net = get_network_from_plans(
        arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
        1, 3, allow_init=True, deep_supervision=False,
    )
    ckpt = {
        "network_weights": net.state_dict(),
        "trainer_name": "nnUNetTrainer",
        "init_args": {"configuration": "3d_fullres", "fold": 0},
        "inference_allowed_mirroring_axes": (0, 1, 2),
        "current_epoch": 0,
    }
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    return folder


# --- FLOP counts ------------------------------------------------------------------------------
def unet_flops_per_tile(folder: Path, patch: list[int]) -> float:
    """Multiply-adds x 2 of every convolution of one tile (hooks on a meta-free CPU pass)."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    plans = json.loads((folder / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    net = get_network_from_plans(
        arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
        1, 3, allow_init=True, deep_supervision=False,
    ).eval()
    total = [0.0]

    def hook(mod: torch.nn.Module, _inp: Any, out: torch.Tensor) -> None:
        k = float(np.prod(mod.kernel_size))  # type: ignore[arg-type]
        if isinstance(mod, torch.nn.ConvTranspose3d):
            voxels_in = float(np.prod(_inp[0].shape[2:]))
            total[0] += 2.0 * mod.in_channels * mod.out_channels * k * voxels_in
        else:
            total[0] += 2.0 * mod.in_channels * mod.out_channels * k * float(
                np.prod(out.shape[2:])
            ) / mod.groups

    for m in net.modules():
        if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.zeros(1, 1, *patch))
    return total[0]


def selection_flops(size_name: str) -> float:
    """FLOPs of one SELECTION forward pass (paper fusion: 2 multimodal + plain blocks)."""
    from hccatom.export.selection_model import get_size

    s = get_size(size_name)
    h, mlp, layers = s.hidden, s.mlp, s.layers
    n_img, n_txt = 2 * ((s.image_size // s.patch) ** 2 + 1), s.n_lab + s.n_demo + s.n_iv
    n_all = n_img + n_txt
    patch = 2 * 2.0 * (s.image_size // s.patch) ** 2 * 3 * s.patch**2 * h

    def block(t: int) -> float:
        return 2.0 * t * (4 * h * h + 2 * h * mlp) + 2.0 * 2 * t * t * h

    multimodal = block(n_img) + block(n_txt) + 2.0 * 2 * 2 * n_img * n_txt * h
    m = s.multimodal_layers
    return patch + m * multimodal + (layers - m) * block(n_all)


# --- timing and memory ------------------------------------------------------------------------
class GpuMemorySampler:
    """Peak device memory in MiB seen by ``nvidia-smi`` while the block runs (0 without it)."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _read(self) -> float:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, check=False,
        )
        try:
            return float(out.stdout.split()[0])
        except (IndexError, ValueError):
            return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self._read())
            time.sleep(self.interval_s)

    def __enter__(self) -> GpuMemorySampler:
        if self.available:
            self.baseline_mib = self._read()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()


def timed(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> tuple[float, Any]:
    """Median seconds over ``repeats`` runs after one warm-up, and the last result."""
    result = fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


# --- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for models and results")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--small", action="store_true", help="tiny sizes for a CPU smoke test")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=790.0,
                   help="measured dense fp16/bf16 peak of the GPU (H100 here: ~790)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from hccatom import Segmenter
    from hccatom.engines import OnnxRuntimeEngine
    from hccatom.export.nnunet_export import export_nnunet
    from hccatom.export.selection_model import SelectionModel, init_random
    from hccatom.export.selection_onnx import COHORTS, export_fused
    from hccatom.preprocess import crop_liver_box, model_image, pick_slice
    from hccatom.synthetic import ScanSpec, generate_patient

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731

    scan = (
        ScanSpec(shape_yx=(96, 96), spacing_yx_mm=(3.2, 3.2), slice_thickness_mm=4.0,
                 n_slices=40)
        if args.small else
        ScanSpec(shape_yx=(512, 512), spacing_yx_mm=(0.8, 0.8), slice_thickness_mm=1.0,
                 n_slices=200, max_shift_mm=4.0)
    )
    log(f"study {scan.shape_zyx} at {scan.spacing_zyx} mm")
    patient = generate_patient(7, scan)
    phases = {"arterial": patient.arterial, "portal": patient.portal}
    truth = {"arterial": patient.arterial_labels, "portal": patient.portal_labels}

    log("nnU-Net model folder (random weights) and ONNX export with parity")
    folder = make_model_folder(out / "nnunet", args.small, scan.spacing_zyx)
    seg_dir = out / "seg_export"
    export_nnunet(folder, seg_dir, folds=[0])
    size = "tiny" if args.small else "paper"
    log(f"SELECTION x 4 ({size}) and fused ONNX export with parity")
    torch.manual_seed(0)
    models = {c: init_random(SelectionModel(size), seed=i).eval() for i, c in enumerate(COHORTS)}
    fused_path = export_fused(models, out / "selection", exporter="legacy", batches=(1,)).model_path

    rows: list[dict[str, Any]] = []
    record = lambda **r: rows.append(r)  # noqa: E731

    # ---- reference: nnUNetPredictor + PyTorch eager SELECTION x 4
    log("reference: nnUNetPredictor")
    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
        perform_everything_on_device=cuda, device=dev, verbose=False,
        verbose_preprocessing=False, allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,))
    ref_labels: dict[str, np.ndarray] = {}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for name, vol in phases.items():
        def run_ref(v: Any = vol) -> np.ndarray:
            return predictor.predict_single_npy_array(
                v.array[None].astype(np.float32), {"spacing": list(v.spacing)}, None, None, False
            )
        t, ref_labels[name] = timed(run_ref, args.repeats, sync)
        record(stage=f"segment {name}", path="reference", seconds=t)
    ref_seg_mem = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0

    images = {}
    for name, vol in phases.items():
        pick = pick_slice(truth[name])
        crop = crop_liver_box(vol, truth[name], pick.index)
        images[name] = model_image(crop)
    rng = np.random.default_rng(0)
    feeds = {
        "arterial": images["arterial"][None], "portal": images["portal"][None],
        "lab": rng.normal(size=(1, 8)).astype(np.float32),
        "demo": rng.normal(size=(1, 6)).astype(np.float32),
        "iv": rng.normal(size=(1, 6)).astype(np.float32),
    }
    log("reference: PyTorch eager SELECTION x 4")
    for m in models.values():
        m.to(dev)
    tfeeds = {k: torch.from_numpy(v).to(dev) for k, v in feeds.items()}
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def run_torch_selection() -> np.ndarray:
        with torch.no_grad():
            return np.array([
                torch.sigmoid(m(**tfeeds)).item() for m in models.values()  # type: ignore[arg-type]
            ])
    t, ref_scores = timed(run_torch_selection, args.repeats, sync)
    record(stage="score x4", path="reference", seconds=t)
    ref_sel_mem = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
    predictor.network.to("cpu")  # free the device for our path
    for m in models.values():
        m.to("cpu")
    if cuda:
        torch.cuda.empty_cache()

    # ---- ours: Segmenter + crop + fused ONNX graph
    log("ours: hccatom.Segmenter")
    with GpuMemorySampler() as mem:
        seg = Segmenter(seg_dir, device=args.device, step_size=0.5, mirroring=False,
                        batch_size=2)
        ours_labels: dict[str, np.ndarray] = {}
        stage_times: dict[str, dict[str, float]] = {}
        for name, vol in phases.items():
            t, lab = timed(lambda v=vol: seg.segment(v), args.repeats, lambda: None)
            ours_labels[name] = lab.array
            record(stage=f"segment {name}", path="ours", seconds=t)
            detail: dict[str, float] = {}
            seg.segment(vol, timings=detail)
            stage_times[name] = detail

        def run_crop() -> None:
            for name, vol in phases.items():
                pick = pick_slice(truth[name])
                model_image(crop_liver_box(vol, truth[name], pick.index))
        t, _ = timed(run_crop, args.repeats, lambda: None)
        record(stage="slice pick + crop (both)", path="ours", seconds=t)

        log("ours: fused SELECTION graph")
        engine = OnnxRuntimeEngine(fused_path, device=args.device)
        t, our_scores = timed(lambda: engine.run(feeds)["scores"][0], args.repeats, lambda: None)
        record(stage="score x4", path="ours", seconds=t)
    providers = {"segmenter": seg.providers, "selection": engine.providers}

    # ---- figures
    agreement = {
        n: float(np.mean(ours_labels[n] == ref_labels[n])) for n in phases
    }
    score_diff = float(np.max(np.abs(np.asarray(our_scores) - ref_scores)))
    patch = json.loads((seg_dir / "segmentation_spec.json").read_text())["patch_size"]
    tiles = sum(
        int(np.prod([np.ceil(max(s - p, 0) / (p * 0.5)) + 1 for s, p in zip(
            np.round(np.array(v.shape) * np.array(v.spacing) / np.array(scan.spacing_zyx)),
            patch, strict=True)]))
        for v in phases.values()
    )
    flops = tiles * unet_flops_per_tile(folder, patch) + 4 * selection_flops(size)
    floor_s = flops / (args.peak_tflops * 1e12)
    ref_total = sum(r["seconds"] for r in rows if r["path"] == "reference")
    ours_total = sum(r["seconds"] for r in rows if r["path"] == "ours")
    result = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "study_shape_zyx": list(scan.shape_zyx), "spacing_zyx_mm": list(scan.spacing_zyx),
        "rows": rows, "ours_stage_seconds": stage_times, "providers": providers,
        "reference_total_s": ref_total, "ours_total_s": ours_total,
        "label_agreement": agreement, "max_score_diff": score_diff,
        "peak_mem_mib": {"reference_segmentation": ref_seg_mem,
                         "reference_selection": ref_sel_mem,
                         "ours_nvidia_smi": mem.peak_mib - getattr(mem, "baseline_mib", 0.0)},
        "tiles": tiles, "tflop": flops / 1e12, "peak_tflops": args.peak_tflops,
        "floor_s": floor_s, "goal_s": 1.0,
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    }
    (out / "gpu_benchmark.json").write_text(json.dumps(result, indent=2, default=str))

    print(f"\n{'stage':28s} {'reference s':>12s} {'ours s':>10s} {'ratio':>7s}")
    for stage in dict.fromkeys(r["stage"] for r in rows):
        ref = next((r["seconds"] for r in rows if r["stage"] == stage
                    and r["path"] == "reference"), float("nan"))
        ours = next((r["seconds"] for r in rows if r["stage"] == stage
                     and r["path"] == "ours"), float("nan"))
        print(f"{stage:28s} {ref:12.3f} {ours:10.3f} {ref / ours:7.2f}")
    print(f"{'total':28s} {ref_total:12.3f} {ours_total:10.3f} {ref_total / ours_total:7.2f}")
    print(f"\nwork: {tiles} tiles + 4 SELECTION passes = {flops / 1e12:.2f} TFLOP; floor at "
          f"{args.peak_tflops:.0f} TFLOP/s = {floor_s * 1e3:.1f} ms; goal 1.0 s")
    print(f"our segmentation stages (s): {json.dumps(stage_times)}")
    print(f"providers: {providers}")
    print(f"label agreement ours vs reference: {agreement}; max |score diff| {score_diff:.2e}")
    print(f"peak memory MiB: {json.dumps(result['peak_mem_mib'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
