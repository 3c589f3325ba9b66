"""Load a recommend service with N concurrent clients x M studies and check every answer.

Used by ``benchmarks/bench_serve.py`` (the full run, with figures) and by the serving tests
(a small run in CI). Each of the N clients is a thread that sends its M studies one after
another (client ``c`` starts at study ``c mod M``, so concurrent requests carry different
studies); every answer is compared with the in-process result for the same study, so a
request that got another request's result counts as a mismatch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hccatom.errors import HccatomError


def comparable(rec: Any) -> dict[str, Any]:
    """A Recommendation as a dict without what differs between runs by design: wall-clock
    timings, the creation time, where the engines ran and their transferred byte counts."""
    d: dict[str, Any] = rec.model_dump(mode="json")
    for key in ("timings_ms", "created_at", "engine"):
        d.pop(key, None)
    for phase in d.get("phases", {}).values():
        phase.pop("segmentation_transfer_bytes", None)
    return d


@dataclass
class LoadResult:
    """What one load run measured (latencies of answered requests only)."""

    clients: int
    studies_per_client: int
    requests: int
    ok: int
    errors: int
    mismatches: int
    p50_s: float
    p99_s: float
    throughput_per_s: float
    wall_s: float
    error_samples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    def line(self) -> str:
        """One human-readable line."""
        return (f"N={self.clients:2d} x M={self.studies_per_client}: p50 {self.p50_s:.2f} s, "
                f"p99 {self.p99_s:.2f} s, {self.throughput_per_s:.3f}/s, errors "
                f"{self.errors}, mismatches {self.mismatches} ({self.ok}/{self.requests} ok)")


def run_load(call: Callable[[int], Any], reference: Sequence[dict[str, Any]], clients: int,
             *, after: Callable[[], None] | None = None) -> LoadResult:
    """``clients`` threads, each calling ``call(study)`` once for every study in turn.

    ``reference[s]`` is :func:`comparable` of the in-process result for study ``s``;
    ``after`` (optional) runs after each answered request (e.g. a memory sample).
    Exceptions of :class:`~hccatom.errors.HccatomError` count as errors; any other
    exception propagates after all threads finished.
    """
    if clients < 1 or not reference:
        raise ValueError("need at least one client and one study")
    studies = len(reference)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    crashes: list[BaseException] = []
    mismatches = 0

    def client(c: int) -> None:
        nonlocal mismatches
        for j in range(studies):
            study = (c + j) % studies
            t0 = time.perf_counter()
            try:
                rec = call(study)
            except HccatomError as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            except BaseException as exc:  # re-raised in the caller, after the join
                with lock:
                    crashes.append(exc)
                return
            dt = time.perf_counter() - t0
            same = comparable(rec) == reference[study]
            with lock:
                latencies.append(dt)
                mismatches += 0 if same else 1
            if after is not None:
                after()

    threads = [threading.Thread(target=client, args=(c,), name=f"load-client-{c}")
               for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if crashes:
        raise crashes[0]
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return LoadResult(
        clients=clients, studies_per_client=studies, requests=clients * studies,
        ok=len(latencies), errors=len(errors), mismatches=mismatches,
        p50_s=float(np.percentile(lat, 50)), p99_s=float(np.percentile(lat, 99)),
        throughput_per_s=len(latencies) / wall, wall_s=wall, error_samples=errors[:3])
