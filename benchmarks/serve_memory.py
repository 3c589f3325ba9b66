"""Server memory over many requests: which process grows, by how much, and whether it levels.

Starts ``hccatom serve`` variants side by side (``--variant "NAME=ENV=VALUE --serve-arg"``,
e.g. ``--malloc glibc`` against ``--malloc serving``) and sends them requests in turn - a round of
``--clients`` concurrent requests to each variant, then the next round - so that the variants
are compared interleaved, under the same load and concurrency. After every round it reads each
server's processes from ``/proc/PID/smaps_rollup`` by role (the server's Python process,
PyTriton's tensor store, ``tritonserver``, the Python backend stubs): RSS, PSS (shared pages
divided among the processes mapping them; summing RSS counts PyTriton's shared-memory tensor
blocks once per process), anonymous memory and shared memory. The server's Python process runs
``tracemalloc`` (every variant alike) and, when asked (``SIGUSR1``), writes the Python heap's
size, the number of gc-tracked objects and the largest growths by line since the first ask
(after the first round, at the end of the warm-up and at the end only: a report allocates).

Every answer is compared with the in-process result for the same study; the script stops by
itself after ``--rounds`` rounds.

Run:  python benchmarks/serve_memory.py --rounds 100 --clients 2 \\
          --variant "glibc=--malloc glibc" \\
          --variant "arenas2=MALLOC_ARENA_MAX=2 --malloc glibc" --variant serving= \\
          --out benchmarks/results/serve-memory-$(date +%F).json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROLES = ("server", "tensor_store", "tritonserver", "stub", "other")
FIELDS = ("Rss", "Pss", "Anonymous", "Pss_Anon", "Pss_Shmem", "Pss_File")


def role_of(pid: int, server_pid: int) -> str:
    """What a process of a server's session is, from its command line."""
    if pid == server_pid:
        return "server"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "other"
    if "triton_python_backend_stub" in cmd:
        return "stub"
    if "tritonserver" in cmd:
        return "tritonserver"
    if "multiprocessing" in cmd or "spawn_main" in cmd:
        return "tensor_store"
    return "other"


def session_pids(session: int) -> list[int]:
    """Every process whose session id is ``session`` (the server started a new session)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat[3]) == session:
            pids.append(int(entry))
    return pids


def smaps(pid: int) -> dict[str, float]:
    """The ``FIELDS`` of ``/proc/PID/smaps_rollup`` in MB (empty if the process is gone)."""
    out: dict[str, float] = {}
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, rest = line.partition(":")
        if key in FIELDS:
            out[key] = int(rest.split()[0]) / 1024.0
    return out


def memory_by_role(server_pid: int) -> dict[str, dict[str, float]]:
    """Summed ``FIELDS`` per role of all processes of the server's session."""
    total = {r: dict.fromkeys(FIELDS, 0.0) for r in ROLES}
    for pid in session_pids(server_pid):
        role = role_of(pid, server_pid)
        for key, value in smaps(pid).items():
            total[role][key] += value
    return {r: v for r, v in total.items() if v["Rss"] > 0}


# --- the server child: hccatom serve with tracemalloc and a SIGUSR1 report -----------------
def child_main(report_dir: Path, serve_args: list[str]) -> int:
    """Run ``hccatom serve`` in this process with tracemalloc; SIGUSR1 writes a report."""
    import gc
    import tracemalloc

    tracemalloc.start(4)
    state: dict[str, Any] = {"baseline": None, "n": 0}

    def report(*_: Any) -> None:
        t0 = time.perf_counter()
        gc.collect()
        objects = len(gc.get_objects())
        # without tracemalloc's own allocations (the kept first snapshot is some MB)
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        current = sum(t.size for t in snap.traces)
        peak = tracemalloc.get_traced_memory()[1]
        growth: list[dict[str, Any]] = []
        if state["baseline"] is None:
            state["baseline"] = snap
        else:
            for stat in snap.compare_to(state["baseline"], "traceback")[:8]:
                growth.append({"kb": round(stat.size_diff / 1024, 1),
                               "count": stat.count_diff,
                               "where": [f"{f.filename}:{f.lineno}"
                                         for f in stat.traceback[-4:]]})
        state["n"] += 1
        (report_dir / f"report-{state['n']:04d}.json").write_text(json.dumps({
            "traced_mb": current / 2**20, "traced_peak_mb": peak / 2**20,
            "gc_objects": objects, "growth_since_first": growth,
            "seconds": time.perf_counter() - t0}))

    signal.signal(signal.SIGUSR1, report)
    from hccatom.cli import main as cli_main

    return int(cli_main(["serve", *serve_args]) or 0)


# --- the driver -----------------------------------------------------------------------------
class Variant:
    """One server under test: its name, extra environment, process and ports."""

    def __init__(self, name: str, env: dict[str, str], serve_args: list[str],
                 workdir: Path) -> None:
        from hccatom.serve.pytriton_server import Ports

        self.name, self.env, self.args = name, env, serve_args
        self.ports = Ports.free()
        self.reports = workdir / name
        self.reports.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"{name}.log"
        args = [sys.executable, __file__, "--child", str(self.reports), "--",
                "--grpc-port", str(self.ports.grpc), "--http-port", str(self.ports.http),
                "--metrics-port", str(self.ports.metrics), *serve_args]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err,
                                         env={**os.environ, **env}, start_new_session=True)
        self.samples: list[dict[str, Any]] = []
        self.python: list[dict[str, Any]] = []
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.mismatches = 0

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        import selectors

        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sel.select(timeout=5):
                line = self.proc.stdout.readline().decode()
                if "hccatom serve: ready" in line:
                    return
                if not line:
                    break
        self.stop()
        raise SystemExit(f"{self.name}: server did not start; see {self.log}")

    def python_report(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Ask the server's Python process for its tracemalloc report and wait for it."""
        n = len(self.python) + 1
        path = self.reports / f"report-{n:04d}.json"
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if path.is_file():
                try:
                    data: dict[str, Any] = json.loads(path.read_text())
                    self.python.append(data)
                    return data
                except ValueError:
                    pass  # still being written
            time.sleep(0.2)
        raise SystemExit(f"{self.name}: no tracemalloc report within {timeout_s} s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


def studies(kind: str, n: int, workdir: Path) -> tuple[Path, list[tuple[Any, Any]]]:
    """The bundle to serve and ``n`` distinct (ct, clinical) studies for it."""
    if kind == "demo":
        from hccatom.demo import demo_bundle_path, demo_case

        return demo_bundle_path(), [demo_case(s)[:2] for s in range(n)]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fixtures.bundle.helpers import build_fixture_bundle, clinical_example, phantom

    workdir.mkdir(parents=True, exist_ok=True)
    bundle = build_fixture_bundle(workdir / "fixture-bundle")
    out = []
    for s in range(n):  # tumours of different places and sizes: distinct results
        p = phantom(tumour_centre_mm=(20.0 + s, 90.0 + 4 * s, 80.0 + 5 * s),
                    tumour_radius_mm=8.0 + 2 * s)
        out.append(({"arterial": p["arterial"], "portal": p["portal"]}, clinical_example()))
    return bundle, out


def comparable(rec: Any) -> dict[str, Any]:
    """A Recommendation without timings, creation time, engine info and byte counts."""
    d = rec.model_dump(mode="json")
    for key in ("timings_ms", "created_at", "engine"):
        d.pop(key, None)
    for phase in d.get("phases", {}).values():
        phase.pop("segmentation_transfer_bytes", None)
    return dict(d)


def slope_mb_per_request(series: list[float], start: int) -> float:
    """Least-squares slope of ``series[start:]`` (one value per request)."""
    y = np.asarray(series[start:], float)
    if y.size < 2:
        return float("nan")
    return float(np.polyfit(np.arange(y.size), y, 1)[0])


def parse_variant(text: str) -> tuple[str, dict[str, str], list[str]]:
    """``"name=KEY=VALUE --serve-arg value"`` (or ``name=``) -> (name, env, serve args)."""
    name, _, rest = text.partition("=")
    env: dict[str, str] = {}
    extra: list[str] = []
    for token in rest.split():
        key, eq, value = token.partition("=")
        if eq and key.isupper():
            env[key] = value
        else:
            extra.append(token)
    return name, env, extra


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child_main(Path(sys.argv[2]), sys.argv[4:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=ENV",
                    help="a server variant and its extra environment (repeatable)")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--clients", type=int, default=2, help="concurrent requests per round")
    ap.add_argument("--studies", type=int, default=2)
    ap.add_argument("--bundle", choices=("demo", "fixture"), default="demo",
                    help="demo: the demo bundle and demo studies; fixture: the tests' small "
                         "fixture bundle and phantoms (a few times faster per request)")
    ap.add_argument("--warmup", type=int, default=50, help="requests treated as warm-up")
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=120.0,
                    help="stop after the round that ends past this time (results are kept)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    stopping: list[int] = []  # SIGTERM: finish this round, then report what was measured
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    deadline = time.monotonic() + 60.0 * args.minutes

    from hccatom.client import RemotePredictor
    from hccatom.predictor import Predictor

    variants_spec = [parse_variant(v) for v in args.variant] or [("default", {}, [])]
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve_memory_{os.getpid()}"
    bundle, cases = studies(args.bundle, args.studies, workdir)
    serve_args = ["--bundle", str(bundle), "--device", "cpu", "--instances",
                  str(args.instances), "--max-queue", "64", "--step-size", "1.0",
                  "--no-mirroring"]
    local = Predictor.from_bundle(bundle, device="cpu", step_size=1.0, mirroring=False)
    reference = [comparable(local.recommend(*c)) for c in cases]
    del local
    variants = [Variant(n, e, [*serve_args, *x], workdir) for n, e, x in variants_spec]
    t_start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        for v in variants:
            v.wait_ready()
        remotes = {v.name: RemotePredictor(f"triton://{v.ports.grpc_url}") for v in variants}
        request = 0
        for rnd in range(args.rounds):
            if stopping or time.monotonic() > deadline:
                print(f"stopped after {rnd} rounds", flush=True)
                break
            for v in variants:
                def one(i: int, v: Variant = v) -> None:
                    study = i % args.studies
                    t0 = time.perf_counter()
                    try:
                        rec = remotes[v.name].recommend(*cases[study])
                    except Exception as exc:  # counted and reported, the run goes on
                        v.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                        return
                    v.latencies.append(time.perf_counter() - t0)
                    if comparable(rec) != reference[study]:
                        v.mismatches += 1

                with ThreadPoolExecutor(args.clients) as pool:
                    list(pool.map(one, range(request, request + args.clients)))
                sample: dict[str, Any] = {"requests": (rnd + 1) * args.clients,
                                          "by_role": memory_by_role(v.proc.pid)}
                # a report allocates (a snapshot): only after the first round, at the end of
                # the warm-up and at the end, so that the measured window is left alone
                last = rnd + 1 == args.rounds or stopping or time.monotonic() > deadline
                if rnd == 0 or (rnd + 1) * args.clients == args.warmup or last:
                    sample["python"] = v.python_report()
                v.samples.append(sample)
            request += args.clients
            if (rnd + 1) % 5 == 0:
                line = "  ".join(
                    f"{v.name}: PSS {sum(r['Pss'] for r in v.samples[-1]['by_role'].values()):.0f}"
                    f" RSS {sum(r['Rss'] for r in v.samples[-1]['by_role'].values()):.0f}"
                    for v in variants)
                print(f"round {rnd + 1:4d} ({request} requests each)  {line}", flush=True)
    finally:
        for v in variants:
            v.stop()
    record: dict[str, Any] = {
        "started": t_start, "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_at_end": os.getloadavg()},
        "options": {"bundle": args.bundle, "rounds": args.rounds, "clients": args.clients,
                    "studies": args.studies,
                    "instances": args.instances, "warmup_requests": args.warmup,
                    "fast_segmentation": True},
        "variants": {},
    }
    for v in variants:
        per_request = [s["requests"] for s in v.samples]
        # the first sample after the warm-up report (a report allocates: a step before it)
        start = next((i for i, n in enumerate(per_request) if n > args.warmup), 0)
        series = {key: [sum(r[key] for r in s["by_role"].values()) for s in v.samples]
                  for key in ("Rss", "Pss")}
        by_role_pss = {role: [s["by_role"].get(role, {}).get("Pss", 0.0) for s in v.samples]
                       for role in ROLES}
        step = args.clients  # samples are per round: slope per request = per sample / clients
        summary = {
            "env": v.env, "serve_args": v.args, "requests": len(v.latencies) + len(v.errors),
            "errors": len(v.errors), "error_samples": v.errors[:3],
            "mismatches": v.mismatches,
            "latency_p50_s": float(np.median(v.latencies)) if v.latencies else None,
            "pss_mb_after_warmup": series["Pss"][start], "pss_mb_last": series["Pss"][-1],
            "pss_slope_mb_per_request_after_warmup":
                slope_mb_per_request(series["Pss"], start) / step,
            "rss_sum_slope_mb_per_request_after_warmup":
                slope_mb_per_request(series["Rss"], start) / step,
            "pss_slope_by_role_mb_per_request_after_warmup": {
                role: slope_mb_per_request(vals, start) / step
                for role, vals in by_role_pss.items() if any(vals)},
            "python": v.python,
            "requests_at_sample": per_request, "pss_mb": series["Pss"],
            "rss_sum_mb": series["Rss"], "pss_mb_by_role": by_role_pss,
        }
        record["variants"][v.name] = summary
        print(f"{v.name} {v.env}: {summary['requests']} requests, errors {summary['errors']}, "
              f"mismatches {summary['mismatches']}, PSS {summary['pss_mb_after_warmup']:.0f}"
              f" -> {summary['pss_mb_last']:.0f} MB, slope after warm-up "
              f"{summary['pss_slope_mb_per_request_after_warmup'] * 1024:.0f} kB/request "
              f"(RSS sum {summary['rss_sum_slope_mb_per_request_after_warmup'] * 1024:.0f}); "
              f"by role: " + ", ".join(
                  f"{r} {s * 1024:.0f}" for r, s in
                  summary["pss_slope_by_role_mb_per_request_after_warmup"].items()),
              flush=True)
        if v.python:
            print(f"  python heap {v.python[0]['traced_mb']:.1f} -> "
                  f"{v.python[-1]['traced_mb']:.1f} MB, gc objects "
                  f"{v.python[0]['gc_objects']} -> {v.python[-1]['gc_objects']}", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
