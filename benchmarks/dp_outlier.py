"""Where the max |dp| between our segmentation and ``nnUNetPredictor`` comes from (issue #11).

The realistic CPU run (``realistic_cpu.py``: 128^3 patch, random weights, 128 x 192 x 192)
matched nnU-Net's labels at 99.905 % with mean |dp| 3.5e-4 but max |dp| 0.243. That network
is too slow to dissect on a shared 2-core VM, so this script keeps what shapes the sliding
window (the 128^3 patch, hence nnU-Net's float16 Gaussian; step 0.5; the same volume
size, spacing and phantom; one fold, no mirroring, float16 accumulation) and swaps the
network for the tiny PlainConvUNet of ``gpu_benchmark.py --small`` (seeded random weights),
which runs a 128^3 tile in seconds. On the same preprocessed array it computes the
sliding-window logits five ways:

* ``nnunet``: ``nnUNetPredictor.predict_sliding_window_return_logits`` (PyTorch, CPU);
* ``ours_f16_ort``: our host sliding window, float16 accumulation, ONNX Runtime network
  (what ``Segmenter`` runs);
* ``ours_f16_torch``: our accumulation fed with the PyTorch network's tile outputs;
* ``ours_f32_ort`` / ``ours_f32_torch``: the same with float32 accumulation.

``ours_f16_torch`` vs ``nnunet`` isolates the accumulation (same network outputs);
``ours_f32_ort`` vs ``ours_f32_torch`` isolates the network (no float16 rounding); the
tile outputs of both networks are compared directly. |dp| is binned by the float16 weight
sum (sum of Gaussian weights over the tiles covering a voxel), and the worst voxel is shown
with both sides' values. Prints JSON; heavy for CI, a few minutes here.

    python benchmarks/dp_outlier.py --out /tmp/dp --json benchmarks/results/dp-outlier.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from realistic_cpu import SPACING_ZYX, gpu_benchmark_module  # same folder: the same plan

F16_MIN_NORMAL = float(np.finfo(np.float16).tiny)  # 6.1e-5: below it float16 is subnormal


def log(msg: str) -> None:
    print(f"[dp_outlier {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def model_folder(out: Path, patch: int) -> Path:
    """The tiny random-weight PlainConvUNet with a ``patch``^3 patch in its plans."""
    folder = gpu_benchmark_module().make_model_folder(out / "nnunet", True, SPACING_ZYX)
    plans_path = folder / "plans.json"
    plans = json.loads(plans_path.read_text())
    plans["configurations"]["3d_fullres"]["patch_size"] = [patch] * 3
    plans_path.write_text(json.dumps(plans, indent=2))
    return folder


def softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float32)
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def weight_sum(shape: tuple[int, ...], patch: tuple[int, ...], step: float) -> np.ndarray:
    """The float16 Gaussian weight sum per voxel, accumulated as nnU-Net does (on the volume
    zero-padded to the patch where smaller, then cropped back)."""
    from hccatom.segmentation.sliding_window import gaussian_importance, pad_to_patch, tile_starts

    g = gaussian_importance(patch)
    padded, crop = pad_to_patch(np.zeros(shape, np.float16), patch)
    w = np.zeros(padded.shape, np.float16)
    for s in tile_starts(padded.shape, patch, step):
        sl = tuple(slice(a, a + p) for a, p in zip(s, patch, strict=True))
        w[sl] = (w[sl].astype(np.float32) + g).astype(np.float16)
    return w[crop]


def face_distance(shape: tuple[int, ...]) -> np.ndarray:
    """Voxels from each voxel to the nearest face of the volume."""
    axes = [np.minimum(np.arange(n), n - 1 - np.arange(n)) for n in shape]
    z, y, x = (a.reshape([-1 if i == k else 1 for i in range(3)]) for k, a in enumerate(axes))
    return np.minimum(np.minimum(z, y), x)


def recording(run: Callable[[np.ndarray], np.ndarray], store: list[np.ndarray]
              ) -> Callable[[np.ndarray], np.ndarray]:
    def wrapped(x: np.ndarray) -> np.ndarray:
        y = run(x)
        store.extend(np.asarray(t, np.float32) for t in y)
        return y

    return wrapped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the model and export")
    p.add_argument("--size", default="128x192x192", help="volume z x y x (default %(default)s)")
    p.add_argument("--patch", type=int, default=128, help="cubic patch edge (multiple of 8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))

    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from hccatom import Segmenter
    from hccatom.export.nnunet_export import export_nnunet
    from hccatom.segmentation import preprocess
    from hccatom.segmentation.pipeline import sliding_window_logits
    from hccatom.synthetic import ScanSpec, generate_patient

    torch.set_num_threads(args.threads)
    folder = model_folder(args.out, args.patch)
    seg_dir = args.out / "seg_export"
    if not (seg_dir / "segmentation_spec.json").is_file():
        log("export_nnunet fold 0 (fp32, parity vs PyTorch)")
        export_nnunet(folder, seg_dir, folds=[0])
    scan = ScanSpec(shape_yx=(size[1], size[2]), spacing_yx_mm=SPACING_ZYX[1:],
                    slice_thickness_mm=SPACING_ZYX[0], n_slices=size[0], noise_hu=15.0)
    vol = generate_patient(7, scan).arterial
    seg = Segmenter(seg_dir, device="cpu", mirroring=False, folds=[0], threads=args.threads)
    spec = seg.spec
    pre = preprocess(vol.array, vol.spacing, spec)
    data = np.ascontiguousarray(pre.data, dtype=np.float32)
    log(f"volume {vol.shape}, preprocessed {data.shape}, patch {spec.patch_size}")

    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
        perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
        verbose_preprocessing=False, allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,))
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    predictor.network.eval()

    engine = seg.engines[0]

    def ort_tile(x: np.ndarray) -> np.ndarray:
        return engine.run({spec.input_name: x})[spec.output_name]

    def torch_tile(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return predictor.network(torch.from_numpy(x)).float().numpy()

    logits: dict[str, np.ndarray] = {}
    tiles: dict[str, list[np.ndarray]] = {"ort": [], "torch": []}
    t0 = time.perf_counter()
    with torch.inference_mode():
        logits["nnunet"] = predictor.predict_sliding_window_return_logits(
            torch.from_numpy(data)).float().numpy()
    log(f"nnunet: {time.perf_counter() - t0:.1f} s")
    for acc in ("float16", "float32"):
        for name, run in (("ort", ort_tile), ("torch", torch_tile)):
            store = tiles[name] if acc == "float16" else []
            t0 = time.perf_counter()
            short = {"float16": "f16", "float32": "f32"}[acc]
            logits[f"ours_{short}_{name}"] = np.asarray(sliding_window_logits(
                data, spec, [recording(run, store)], step_size=0.5, batch_size=1,
                accumulate=acc,  # type: ignore[arg-type]
            ), np.float32)
            log(f"ours {acc} {name}: {time.perf_counter() - t0:.1f} s")

    probs = {k: softmax(v) for k, v in logits.items()}
    tile_diff = [float(np.abs(a - b).max()) for a, b in zip(tiles["ort"], tiles["torch"],
                                                            strict=True)]
    tile_scale = [float(np.abs(b).max()) for b in tiles["torch"]]

    def compare(a: str, b: str) -> dict[str, Any]:
        dp = np.abs(probs[a] - probs[b])
        return {"mean_abs_dp": float(dp.mean()), "max_abs_dp": float(dp.max()),
                "label_agreement": float(np.mean(probs[a].argmax(0) == probs[b].argmax(0))),
                "max_abs_dlogit": float(np.abs(logits[a] - logits[b]).max())}

    pairs = {
        "ours_f16_ort_vs_nnunet (what Segmenter ships)": compare("ours_f16_ort", "nnunet"),
        "ours_f16_torch_vs_nnunet (same network outputs: the accumulation)":
            compare("ours_f16_torch", "nnunet"),
        "ours_f32_ort_vs_ours_f32_torch (no float16: the network)":
            compare("ours_f32_ort", "ours_f32_torch"),
        "ours_f16_ort_vs_ours_f16_torch (the network through float16)":
            compare("ours_f16_ort", "ours_f16_torch"),
    }
    w = weight_sum(tuple(data.shape[1:]), tuple(spec.patch_size), 0.5).astype(np.float32)
    dp = np.abs(probs["ours_f16_ort"] - probs["nnunet"]).max(axis=0)
    edges = [0.0, F16_MIN_NORMAL, 1e-3, 1e-2, 1e-1, 1.0, np.inf]
    bins = []
    for lo, hi in itertools.pairwise(edges):
        m = (w >= lo) & (w < hi)
        if m.any():
            bins.append({"weight_sum_from": lo, "weight_sum_below": hi, "voxels": int(m.sum()),
                         "max_abs_dp": float(dp[m].max()), "mean_abs_dp": float(dp[m].mean()),
                         "voxels_dp_over_0.01": int((dp[m] > 0.01).sum())})
    face = face_distance(tuple(int(v) for v in w.shape))
    sub = w < F16_MIN_NORMAL
    big = dp > 0.01
    region = {
        "voxels_weight_sum_subnormal": int(sub.sum()),
        "fraction_weight_sum_subnormal": float(sub.mean()),
        "voxels_weight_sum_smallest_subnormal_2^-24": int((w == 2.0**-24).sum()),
        "max_distance_to_nearest_face_of_subnormal_voxels": int(face[sub].max()) if sub.any()
        else None,
        "voxels_dp_over_0.01": int(big.sum()),
        "of_which_weight_sum_subnormal": int((big & sub).sum()),
        "max_distance_to_nearest_face_of_dp_over_0.01": int(face[big].max()) if big.any()
        else None,
    }
    worst = tuple(int(i) for i in np.unravel_index(int(dp.argmax()), dp.shape))
    shape = data.shape[1:]
    at = (slice(None), *worst)
    worst_info = {
        "voxel_zyx": list(worst),
        "distance_to_faces_zyx": [[c, s - 1 - c] for c, s in zip(worst, shape, strict=True)],
        "weight_sum_float16": float(w[worst]),
        "weight_sum_is_subnormal_float16": bool(w[worst] < F16_MIN_NORMAL),
        "max_abs_dp": float(dp[worst]),
        **{f"logits_{k}": [float(v) for v in logits[k][at]] for k in logits},
        **{f"probabilities_{k}": [round(float(v), 5) for v in probs[k][at]] for k in probs},
    }
    result = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
                   "(shared, loaded)",
        "volume_zyx": list(size), "patch": [args.patch] * 3, "step_size": 0.5,
        "network": "tiny PlainConvUNet (gpu_benchmark --small shape), seeded random weights",
        "tiles": len(tiles["ort"]),
        "tile_logits_max_abs_diff_ort_vs_torch": max(tile_diff),
        "tile_logits_max_abs": max(tile_scale),
        "comparisons": pairs,
        "dp_by_float16_weight_sum": bins,
        "where": region,
        "worst_voxel": worst_info,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
