"""A/B: segmentation time of this checkout against another commit, interleaved in one run.

Each side runs in its own worker process that imports ``hccatom`` from a source tree (the
``sdk``/``engines``/``atom``/``export`` folders linked into one package), loads a
``Segmenter`` once and times ``segment`` on request; the parent alternates A, B, A, B, ...
so that load drift on a shared machine hits both sides alike. The baseline tree is made
with ``git worktree add`` at ``--base`` (default: the merge base with main).

Run:  .venv/bin/python benchmarks/ab_segmentation.py --base main --rounds 5 \
          [--volume typical|real] [--mirroring] [--device-resident] [--e2e]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"sdk": "", "engines": "engines", "atom": "atom", "export": "export"}

WORKER = r"""
import sys, json, time
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__
                    and "editable" not in getattr(f, "__name__", "")]
sys.path.insert(0, sys.argv[1])
import numpy as np
import hccatom
from hccatom import Segmenter, read_ct
assert hccatom.__file__.startswith(sys.argv[1]), hccatom.__file__
opts = json.loads(sys.argv[2])
if opts.get("e2e"):
    from hccatom import Predictor
    from hccatom.demo import demo_bundle_path
    from hccatom.synthetic import ScanSpec, draw_cohort, generate_patient
    member = draw_cohort("TACE", 1, seed=11).patients[0]
    study = generate_patient(member.seed, ScanSpec.realistic(), member.features)
    ct = {"arterial": study.arterial, "portal": study.portal}
    pred = Predictor.from_bundle(demo_bundle_path(), device="cpu", threads=opts["threads"],
                                 phase_workers=1)
    def once():
        rec = pred.recommend(ct, member.clinical)
        return int(sum(rec.phases["arterial"].segmentation_voxels.values()))
else:
    vol = read_ct(opts["volume"])
    kw = dict(device="cpu", threads=opts["threads"], mirroring=opts["mirroring"])
    if opts.get("device_resident"):
        kw["device_resident"] = True
    seg = Segmenter(opts["export"], **kw)
    def once():
        return int(seg.segment(vol).array.astype(np.int64).sum())
once()  # warm-up
print("ready", flush=True)
for line in sys.stdin:
    t0 = time.perf_counter()
    check = once()
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "checksum": check}), flush=True)
"""


def package_tree(src: Path, dest: Path) -> Path:
    """``dest/hccatom`` with the repository folders linked in as one package."""
    pkg = dest / "hccatom"
    pkg.mkdir(parents=True)
    for item in (src / "sdk").iterdir():
        (pkg / item.name).symlink_to(item)
    for folder, name in FOLDERS.items():
        if name and (src / folder).is_dir():
            (pkg / name).symlink_to(src / folder)
    return dest


def start(tree: Path, opts: dict[str, object]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(tree), json.dumps(opts)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"worker for {tree} failed: {line!r}")
    return proc


def ask(proc: subprocess.Popen[str]) -> dict[str, float]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="main")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--volume", choices=["typical", "real"], default="typical")
    ap.add_argument("--mirroring", action="store_true")
    ap.add_argument("--device-resident", action="store_true",
                    help="B side (this checkout) runs the device-resident path")
    ap.add_argument("--e2e", action="store_true",
                    help="time Predictor.recommend on the demo bundle and a realistic study "
                    "(2 x 512 x 512 x 160) instead")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("HCCATOM_BENCH_THREADS",
                                                                       "2")))
    args = ap.parse_args()
    fixture = ROOT / "tests" / "fixtures" / "nnunet"
    volume = (ROOT / "tests" / "data" / "real" / "totalseg_example" / "example_ct_sm.nii.gz"
              if args.volume == "real" else fixture / "volumes" / "typical_ct.nii.gz")
    opts: dict[str, object] = {"volume": str(volume), "export": str(fixture / "export"),
                               "threads": args.threads, "mirroring": args.mirroring,
                               "e2e": args.e2e}
    with tempfile.TemporaryDirectory() as tmp:
        base_src = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_src),
                        args.base], check=True, capture_output=True)
        try:
            a = start(package_tree(base_src, Path(tmp) / "a"), opts)
            b = start(package_tree(ROOT, Path(tmp) / "b"),
                      {**opts, "device_resident": args.device_resident})
            times: dict[str, list[float]] = {"base": [], "this": []}
            sums = set()
            for _ in range(args.rounds):
                for name, proc in (("base", a), ("this", b)):
                    got = ask(proc)
                    times[name].append(got["seconds"])
                    sums.add(got["checksum"])
            for proc in (a, b):
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait()
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(base_src)], check=False, capture_output=True)
    import statistics

    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"base": args.base, "e2e": args.e2e, "volume": args.volume,
                      "mirroring": args.mirroring,
                      "device_resident_this": args.device_resident, "threads": args.threads,
                      "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
                      "median_s": {k: round(v, 3) for k, v in med.items()},
                      "ratio_this_over_base": round(med["this"] / med["base"], 3),
                      "same_labels": len(sums) == 1}, indent=1))


if __name__ == "__main__":
    main()
