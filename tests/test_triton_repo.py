"""``hccatom export triton``: a Triton model repository from the demo bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="needs the serve extra (tritonclient[grpc])")

from hccatom.bundle import load_bundle
from hccatom.cli import main
from hccatom.demo import demo_bundle_path
from hccatom.engines import OnnxRuntimeEngine
from hccatom.serve.errors import RepositoryError
from hccatom.serve.model_names import triton_model_name
from hccatom.serve.triton_repo import (
    RepositoryOptions,
    check_repository,
    parse_config,
    write_repository,
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repo") / "models"
    write_repository(demo_bundle_path(), out)
    return out


def test_one_model_per_network_with_parsed_configs(repo: Path) -> None:
    bundle = load_bundle(demo_bundle_path())
    onnx = [f for f in bundle.manifest.files if f.path.endswith(".onnx")]
    configs = check_repository(repo)
    assert sorted(configs) == sorted(triton_model_name(f.path) for f in onnx)
    from tritonclient.grpc import model_config_pb2 as pb

    for f in onnx:
        cfg = configs[triton_model_name(f.path)]
        engine = OnnxRuntimeEngine(bundle.path(f.path), device="cpu")
        assert cfg.platform == "onnxruntime_onnx"
        assert cfg.max_batch_size == 8
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
        assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
        assert cfg.parameters["hccatom_sha256"].string_value == f.sha256
        # dims are the ONNX shapes without the batch axis
        assert [(i.name, list(i.dims)) for i in cfg.input] == [
            (s.name, list(s.shape[1:])) for s in engine.inputs]
        assert [(o.name, list(o.dims)) for o in cfg.output] == [
            (s.name, list(s.shape[1:])) for s in engine.outputs]
        assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator
    meta = json.loads((repo / "hccatom_repository.json").read_text())
    assert meta["bundle"]["sha256"] == bundle.sha256


def test_gpu_tensorrt_fp16_block(tmp_path: Path) -> None:
    opts = RepositoryOptions(instance_kind="gpu", instance_count=2, tensorrt_fp16=True,
                             max_batch_size=4, queue_delay_us=500, max_queue_size=16)
    report = write_repository(demo_bundle_path(), tmp_path / "r", opts)
    cfg = parse_config(tmp_path / "r" / report.models[0].name / "config.pbtxt")
    from tritonclient.grpc import model_config_pb2 as pb

    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert cfg.instance_group[0].count == 2
    assert cfg.max_batch_size == 4
    assert cfg.dynamic_batching.default_queue_policy.max_queue_size == 16
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"


def test_bad_options_and_tampering_are_refused(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="GPU instances"):
        write_repository(demo_bundle_path(), tmp_path / "x", RepositoryOptions(
            tensorrt_fp16=True))
    with pytest.raises(RepositoryError, match="not empty"):
        write_repository(demo_bundle_path(), repo)
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(repo, copy)
    cfg = copy / "segmentation__fold_0" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + "\nmax_batch_sise: 3\n")
    with pytest.raises(RepositoryError, match="not a valid Triton model config"):
        check_repository(copy)
    shutil.rmtree(copy)
    shutil.copytree(repo, copy)
    model = copy / "selection__TC__selection_tc" / "1" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    with pytest.raises(RepositoryError, match="sha256 does not match"):
        check_repository(copy)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "repo"
    assert main(["export", "triton", "--bundle", str(demo_bundle_path()), "--out",
                 str(out), "--instance-kind", "gpu", "--tensorrt-fp16"]) == 0
    assert "nvcr.io/nvidia/tritonserver" in capsys.readouterr().out
    assert len(check_repository(out)) == 5
    assert main(["export", "triton", "--bundle", str(demo_bundle_path()), "--out",
                 str(out)]) != 0
    assert "not empty" in capsys.readouterr().err
