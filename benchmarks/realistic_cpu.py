"""Realistic-size segmentation on the CPU: ours (host and device-resident path) vs nnUNetPredictor.

A random-weight network with nnU-Net's default ``3d_fullres`` shape (PlainConvUNet, 6 stages,
features up to 320, 128^3 patch; built by ``gpu_benchmark.make_model_folder``), exported with
``export_nnunet`` (fp32, parity-checked against PyTorch), on one synthetic volume of
``--size`` (default 128 x 256 x 256, z y x) at the plan's spacing, so nothing is resampled.
Step 0.5, one fold, no mirroring, float16 accumulation (nnU-Net's), CPU only.

One timed run per side, in one process, in ``--order`` (default: ours host path,
``nnUNetPredictor`` (float32 on the CPU, its probabilities returned), ours device-resident
path (ONNX Runtime graphs on the CPU execution provider)); a second run in the reverse order
evens out load drift. Then, untimed unless ``--no-probabilities``: our
probabilities (device-resident path) for the mean |dp| against nnU-Net's. Reported: seconds
per side, ratios, label agreement, mean and max |dp|, and the host <-> device bytes each of
our paths moved (on the CPU EP "device" memory is host memory; the bytes are what would cross
the bus on a GPU). Heavy: minutes per side on a small machine. Not a CI test.

    python benchmarks/realistic_cpu.py --out /tmp/rc --json benchmarks/results/x.json
    python benchmarks/realistic_cpu.py --out /tmp/rc --size 128x192x192 --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SPACING_ZYX = (1.0, 0.8, 0.8)


def log(msg: str) -> None:
    print(f"[realistic_cpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def gpu_benchmark_module() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_benchmark", HERE / "gpu_benchmark.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_size(text: str) -> tuple[int, int, int]:
    """``"128x256x256"`` -> (z, y, x)."""
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) != 3 or min(parts) < 1:
        raise SystemExit(f"--size wants ZxYxX, e.g. 128x256x256; got {text!r}")
    return parts[0], parts[1], parts[2]


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the model and export")
    p.add_argument("--size", default="128x256x256", help="volume z x y x (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per side")
    p.add_argument("--no-probabilities", action="store_true",
                   help="skip the untimed probability pass (no mean |dp|)")
    p.add_argument("--order", default="host,nnunet,device",
                   help="order of the timed sides (a second run reversed evens out drift)")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    size = parse_size(args.size)
    order = args.order.split(",")
    if sorted(order) != ["device", "host", "nnunet"]:
        raise SystemExit(f"--order wants a permutation of host,nnunet,device; got {args.order!r}")

    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from hccatom import Segmenter
    from hccatom.export.nnunet_export import export_nnunet
    from hccatom.synthetic import ScanSpec, generate_patient

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    gb = gpu_benchmark_module()
    log(f"load average {load_average()}; building the random-weight default 3d_fullres plan")
    folder = gb.make_model_folder(args.out / "nnunet", False, SPACING_ZYX)
    seg_dir = args.out / "seg_export"
    if not (seg_dir / "segmentation_spec.json").is_file():
        log("export_nnunet fold 0 (fp32, parity vs PyTorch)")
        t0 = time.perf_counter()
        export_nnunet(folder, seg_dir, folds=[0])
        log(f"exported in {time.perf_counter() - t0:.0f} s")
    scan = ScanSpec(shape_yx=(size[1], size[2]), spacing_yx_mm=SPACING_ZYX[1:],
                    slice_thickness_mm=SPACING_ZYX[0], n_slices=size[0], noise_hu=15.0)
    vol = generate_patient(7, scan).arterial
    log(f"volume {vol.shape} (z, y, x) at {vol.spacing} mm")

    kw: dict[str, Any] = {"device": "cpu", "step_size": 0.5, "mirroring": False,
                          "threads": args.threads, "folds": [0]}
    host = Segmenter(seg_dir, device_resident=False, **kw)
    resident = Segmenter(seg_dir, device_resident=True, **kw)
    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
        perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
        verbose_preprocessing=False, allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,))

    seconds: dict[str, float] = {}
    labels: dict[str, np.ndarray] = {}
    transfers: dict[str, dict[str, int]] = {}
    loads: dict[str, str] = {}

    def ours(name: str, seg: Any) -> None:
        log(f"{name}: start (load {load_average()})")
        moved: dict[str, int] = {}
        t0 = time.perf_counter()
        labels[name] = np.asarray(seg.segment(vol, transfers=moved).array)
        seconds[name] = time.perf_counter() - t0
        transfers[name] = moved
        loads[name] = load_average()
        log(f"{name}: {seconds[name]:.1f} s, bytes {moved}")

    ref_probs: np.ndarray | None = None

    def reference() -> None:
        nonlocal ref_probs
        name = "nnunet_predictor"
        log(f"{name}: start (load {load_average()})")
        data = np.ascontiguousarray(vol.array[None], dtype=np.float32)
        t0 = time.perf_counter()
        lab, ref_probs = predictor.predict_single_npy_array(
            data, {"spacing": [float(s) for s in vol.spacing]}, None, None, True)
        seconds[name] = time.perf_counter() - t0
        labels[name] = np.asarray(lab)
        loads[name] = load_average()
        log(f"{name}: {seconds[name]:.1f} s")

    sides = {"host": lambda: ours("ours_host_path", host), "nnunet": reference,
             "device": lambda: ours("ours_device_resident", resident)}
    for side in order:
        sides[side]()

    ref = labels["nnunet_predictor"]
    agreement = {
        "host_vs_nnunet": float(np.mean(labels["ours_host_path"] == ref)),
        "device_resident_vs_nnunet": float(np.mean(labels["ours_device_resident"] == ref)),
        "host_vs_device_resident": float(np.mean(labels["ours_host_path"]
                                                 == labels["ours_device_resident"])),
    }
    dp: dict[str, float] | None = None
    if not args.no_probabilities and ref_probs is not None:
        log("untimed: our probabilities (device-resident path) for mean |dp|")
        probs, _grid = resident.probabilities(vol)
        diff = np.abs(probs.astype(np.float32) - np.asarray(ref_probs, dtype=np.float32))
        dp = {"mean": float(diff.mean()), "max": float(diff.max())}
    volume_bytes = int(np.prod(size)) * 4
    result = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_after_each_side": loads,
        "volume_zyx": list(size), "spacing_zyx_mm": list(SPACING_ZYX),
        "plan": "PlainConvUNet 6 stages, features 32-320, 128^3 patch, random weights",
        "step_size": 0.5, "mirroring": False, "folds": 1, "threads": args.threads,
        "order": order,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "ratio_nnunet_over": {
            "ours_host_path": round(seconds["nnunet_predictor"] / seconds["ours_host_path"], 3),
            "ours_device_resident": round(
                seconds["nnunet_predictor"] / seconds["ours_device_resident"], 3),
        },
        "label_agreement": agreement,
        "probability_abs_diff_vs_nnunet": dp,
        "transfer_bytes": transfers,
        "preprocessed_volume_bytes_float32": volume_bytes,
        "label_map_bytes_uint8": int(np.prod(size)),
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0],
                     "onnxruntime": __import__("onnxruntime").__version__},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
