"""``hccatom serve`` + ``RemotePredictor`` on loopback: same results and same typed errors as
in-process, busy beyond the queue, size limit, malformed requests, SIGTERM and restart.

Every server runs in a child process with a hard deadline; nothing here can hang CI.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="needs the serve extra (nvidia-pytriton)")
pytest.importorskip("tritonclient.grpc", reason="needs the serve extra (tritonclient[grpc])")

from serve_helpers import ServerProcess, comparable, hard_deadline, start_server

from hccatom.client import RemotePredictor
from hccatom.demo import demo_bundle_path, demo_case
from hccatom.errors import ClinicalInputError, CTInputError, HccatomError, InputError
from hccatom.predictor import Predictor
from hccatom.serve import wire
from hccatom.serve.errors import (
    RemoteModelError,
    RequestTooLargeError,
    ServerBusyError,
    ServerTimeoutError,
    ServerUnavailableError,
)

#: Fast segmentation on both sides (the comparison is unchanged); small limits to hit them.
FAST = ("--step-size", "1.0", "--no-mirroring")
LIMITS = ("--instances", "1", "--max-queue", "1", "--max-request-mb", "8")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with hard_deadline(120):
        s = start_server(demo_bundle_path(), log, *FAST, *LIMITS)
    try:
        yield s
    finally:
        s.kill()


@pytest.fixture(scope="module")
def case() -> tuple[dict[str, Any], Any]:
    ct, clinical, _ = demo_case(2)
    return ct, clinical


@pytest.fixture(scope="module")
def local(case: tuple[dict[str, Any], Any]) -> Any:
    p = Predictor.from_bundle(demo_bundle_path(), device="cpu", step_size=1.0, mirroring=False)
    return p.recommend(*case)


def test_remote_recommendation_equals_in_process(
        server: ServerProcess, case: tuple[dict[str, Any], Any], local: Any) -> None:
    with hard_deadline(90):
        remote = RemotePredictor(server.url).recommend(*case)
    assert comparable(remote) == comparable(local)
    assert remote.final_plan == local.final_plan


def test_bad_clinical_gets_the_in_process_message(
        server: ServerProcess, case: tuple[dict[str, Any], Any]) -> None:
    ct, clinical = case
    bad = clinical.model_dump(mode="json") | {"albumin_g_per_l": -5, "age_years": "old"}
    with pytest.raises(ClinicalInputError) as in_process:
        Predictor.from_bundle(demo_bundle_path(), device="cpu").recommend(ct, bad)
    with hard_deadline(60), pytest.raises(ClinicalInputError) as remote:
        RemotePredictor(server.url).recommend(ct, bad)
    assert str(remote.value) == str(in_process.value)
    assert remote.value.problems == in_process.value.problems
    assert [f for f, _ in remote.value.problems] == ["albumin_g_per_l", "age_years"]


def _raw_infer(server: ServerProcess, request: bytes, arrays: dict[str, np.ndarray]) -> Any:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.ports.grpc_url)
    inputs = [grpcclient.InferInput(wire.REQUEST, [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([[request]], dtype=object))
    for name, arr in arrays.items():
        t = grpcclient.InferInput(name, list(arr.shape), "FP32")
        t.set_data_from_numpy(arr)
        inputs.append(t)
    try:
        return client.infer(wire.MODEL_NAME, inputs, client_timeout=60)
    except Exception as exc:
        typed = wire.decode_error(str(exc))
        assert typed is not None, f"an untyped error: {exc}"
        raise typed from None


def test_malformed_and_oversize_requests_are_refused_and_the_server_stays_up(
        server: ServerProcess) -> None:
    small = np.zeros((1, 4, 4, 4), np.float32)
    with hard_deadline(60):
        with pytest.raises(InputError, match="request JSON refused: not valid JSON"):
            _raw_infer(server, b"{not json", {})
        with pytest.raises(ClinicalInputError, match="no 'clinical'"):
            _raw_infer(server, b'{"arterial": {}}', {})
        with pytest.raises(ClinicalInputError, match="must be a JSON object"):  # not a path
            _raw_infer(server, b'{"clinical": "/etc/hostname"}', {})
        with pytest.raises(CTInputError, match="portal phase array is missing"):
            _raw_infer(server, json.dumps({"clinical": {}, "arterial": {
                "spacing_zyx_mm": [1, 1, 1]}}).encode(), {"arterial": small})
        with pytest.raises(HccatomError, match="does not read studies from paths"):
            _raw_infer(server, b'{"clinical": {}, "study_path": "../etc"}', {})
        big = np.zeros((1, 64, 128, 160), np.float32)  # 5 MiB each, 10 MiB in all > 8 MiB
        with pytest.raises(RequestTooLargeError, match="over this server's limit"):
            _raw_infer(server, b'{"clinical": {}}', {"arterial": big, "portal": big})
        assert RemotePredictor(server.url).ready()
        with urllib.request.urlopen(
                f"http://127.0.0.1:{server.ports.http}/v2/health/ready", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(
                f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'nv_inference_request_failure{model="hccatom_recommend"' in metrics


def test_beyond_the_queue_requests_are_busy_and_the_rest_correct(
        server: ServerProcess, case: tuple[dict[str, Any], Any], local: Any) -> None:
    results: list[Any] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            out: Any = RemotePredictor(server.url).recommend(*case)
        except HccatomError as exc:
            out = exc
        with lock:
            results.append(out)

    with hard_deadline(120):
        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    busy = [r for r in results if isinstance(r, ServerBusyError)]
    done = [r for r in results if not isinstance(r, HccatomError)]
    assert len(busy) + len(done) == 4, results  # nothing else went wrong
    assert busy and len(done) >= 2  # 1 running + 1 queued always get through
    assert "busy" in str(busy[0])
    for rec in done:
        assert comparable(rec) == comparable(local)


def test_sigterm_finishes_the_request_in_flight(
        tmp_path: Path, case: tuple[dict[str, Any], Any], local: Any) -> None:
    with hard_deadline(120):
        server = start_server(demo_bundle_path(), tmp_path / "a.log", *FAST)
        try:
            remote = RemotePredictor(server.url)
            got: list[Any] = []
            t = threading.Thread(target=lambda: got.append(remote.recommend(*case)))
            t.start()
            time.sleep(1.0)  # the request is in flight: the chain takes seconds
            assert server.terminate() == 0
            t.join()
        finally:
            server.kill()
    assert len(got) == 1 and comparable(got[0]) == comparable(local)
    with pytest.raises(ServerUnavailableError):
        RemotePredictor(server.url).recommend(*case)


def test_client_gone_and_server_killed_then_restarted_while_the_client_retries(
        tmp_path: Path, case: tuple[dict[str, Any], Any]) -> None:
    ct, clinical = case
    bad = clinical.model_dump(mode="json") | {"inr": "high"}
    with hard_deadline(150):
        first = start_server(demo_bundle_path(), tmp_path / "a.log", *FAST)
        try:
            with pytest.raises(ServerTimeoutError):  # the client gives up mid-request
                RemotePredictor(first.url, timeout_s=0.5).recommend(ct, clinical)
            assert RemotePredictor(first.url).ready()  # still up
        finally:  # killed (with Triton) while that abandoned request still runs
            first.kill()
        second = ServerProcess(demo_bundle_path(), tmp_path / "b.log", *FAST,
                               ports=first.ports)
        try:
            answer: HccatomError | None = None
            for _ in range(90):  # the client retries while the server comes back
                try:
                    RemotePredictor(second.url).recommend(ct, bad)
                except (ServerUnavailableError, RemoteModelError):  # down, or not loaded yet
                    time.sleep(0.5)
                except ClinicalInputError as exc:
                    answer = exc
                    break
        finally:
            second.kill()
    # the retry got its own answer, not the abandoned request's recommendation
    assert answer is not None and [f for f, _ in answer.problems] == ["inr"]
