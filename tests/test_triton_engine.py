"""``TritonEngine`` and ``Predictor.from_bundle(engines="triton://...")`` against a PyTriton
server hosting the exported repository's ONNX files through ONNX Runtime (loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="needs the serve extra (nvidia-pytriton)")
pytest.importorskip("tritonclient.grpc", reason="needs the serve extra (tritonclient[grpc])")

from serve_helpers import comparable, hard_deadline

from hccatom.demo import demo_bundle_path, demo_case
from hccatom.engines import Engine, OnnxRuntimeEngine, TritonEngine
from hccatom.engines.base import MeteredEngine, TransferMeter
from hccatom.errors import EngineInputError, EngineUnavailableError
from hccatom.predictor import Predictor
from hccatom.serve.errors import (
    RemoteModelError,
    ServeError,
    ServerBusyError,
    ServerUnavailableError,
)
from hccatom.serve.onnx_host import OnnxRepositoryHost
from hccatom.serve.pytriton_env import free_port
from hccatom.serve.triton_repo import MODEL_VERSION, check_repository, write_repository


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnnxRepositoryHost]:
    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(demo_bundle_path(), repo)
    with hard_deadline(120), OnnxRepositoryHost(repo) as h:
        yield h


def _feeds(engine: Engine, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal(
        [batch if isinstance(d, str) else d for d in s.shape]).astype(s.dtype)
        for s in engine.inputs}


def test_every_model_remote_equals_in_process(host: OnnxRepositoryHost) -> None:
    with hard_deadline(60):
        for name in check_repository(host.repository):
            remote = TritonEngine(host.url, name)
            assert isinstance(remote, Engine)
            local = OnnxRuntimeEngine(host.repository / name / MODEL_VERSION / "model.onnx",
                                      device="cpu")
            assert [(s.name, s.dtype, s.shape[1:]) for s in remote.inputs] == [
                (s.name, s.dtype, s.shape[1:]) for s in local.inputs]
            feeds = _feeds(local, batch=2, seed=len(name))
            got, want = remote.run(feeds), local.run(feeds)
            assert got.keys() == want.keys()
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])


def test_predictor_with_remote_networks_equals_in_process(host: OnnxRepositoryHost) -> None:
    ct, clinical, _ = demo_case(3)
    with hard_deadline(90):
        # mirroring off on both sides keeps the test short; the comparison is unchanged
        local = Predictor.from_bundle(demo_bundle_path(), device="cpu", mirroring=False,
                                      step_size=1.0
                                      ).recommend(ct, clinical)
        remote_predictor = Predictor.from_bundle(demo_bundle_path(), engines=host.url,
                                                 mirroring=False, step_size=1.0)
        remote = remote_predictor.recommend(ct, clinical)
    assert remote.engine.segmentation == [f"Triton({host.ports.grpc_url})"]
    assert comparable(remote) == comparable(local)
    assert remote.scores == local.scores
    # the remote engines report the bytes they moved, as the local engines do: the same
    # tensors cross (to the server and back instead of to a device and back)
    for phase in ("arterial", "portal"):
        got = remote.phases[phase].segmentation_transfer_bytes
        assert got == local.phases[phase].segmentation_transfer_bytes, phase
        assert got["host_to_device"] > 0 and got["device_to_host"] > 0, got


def test_transfer_stats_count_the_bytes_on_the_wire(host: OnnxRepositoryHost) -> None:
    import tritonclient.grpc as grpcclient

    name = "selection__TACE__selection_tace"
    with hard_deadline(60):
        engine = TritonEngine(host.url, name)
        assert isinstance(engine, MeteredEngine)
        assert engine.transfer_stats().calls == 0
        feeds = _feeds(engine, batch=3, seed=1)
        meter = TransferMeter()
        out = engine.run(feeds, meter=meter)
        engine.run(feeds)
        # what the server answered, read from the raw gRPC response
        client = grpcclient.InferenceServerClient(host.ports.grpc_url)
        inputs = []
        for spec in engine.inputs:
            t = grpcclient.InferInput(spec.name, list(feeds[spec.name].shape), "FP32")
            t.set_data_from_numpy(feeds[spec.name])
            inputs.append(t)
        response = client.infer(name, inputs).get_response()
        client.close()
    sent = sum(a.nbytes for a in feeds.values())
    received = sum(len(raw) for raw in response.raw_output_contents)
    assert received == sum(a.nbytes for a in out.values()) > 0
    one = meter.snapshot()
    assert (one.host_to_device, one.device_to_host, one.calls) == (sent, received, 1)
    total = engine.transfer_stats()
    assert (total.host_to_device, total.device_to_host, total.calls) == (
        2 * sent, 2 * received, 2)
    local = OnnxRuntimeEngine(host.repository / name / MODEL_VERSION / "model.onnx",
                              device="cpu")
    local.run(feeds)
    assert local.transfer_stats() == one  # the same accounting as the in-process engine


def test_bad_feeds_never_reach_the_server(host: OnnxRepositoryHost) -> None:
    engine = TritonEngine(host.url, "selection__TACE__selection_tace")
    feeds = _feeds(engine, batch=1, seed=0)
    feeds["lab"] = feeds["lab"].astype(np.float64)
    with pytest.raises(EngineInputError, match=r"'lab'.*float64"):
        engine.run(feeds)
    feeds = _feeds(engine, batch=1, seed=0)
    feeds["demo"] = np.zeros((2, 6), np.float32)  # another batch size than the rest
    with pytest.raises(EngineInputError, match="batch"):
        engine.run(feeds)


def test_unreachable_server_and_unknown_model_are_typed(host: OnnxRepositoryHost) -> None:
    with hard_deadline(60):
        with pytest.raises(ServerUnavailableError, match="cannot be reached"):
            TritonEngine(f"triton://127.0.0.1:{free_port()}", "segmentation__fold_0")
        with pytest.raises(EngineUnavailableError):
            TritonEngine(host.url, "no_such_model")
        with pytest.raises(EngineUnavailableError, match="triton://HOST:PORT"):
            TritonEngine("http://127.0.0.1:8000/v2", "segmentation__fold_0")
        with pytest.raises(EngineUnavailableError, match="triton://HOST:PORT"):
            Predictor.from_bundle(demo_bundle_path(), engines="localhost")


def test_remote_errors_are_classified() -> None:
    from hccatom.engines.triton_engine import remote_error

    assert isinstance(remote_error(RuntimeError("Exceeds maximum queue size"), "m"),
                      ServerBusyError)
    assert isinstance(remote_error(RuntimeError("StatusCode.UNAVAILABLE"), "m"),
                      ServerUnavailableError)
    err = remote_error(RuntimeError("cannot reshape array of size 0 into shape (1,3)"), "m")
    assert isinstance(err, RemoteModelError) and "size 0" in str(err)



def test_a_server_restarted_after_the_startup_race_serves_on_the_same_ports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry's second server binds the ports the first one held and answers there."""
    from hccatom.serve import pytriton_server

    real_run, runs = pytriton_server.run, []

    def run_once_then_race(triton: object) -> None:
        real_run(triton)  # really up on the ports...
        runs.append(triton)
        if len(runs) == 1:  # ...then taken down as a failed start would be
            triton.stop()  # type: ignore[attr-defined]
            raise ServeError(
                "the Triton server did not start: get_config_from_handshake_server: "
                "ConnectionRefusedError: [Errno 111] Connection refused")

    monkeypatch.setattr(pytriton_server, "run", run_once_then_race)
    repo = tmp_path / "repo"
    write_repository(demo_bundle_path(), repo)
    with hard_deadline(180), OnnxRepositoryHost(repo) as restarted:
        assert len(runs) == 2
        name = next(iter(check_repository(repo)))
        remote = TritonEngine(restarted.url, name)
        local = OnnxRuntimeEngine(repo / name / MODEL_VERSION / "model.onnx", device="cpu")
        feeds = _feeds(local, batch=1, seed=5)
        np.testing.assert_array_equal(remote.run(feeds)[local.outputs[0].name],
                                      local.run(feeds)[local.outputs[0].name])
