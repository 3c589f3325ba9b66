"""``hccatom serve`` under load (small, for CI): N clients x M studies with every answer equal
to the in-process one, and memory over many requests (Python objects and resident memory).

The server is the fixture bundle (a small segmentation network, fast phantoms) in a child
process that runs tracemalloc (``benchmarks/serve_memory.py --child``); the full load test with
the demo bundle and its figures is ``benchmarks/bench_serve.py``, the long memory run
``benchmarks/serve_memory.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="needs the serve extra (nvidia-pytriton)")
pytest.importorskip("tritonclient.grpc", reason="needs the serve extra (tritonclient[grpc])")

from fixtures.bundle.helpers import build_fixture_bundle, clinical_example, phantom
from serve_helpers import hard_deadline

from hccatom.client import RemotePredictor
from hccatom.predictor import Predictor
from hccatom.serve.loadtest import comparable, run_load
from hccatom.serve.pytriton_server import Ports

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ("--device", "cpu", "--instances", "2", "--max-queue", "32", "--step-size", "1.0",
           "--no-mirroring")
#: Distinct phantoms (tumour position and size differ, so do their results).
STUDIES = ({"tumour_centre_mm": (22.0, 100.0, 95.0), "tumour_radius_mm": 12.0},
           {"tumour_centre_mm": (20.0, 90.0, 80.0), "tumour_radius_mm": 8.0},
           {"tumour_centre_mm": (24.0, 105.0, 100.0), "tumour_radius_mm": 15.0})
#: Memory run: warm-up requests (first shapes, pools and caches) and measured requests.
WARMUP, MEASURED, CLIENTS = 8, 24, 2
#: Bounds of the memory test. Python: the heap and the object count after warm-up stay where
#: they are (keeping one request's JSON or arrays would add 100s of kB per request). Resident:
#: the summed PSS of the server's processes (PyTriton's shared tensor blocks counted once)
#: grows by at most this much per request after warm-up (Theil-Sen slope, robust to the
#: +-10 MB steps of the allocators); keeping one request's two phantom phases alone would
#: be 1.2 MB per request. The long runs (200 requests, demo and fixture bundles) are in
#: benchmarks/README.md (serving, memory).
PY_HEAP_GROWTH_MB = 1.0
GC_OBJECTS_GROWTH = 2000
PSS_SLOPE_KB_PER_REQUEST = 512.0


def theil_sen_slope(values: list[float]) -> float:
    """The median of the slopes between all pairs of points (one point per request)."""
    y = np.asarray(values, float)
    i, j = np.triu_indices(y.size, k=1)
    return float(np.median((y[j] - y[i]) / (j - i)))


def _memory_probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "serve_memory", ROOT / "benchmarks" / "serve_memory.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TracedServer:
    """``hccatom serve`` with tracemalloc in a child process; SIGUSR1 asks for a report."""

    def __init__(self, bundle: Path, workdir: Path) -> None:
        self.ports = Ports.free()
        self.reports = workdir / "reports"
        self.reports.mkdir()
        self.log = workdir / "server.log"
        self.asked = 0
        args = [sys.executable, str(ROOT / "benchmarks" / "serve_memory.py"), "--child",
                str(self.reports), "--", "--bundle", str(bundle), "--grpc-port",
                str(self.ports.grpc), "--http-port", str(self.ports.http), "--metrics-port",
                str(self.ports.metrics), *OPTIONS]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True)
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                line = self.proc.stdout.readline().decode()
                if "hccatom serve: ready" in line:
                    return
                if not line:
                    break
        self.kill()
        raise AssertionError("server did not start:\n" + self.log.read_text()[-3000:])

    @property
    def url(self) -> str:
        return f"triton://{self.ports.grpc_url}"

    def python_report(self) -> dict[str, Any]:
        """The server process's tracemalloc report (heap MB, gc objects, top growth)."""
        self.asked += 1
        path = self.reports / f"report-{self.asked:04d}.json"
        os.kill(self.proc.pid, signal.SIGUSR1)
        for _ in range(900):
            if path.is_file():
                try:
                    return dict(json.loads(path.read_text()))
                except ValueError:
                    pass
            time.sleep(0.1)
        raise AssertionError("no tracemalloc report from the server within 90 s")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_bundle(tmp_path_factory.mktemp("load") / "bundle")


@pytest.fixture(scope="module")
def cases() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for kw in STUDIES:
        p = phantom(**kw)
        out.append(({"arterial": p["arterial"], "portal": p["portal"]}, clinical_example()))
    return out


@pytest.fixture(scope="module")
def reference(bundle: Path, cases: list[Any]) -> list[dict[str, Any]]:
    local = Predictor.from_bundle(bundle, device="cpu", step_size=1.0, mirroring=False)
    ref = [comparable(local.recommend(*c)) for c in cases]
    assert len({json.dumps(r, sort_keys=True) for r in ref}) == len(ref), \
        "two studies give the same result: a swapped answer would go unnoticed"
    return ref


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedServer]:
    with hard_deadline(120):
        s = TracedServer(bundle, tmp_path_factory.mktemp("server"))
    try:
        yield s
    finally:
        s.kill()


@pytest.mark.parametrize("clients", [1, 4])
def test_n_clients_x_m_studies_all_answered_and_equal_in_process(
        server: TracedServer, cases: list[Any], reference: list[dict[str, Any]],
        clients: int) -> None:
    remote = RemotePredictor(server.url)
    with hard_deadline(120):
        result = run_load(lambda s: remote.recommend(*cases[s]), reference[:2], clients)
    assert result.requests == clients * 2
    assert (result.errors, result.mismatches) == (0, 0), result.error_samples
    assert result.ok == result.requests
    assert 0 < result.p50_s <= result.p99_s and result.throughput_per_s > 0


@pytest.mark.slow
def test_memory_levels_off_after_warm_up(
        server: TracedServer, cases: list[Any], reference: list[dict[str, Any]]) -> None:
    probe = _memory_probe()
    remote = RemotePredictor(server.url)
    pss: list[float] = []

    def sample() -> None:
        pss.append(sum(r["Pss"] for r in probe.memory_by_role(server.proc.pid).values()))

    with hard_deadline(180):
        warm = run_load(lambda s: remote.recommend(*cases[s % 3]),
                        [reference[i % 3] for i in range(WARMUP // CLIENTS)], CLIENTS)
        before = server.python_report()
        result = run_load(lambda s: remote.recommend(*cases[s % 3]),
                          [reference[i % 3] for i in range(MEASURED // CLIENTS)], CLIENTS,
                          after=sample)
        after = server.python_report()
    assert warm.errors == result.errors == result.mismatches == 0, result.error_samples
    assert len(pss) == result.requests == MEASURED
    heap = after["traced_mb"] - before["traced_mb"]
    objects = after["gc_objects"] - before["gc_objects"]
    assert heap < PY_HEAP_GROWTH_MB, (heap, after["growth_since_first"])
    assert objects < GC_OBJECTS_GROWTH, (objects, after["growth_since_first"])
    slope_kb = theil_sen_slope(pss) * 1024
    print(f"after warm-up: python heap {heap:+.2f} MB, gc objects {objects:+d}, PSS "
          f"{pss[0]:.0f} -> {pss[-1]:.0f} MB, slope {slope_kb:.0f} kB/request")
    assert slope_kb < PSS_SLOPE_KB_PER_REQUEST, (slope_kb, pss)
