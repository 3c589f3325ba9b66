"""Load test of ``hccatom serve`` on loopback, next to in-process ``recommend`` in the same run.

For each client count N (default 1, 4, 16): N concurrent clients, each sending M demo studies
(``--studies M``) one after another (:mod:`hccatom.serve.loadtest`), first through
``RemotePredictor`` against a ``hccatom serve`` child process, then through one in-process
``Predictor`` with the same N threads and studies (the baseline). Reports p50/p99 latency,
throughput, errors, whether every remote result equals the in-process result for the same
study, and the server's resident memory (all its processes) after every request. Bounded: N x M
requests per row, a deadline on the server start. Memory over many requests has its own
script, ``serve_memory.py``.

Run:  python benchmarks/bench_serve.py --clients 1 4 16 --studies 3 \\
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
from pathlib import Path
from typing import Any

from hccatom.client import RemotePredictor
from hccatom.demo import demo_bundle_path, demo_case
from hccatom.predictor import Predictor
from hccatom.serve.loadtest import comparable, run_load
from hccatom.serve.pytriton_server import Ports


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--studies", type=int, default=3,
                    help="M: demo studies each client sends (N x M requests per row)")
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--full", action="store_true",
                    help="default segmentation (step 0.5, mirroring); else step 1, no mirroring")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the in-process rows (the reference results are still computed)")
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
    assert len({json.dumps(r, sort_keys=True) for r in reference}) == len(reference), \
        "two demo studies give the same result: a swapped answer would go unnoticed"
    ports = Ports.free()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_serve_{ports.grpc}.log"
    proc = start_server(ports, extra, log)
    rss: list[float] = []
    results: list[dict[str, Any]] = []
    try:
        remote = RemotePredictor(f"triton://{ports.grpc_url}")
        remote.recommend(*cases[0])  # warm-up
        rss.append(group_rss_mb(proc.pid))
        for n in args.clients:
            r = run_load(lambda s: remote.recommend(*cases[s]), reference, n,
                         after=lambda: rss.append(group_rss_mb(proc.pid)))
            row: dict[str, Any] = {"remote": r.as_dict()}
            text = f"serve: {r.line()}"
            if not args.no_baseline:
                loc = run_load(lambda s: local.recommend(*cases[s]), reference, n)
                row["in_process"] = loc.as_dict()
                text += f" | in-process: {loc.line()}"
            results.append(row)
            print(text, flush=True)
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
                    "studies_per_client": args.studies, "clients": args.clients},
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
