"""fp16 vs fp32 segmentation graphs on the CPU provider: reported, not tuned (issue 11).

ONNX Runtime's CPU provider is not expected to gain from fp16 (x86 CPUs without fp16
arithmetic convert around each kernel); this script measures by how much it loses, on the
demo bundle's network and on the nnU-Net fixture, interleaving A and B in one run so that
the shared machine's load drifts over both alike. The fp16 twins are written to a temporary
folder (the committed demo bundle is never touched). Needs onnx (export extra).

    python benchmarks/bench_fp16_cpu.py [--rounds 7] [--batch 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = {
    "demo bundle fold_0": ROOT / "sdk" / "data" / "demo_bundle" / "segmentation",
    "nnU-Net fixture fold_0": ROOT / "tests" / "fixtures" / "nnunet" / "export",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from hccatom.bench_probe import machine_facts
    from hccatom.engines import OnnxRuntimeEngine
    from hccatom.export.fp16 import convert_graph_fp16, fp16_path

    rows = []
    with tempfile.TemporaryDirectory(prefix="hccatom-fp16-") as tmp:
        for name, folder in GRAPHS.items():
            spec = json.loads((folder / "segmentation_spec.json").read_text())
            src = folder / spec["folds"][0]["onnx"]
            half = convert_graph_fp16(src, fp16_path(Path(tmp) / src.name))
            engines = {"fp32": OnnxRuntimeEngine(src, device="cpu", threads=args.threads),
                       "fp16": OnnxRuntimeEngine(half, device="cpu", threads=args.threads)}
            x = np.random.default_rng(0).normal(
                size=(args.batch, 1, *spec["patch_size"])).astype(np.float32)
            outs = {k: e.run({"image": x})["logits"] for k, e in engines.items()}  # warm-up
            times: dict[str, list[float]] = {"fp32": [], "fp16": []}
            for _ in range(args.rounds):  # interleaved A/B
                for k, e in engines.items():
                    t0 = time.perf_counter()
                    e.run({"image": x})
                    times[k].append((time.perf_counter() - t0) * 1000)
            agree = float(np.mean(outs["fp32"].argmax(1) == outs["fp16"].argmax(1)))
            row = {
                "graph": name, "patch": spec["patch_size"], "batch": args.batch,
                "fp32_median_ms": statistics.median(times["fp32"]),
                "fp16_median_ms": statistics.median(times["fp16"]),
                "fp32_min_ms": min(times["fp32"]), "fp16_min_ms": min(times["fp16"]),
                "fp16_over_fp32": (statistics.median(times["fp16"])
                                   / statistics.median(times["fp32"])),
                "max_abs_logit_diff": float(np.abs(outs["fp32"] - outs["fp16"]).max()),
                "argmax_agreement": agree,
                "bytes_fp32": src.stat().st_size, "bytes_fp16": half.stat().st_size,
            }
            rows.append(row)
            print(f"{name:24s} fp32 {row['fp32_median_ms']:8.1f} ms  fp16 "
                  f"{row['fp16_median_ms']:8.1f} ms  fp16/fp32 {row['fp16_over_fp32']:.2f}  "
                  f"argmax agreement {agree:.5f}  "
                  f"file {row['bytes_fp16'] / row['bytes_fp32']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "machine": machine_facts(),
                                         "rounds": args.rounds}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
