"""Build the GPU benchmark bundle and run ``hccatom bench`` on it (the device run's last step).

1. an nnU-Net v2 model folder with nnU-Net's default ``3d_fullres`` shape (PlainConvUNet, 6
   stages, features up to 320, 128^3 patch) and seeded random weights; ``--small``: a tiny
   plan for CPU smoke tests;
2. ``export_nnunet`` (fp32, parity-checked against PyTorch) plus the fp16 twin of each fold.
   Random weights make the fp16 gate's label maps meaningless, so here the twin is written
   UNGATED and the bundle says so in its provenance: these bundles are for timing only;
3. the paper-size SELECTION x 4 (random weights) as one fused graph, fp32 + fp16;
4. a bundle of both, then ``hccatom bench`` with ``--precision fp16`` (and
   ``--compare-nnunet`` on the same model folder) and with ``--precision fp32``; with
   ``--cuda-graphs`` a third run, ``--precision fp16 --cuda-graphs``.

Every file lands under ``--out``; the bench JSONs are copied to ``--results``.

    python benchmarks/gpu/device_bench.py --out /tmp/gb --results $OUT --device cuda
    python benchmarks/gpu/device_bench.py --out /tmp/gb --results /tmp/gb --device cpu --small
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _gpu_benchmark_module() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_benchmark", HERE.parent / "gpu_benchmark.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def log(msg: str) -> None:
    print(f"[device_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build(out: Path, small: bool) -> tuple[Path, Path]:
    """(bundle, nnU-Net model folder)."""
    import torch

    from hccatom.atom import PAPER_MSS
    from hccatom.bundle import Provenance
    from hccatom.engines.providers import file_sha256
    from hccatom.export.bundle_writer import build_bundle
    from hccatom.export.fp16 import convert_graph_fp16, fp16_path
    from hccatom.export.nnunet_export import export_nnunet
    from hccatom.export.selection_model import SelectionModel, init_random
    from hccatom.export.selection_onnx import COHORTS, export_fused

    gb = _gpu_benchmark_module()
    spacing = (4.0, 3.0, 3.0) if small else (1.0, 0.8, 0.8)
    log("nnU-Net model folder with random weights")
    folder = gb.make_model_folder(out / "nnunet", small, spacing)
    seg = out / "seg_export"
    log("export nnU-Net fold 0 (fp32, parity vs PyTorch) and its fp16 twin (ungated)")
    result = export_nnunet(folder, seg, folds=[0])
    folds = []
    for f in result.spec.folds:
        half = convert_graph_fp16(seg / f.onnx, fp16_path(seg / f.onnx))
        folds.append(f.model_copy(update={"onnx_fp16": half.name,
                                          "sha256_fp16": file_sha256(half)}))
    result.spec.model_copy(update={"folds": folds}).save(seg)
    size = "tiny" if small else "paper"
    log(f"SELECTION x 4 ({size}, random weights), fused, fp32 + fp16")
    torch.manual_seed(0)
    models = {c: init_random(SelectionModel(size), seed=i).eval()  # type: ignore[arg-type]
              for i, c in enumerate(COHORTS)}
    sel = out / "selection"
    export_fused(models, sel, exporter="legacy", batches=(1,), precision="both")
    log("bundle")
    bundle = build_bundle(
        out / "bundle", segmentation=seg, fused=sel, name="gpu-benchmark-random-weights",
        version="0.0.1", thresholds=dict(PAPER_MSS), synthetic=True, overwrite=True,
        provenance=Provenance(notes="random weights, for timing only; the nnU-Net fp16 twin "
                              "was not parity-gated"),
    )
    return bundle, folder


def measured_gpu_peak_tflops(n: int = 8192, reps: int = 10) -> float:
    """Dense fp16 GEMM rate of this GPU through PyTorch (mean of ``reps`` after 3 warm-ups):
    the 'measured peak' the FLOP floor is held against (PyTorch is there on the device)."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / reps
    del a, b
    torch.cuda.empty_cache()
    return 2.0 * n**3 / dt / 1e12


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--small", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--cuda-graphs", action="store_true",
                   help="a third run: --precision fp16 --cuda-graphs (fixed-shape network)")
    args = p.parse_args(argv)
    from hccatom.cli import main as hccatom

    args.out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    bundle, folder = build(args.out, args.small)
    size = ["--small"] if args.small else ["--size", "512x512x200"]
    common = ["bench", "--bundle", str(bundle), "--device", args.device, *size,
              "--repeats", str(args.repeats), "--warmup", "1", "--no-mirroring"]
    peak = args.peak_tflops
    if peak is None and args.device == "cuda":
        peak = measured_gpu_peak_tflops()
        log(f"measured fp16 GEMM peak: {peak:.0f} TFLOP/s (passed as --peak-tflops)")
    if peak:
        common += ["--peak-tflops", f"{peak:.1f}"]
    codes = {}
    runs = [("fp16", "fp16", ["--compare-nnunet", str(folder)]), ("fp32", "fp32", [])]
    if args.cuda_graphs:
        runs.append(("fp16_cuda_graphs", "fp16", ["--cuda-graphs"]))
    for name, precision, extra in runs:
        out = args.results / f"bench_{args.device}_{name}.json"
        log(f"hccatom bench --precision {precision} {' '.join(extra[:1])}")
        codes[name] = hccatom([*common, "--precision", precision, *extra,
                               "--json", str(out)])
    (args.results / "device_bench_codes.json").write_text(json.dumps(codes))
    shutil.copy(folder / "plans.json", args.results / "plans.json")
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
