"""Load test of ``hccatom serve`` on loopback, next to in-process ``recommend`` in the same run.

For each client count N (default 1, 4, 16): ``--requests`` requests over ``--studies`` demo
studies from N threads, first through ``RemotePredictor`` against a ``hccatom serve`` child
process, then through one in-process ``Predictor`` with the same N threads (the baseline).
Reports p50/p99 latency, throughput, errors, whether every remote result equals the
in-process result for the same study, and the server's resident memory (all its processes)
after every request. Bounded: a fixed number of requests, a deadline on the server start.

Run:  python benchmarks/bench_serve.py --clients 1 4 16 --studies 2 --requests 8 \
          --out benchmarks/results/serve-$(date +%F).json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.client import RemotePredictor
from hccatom.demo import demo_bundle_path, demo_case
from hccatom.errors import HccatomError
from hccatom.predictor import Predictor
from hccatom.serve.pytriton_server import Ports


def comparable(rec: Any) -> dict[str, Any]:
    """A Recommendation without timings, creation time, engine info and byte counts."""
    d = rec.model_dump(mode="json")
    for key in ("timings_ms", "created_at", "engine"):
        d.pop(key, None)
    for phase in d.get("phases", {}).values():
        phase.pop("segmentation_transfer_bytes", None)
    return dict(d)


def group_rss_mb(session: int) -> float:
    """Resident memory of every process in a session (the server and its Triton children)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[3]) != session:  # field 6: session id
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1024.0


def start_server(ports: Ports, extra: list[str], log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "hccatom.cli", "serve", "--bundle", str(demo_bundle_path()),
            "--device", "cpu", "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
            "--metrics-port", str(ports.metrics), *extra]
    with open(log, "ab") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err,
                                start_new_session=True)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if sel.select(timeout=5) and "ready" in proc.stdout.readline().decode():
            return proc
        if proc.poll() is not None:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"server did not start; see {log}")


def run_load(call: Any, n_clients: int, n_requests: int, n_studies: int,
             reference: list[dict[str, Any]], after: Any = None) -> dict[str, Any]:
    lat: list[float] = []
    errors: list[str] = []
    mismatches = 0

    def one(i: int) -> None:
        nonlocal mismatches
        study = i % n_studies
        t0 = time.perf_counter()
        try:
            rec = call(study)
        except HccatomError as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return
        lat.append(time.perf_counter() - t0)
        if comparable(rec) != reference[study]:
            mismatches += 1
        if after is not None:
            after()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n_clients) as pool:
        list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - t0
    arr = np.array(lat) if lat else np.array([np.nan])
    return {"clients": n_clients, "requests": n_requests, "ok": len(lat),
            "errors": len(errors), "error_samples": errors[:3], "mismatches": mismatches,
            "p50_s": float(np.percentile(arr, 50)), "p99_s": float(np.percentile(arr, 99)),
            "throughput_per_s": len(lat) / wall, "wall_s": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--studies", type=int, default=2)
    ap.add_argument("--requests", type=int, default=8, help="requests per client count")
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--full", action="store_true",
                    help="default segmentation (step 0.5, mirroring); else step 1, no mirroring")
    ap.add_argument("--memory-requests", type=int, default=0,
                    help="then this many more requests (2 clients) with the server's memory "
                         "sampled after each (memory stays flat?)")
    ap.add_argument("--skip-load", action="store_true", help="only the memory run")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    fast = not args.full
    opts: dict[str, Any] = {"step_size": 1.0, "mirroring": False} if fast else {}
    extra = ["--instances", str(args.instances), "--max-queue", "64"]
    if fast:
        extra += ["--step-size", "1.0", "--no-mirroring"]

    cases = [demo_case(s)[:2] for s in range(args.studies)]
    local = Predictor.from_bundle(demo_bundle_path(), device="cpu", **opts)
    reference = [comparable(local.recommend(*c)) for c in cases]
    ports = Ports.free()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_serve_{ports.grpc}.log"
    proc = start_server(ports, extra, log)
    rss: list[float] = []
    results: list[dict[str, Any]] = []
    try:
        remote = RemotePredictor(f"triton://{ports.grpc_url}")
        remote.recommend(*cases[0])  # warm-up
        rss.append(group_rss_mb(proc.pid))
        for n in [] if args.skip_load else args.clients:
            r = run_load(lambda s: remote.recommend(*cases[s]), n, args.requests,
                         args.studies, reference, after=lambda: rss.append(
                             group_rss_mb(proc.pid)))
            loc = run_load(lambda s: local.recommend(*cases[s]), n, args.requests,
                           args.studies, reference)
            results.append({"remote": r, "in_process": loc})
            print(f"N={n:2d}  serve: p50 {r['p50_s']:.2f} s p99 {r['p99_s']:.2f} s "
                  f"{r['throughput_per_s']:.3f}/s errors {r['errors']} mismatches "
                  f"{r['mismatches']} | in-process: p50 {loc['p50_s']:.2f} s p99 "
                  f"{loc['p99_s']:.2f} s {loc['throughput_per_s']:.3f}/s", flush=True)
        if args.memory_requests:
            mem_start = len(rss)
            m = run_load(lambda s: remote.recommend(*cases[s]), 2, args.memory_requests,
                         args.studies, reference, after=lambda: rss.append(
                             group_rss_mb(proc.pid)))
            series = rss[mem_start:]
            k = max(1, len(series) // 10)
            memory = {"requests": args.memory_requests, "errors": m["errors"],
                      "mismatches": m["mismatches"],
                      "first_tenth_median_mb": float(np.median(series[:k])),
                      "last_tenth_median_mb": float(np.median(series[-k:])),
                      "max_mb": max(series), "series_mb": series}
            print(f"memory over {args.memory_requests} requests: first tenth "
                  f"{memory['first_tenth_median_mb']:.0f} MB, last tenth "
                  f"{memory['last_tenth_median_mb']:.0f} MB, max {memory['max_mb']:.0f} MB, "
                  f"errors {m['errors']}, mismatches {m['mismatches']}", flush=True)
            results.append({"memory": memory})
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    record = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_at_end": os.getloadavg()},
        "options": {"fast_segmentation": fast, "instances": args.instances,
                    "studies": args.studies, "requests_per_client_count": args.requests},
        "results": results,
        "server_rss_mb": {"after_warmup": rss[0], "samples": len(rss), "min": min(rss),
                          "max": max(rss), "last": rss[-1]},
    }
    print(json.dumps(record["server_rss_mb"]))
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
