"""A/B on the CPU provider: the device-resident path with its plain network engine vs the
fixed-shape network engine (what CUDA graphs use on a GPU), interleaved in one process.

On the CPU nothing is captured: this measures what the fixed buffers and the padded last
batch cost, not what CUDA graphs save. Medians of ``--rounds`` alternating runs.

    .venv/bin/python benchmarks/ab_fixed_shape.py --rounds 5 [--batch 4] [--mirroring]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=4, help="tiles per network call")
    p.add_argument("--mirroring", action="store_true")
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures.nnunet.helpers import load_volume

    from hccatom import Segmenter
    from hccatom.engines.providers import CudaOptions

    vol = load_volume("typical_ct.nii.gz")
    export = ROOT / "tests" / "fixtures" / "nnunet" / "export"
    kw = dict(device="cpu", threads=1, folds=[0, 1], device_resident=True,
              batch_size=args.batch, mirroring=None if args.mirroring else False)
    sides = {"plain": Segmenter(export, **kw),  # type: ignore[arg-type]
             "fixed_shape": Segmenter(export, cuda_options=CudaOptions(enable_cuda_graph=True),
                                      **kw)}  # type: ignore[arg-type]
    for seg in sides.values():
        seg.segment(vol)  # warm-up: graph sessions, first-run output binding
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.rounds):
        for name, seg in sides.items():
            t0 = time.perf_counter()
            seg.segment(vol)
            times[name].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs (shared, loaded: load average "
                   f"{' '.join(f'{v:.1f}' for v in os.getloadavg())})",
        "volume": "tests fixture typical_ct, 2 folds", "batch_tiles": args.batch,
        "mirroring": args.mirroring, "rounds": args.rounds,
        "median_ms": med, "ratio_fixed_over_plain": med["fixed_shape"] / med["plain"],
        "runs_ms": times,
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
