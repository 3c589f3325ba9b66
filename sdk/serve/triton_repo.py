"""Write a Triton model repository from a bundle and check it against Triton's schema.

One Triton model per network file of the bundle (nnU-Net folds, the SELECTION graphs or the
fused one, fp16 twins), each ``<repo>/<model>/config.pbtxt`` plus ``<repo>/<model>/1/
model.onnx`` (ONNX Runtime backend). The repository root holds ``SHA256SUMS`` (one line per
model file) and ``hccatom_repository.json`` (which bundle, which file became which model).
Configs are built as ``ModelConfig`` protobuf messages from the schema tritonclient ships and
parsed back from the written text, so a config Triton would refuse is never left behind.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hccatom.bundle import Bundle, load_bundle
from hccatom.engines.base import TensorSpec
from hccatom.engines.providers import file_sha256
from hccatom.path_checks import read_regular_file
from hccatom.serve.errors import RepositoryError, require
from hccatom.serve.model_names import triton_model_name

REPOSITORY_JSON = "hccatom_repository.json"
CHECKSUMS = "SHA256SUMS"
MODEL_VERSION = "1"

#: numpy dtype name -> Triton data type name (``TYPE_`` + this in config.pbtxt).
TRITON_DTYPES: dict[str, str] = {
    "float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64",
    "int32": "INT32", "int16": "INT16", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL",
}

InstanceKind = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class RepositoryOptions:
    """How every model of the repository is served.

    ``max_batch_size``: largest batch Triton forms (0 disables batching; models whose first
    dimension is fixed are always written with 0). ``queue_delay_us``: how long the dynamic
    batcher waits to fill a batch. ``max_queue_size``: requests waiting per model before
    Triton answers "exceeds maximum queue size" (0: unbounded). ``instance_kind``/
    ``instance_count``: where the model runs and how many copies. ``tensorrt_fp16``: add the
    ONNX Runtime backend's TensorRT accelerator with FP16 (GPU instances only).
    """

    max_batch_size: int = 8
    queue_delay_us: int = 100
    max_queue_size: int = 0
    instance_kind: InstanceKind = "cpu"
    instance_count: int = 1
    tensorrt_fp16: bool = False
    tensorrt_workspace_bytes: int = 1 << 30

    def check(self) -> None:
        """Raise :class:`RepositoryError` naming the first option out of range."""
        if self.max_batch_size < 0:
            raise RepositoryError(f"max_batch_size must be >= 0, got {self.max_batch_size}")
        if self.queue_delay_us < 0:
            raise RepositoryError(f"queue_delay_us must be >= 0, got {self.queue_delay_us}")
        if self.max_queue_size < 0:
            raise RepositoryError(f"max_queue_size must be >= 0, got {self.max_queue_size}")
        if self.instance_kind not in ("cpu", "gpu"):
            raise RepositoryError(
                f"instance_kind must be 'cpu' or 'gpu', got {self.instance_kind!r}")
        if self.instance_count < 1:
            raise RepositoryError(f"instance_count must be >= 1, got {self.instance_count}")
        if self.tensorrt_fp16 and self.instance_kind != "gpu":
            raise RepositoryError("tensorrt_fp16 needs GPU instances (instance_kind='gpu')")


@dataclass(frozen=True)
class RepositoryModel:
    """One model of a written repository."""

    name: str
    bundle_path: str
    role: str
    sha256: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass
class RepositoryReport:
    """What :func:`write_repository` wrote."""

    root: Path
    bundle_name: str
    bundle_version: str
    bundle_sha256: str
    models: list[RepositoryModel] = field(default_factory=list)


def _model_config_pb2() -> Any:
    require("tritonclient")
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _batched(specs: tuple[TensorSpec, ...]) -> bool:
    """Every tensor's first dimension is symbolic (a batch Triton may form)."""
    return all(s.rank >= 1 and isinstance(s.shape[0], str) for s in specs)


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    shape = spec.shape[1:] if batched else spec.shape
    return [d if isinstance(d, int) else -1 for d in shape]


def model_config(name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                 options: RepositoryOptions, *, sha256: str, bundle_path: str) -> Any:
    """The ``ModelConfig`` message of one ONNX model (ONNX Runtime backend)."""
    pb = _model_config_pb2()
    batched = options.max_batch_size > 0 and _batched((*inputs, *outputs))
    cfg = pb.ModelConfig(name=name, platform="onnxruntime_onnx", backend="onnxruntime",
                         max_batch_size=options.max_batch_size if batched else 0)
    cfg.version_policy.latest.num_versions = 1
    for specs, target in ((inputs, cfg.input), (outputs, cfg.output)):
        for spec in specs:
            if spec.dtype not in TRITON_DTYPES:
                raise RepositoryError(f"model {name}: tensor {spec.name!r} has dtype "
                                      f"{spec.dtype}, which Triton configs here do not map")
            t = target.add()
            t.name = spec.name
            t.data_type = pb.DataType.Value("TYPE_" + TRITON_DTYPES[spec.dtype])
            t.dims.extend(_dims(spec, batched))
    group = cfg.instance_group.add()
    group.kind = (pb.ModelInstanceGroup.KIND_GPU if options.instance_kind == "gpu"
                  else pb.ModelInstanceGroup.KIND_CPU)
    group.count = options.instance_count
    if batched:
        cfg.dynamic_batching.max_queue_delay_microseconds = options.queue_delay_us
        if options.max_queue_size:
            cfg.dynamic_batching.default_queue_policy.max_queue_size = options.max_queue_size
    if options.tensorrt_fp16:
        acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add()
        acc.name = "tensorrt"
        acc.parameters["precision_mode"] = "FP16"
        acc.parameters["max_workspace_size_bytes"] = str(options.tensorrt_workspace_bytes)
    # The ONNX Runtime backend ignores parameters it does not know; these tie the served
    # file to the bundle (TritonEngine compares them with the local bundle).
    cfg.parameters["hccatom_sha256"].string_value = sha256
    cfg.parameters["hccatom_bundle_path"].string_value = bundle_path
    return cfg


def render_config(cfg: Any) -> str:
    """``config.pbtxt`` text of a ``ModelConfig`` message."""
    from google.protobuf import text_format

    return str(text_format.MessageToString(cfg))


#: A config.pbtxt or SHA256SUMS is a few kB; anything larger is refused unread.
MAX_TEXT_BYTES = 4 << 20


def _read_text(path: Path) -> str:
    """A repository text file, read through the checked descriptor (a FIFO or device, even
    one swapped in after a ``stat``, is a :class:`RepositoryError`, not a blocked read)."""
    data = read_regular_file(path, "repository file", error=RepositoryError,
                             max_bytes=MAX_TEXT_BYTES)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RepositoryError(f"{path} is not UTF-8 text (byte {exc.start}); write the "
                              "repository again") from None


def parse_config(path: Path) -> Any:
    """Parse a ``config.pbtxt`` with Triton's ``ModelConfig`` schema.

    Unknown fields, wrong types and bad enum values raise :class:`RepositoryError` naming
    the file and the line protobuf reports.
    """
    from google.protobuf import text_format

    pb = _model_config_pb2()
    try:
        text = _read_text(path)
    except OSError as exc:
        raise RepositoryError(f"cannot read {path}: {exc}") from exc
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as exc:
        raise RepositoryError(f"{path} is not a valid Triton model config: {exc}") from exc


def _onnx_files(bundle: Bundle) -> list[tuple[str, str, str]]:
    """(bundle path, role, sha256) of every ONNX model the manifest lists."""
    return [(f.path, f.role, f.sha256) for f in bundle.manifest.files
            if f.path.endswith(".onnx")]


def _specs(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    from hccatom.engines import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine(path, device="cpu", threads=1)
    return engine.inputs, engine.outputs


def write_repository(bundle: str | Path | Bundle, out: Path,
                     options: RepositoryOptions | None = None, *,
                     overwrite: bool = False) -> RepositoryReport:
    """Write the Triton model repository of ``bundle`` into the folder ``out``.

    The bundle is opened (and its checksums verified) unless a loaded :class:`Bundle` is
    given. ``out`` must not exist or be empty unless ``overwrite``. Every config is parsed
    back with Triton's schema and each copied model's sha256 compared with the manifest's.
    """
    opts = options or RepositoryOptions()
    opts.check()
    _model_config_pb2()  # the extra is missing: say so before anything is written
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RepositoryError(f"{out} exists and is not empty; choose a new folder or "
                                  "pass overwrite=True (--overwrite)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    report = RepositoryReport(out, b.name, b.version, b.sha256)
    sums: list[str] = []
    for rel, role, sha in _onnx_files(b):
        name = triton_model_name(rel)
        src = b.path(rel)
        inputs, outputs = _specs(src)
        cfg = model_config(name, inputs, outputs, opts, sha256=sha, bundle_path=rel)
        folder = out / name
        (folder / MODEL_VERSION).mkdir(parents=True, exist_ok=True)
        dest = folder / MODEL_VERSION / "model.onnx"
        shutil.copyfile(src, dest)
        if file_sha256(dest) != sha:
            raise RepositoryError(f"{dest}: sha256 differs from the bundle's {rel} after "
                                  "copying; check the disk and write the repository again")
        (folder / "config.pbtxt").write_text(render_config(cfg), encoding="utf-8")
        if parse_config(folder / "config.pbtxt") != cfg:
            raise RepositoryError(f"{folder / 'config.pbtxt'} does not read back as written")
        sums.append(f"{sha}  {name}/{MODEL_VERSION}/model.onnx")
        report.models.append(RepositoryModel(name, rel, role, sha, cfg.max_batch_size,
                                             inputs, outputs))
    if not report.models:
        raise RepositoryError(f"bundle {b.name} lists no ONNX model files")
    (out / CHECKSUMS).write_text("\n".join(sums) + "\n", encoding="utf-8")
    (out / REPOSITORY_JSON).write_text(json.dumps({
        "bundle": {"name": b.name, "version": b.version, "sha256": b.sha256},
        "models": {m.name: {"bundle_path": m.bundle_path, "role": m.role, "sha256": m.sha256}
                   for m in report.models},
    }, indent=2) + "\n", encoding="utf-8")
    return report


def check_repository(root: Path) -> dict[str, Any]:
    """Verify a written repository: every config parses with Triton's schema, names its
    folder, has a version folder with ``model.onnx`` whose sha256 matches ``SHA256SUMS``.

    Returns ``{model name: ModelConfig}``; raises :class:`RepositoryError` on any mismatch.
    """
    root = Path(root)
    sums_path = root / CHECKSUMS
    if not sums_path.is_file():
        raise RepositoryError(f"{root} has no {CHECKSUMS}: not a repository written by "
                              "hccatom export triton")
    expected: dict[str, str] = {}
    try:
        sums = _read_text(sums_path)
    except OSError as exc:
        raise RepositoryError(f"cannot read {sums_path}: {exc}") from exc
    for line in sums.splitlines():
        sha, _, rel = line.partition("  ")
        if not rel:
            raise RepositoryError(f"{sums_path}: malformed line {line!r}")
        expected[rel] = sha
    configs: dict[str, Any] = {}
    for cfg_path in sorted(root.glob("*/config.pbtxt")):
        cfg = parse_config(cfg_path)
        if cfg.name != cfg_path.parent.name:
            raise RepositoryError(f"{cfg_path}: name {cfg.name!r} differs from its folder "
                                  f"{cfg_path.parent.name!r}; Triton would refuse it")
        rel = f"{cfg.name}/{MODEL_VERSION}/model.onnx"
        model = root / rel
        if not model.is_file():
            raise RepositoryError(f"{model} is missing; write the repository again")
        if expected.get(rel) != file_sha256(model):
            raise RepositoryError(f"{model}: sha256 does not match {CHECKSUMS}; the file was "
                                  "changed after export")
        configs[cfg.name] = cfg
    missing = sorted(set(expected) - {f"{n}/{MODEL_VERSION}/model.onnx" for n in configs})
    if missing:
        raise RepositoryError(f"{root}: {CHECKSUMS} lists models without a config: {missing}")
    return configs


__all__ = [
    "RepositoryModel", "RepositoryOptions", "RepositoryReport", "check_repository",
    "model_config", "parse_config", "render_config", "write_repository",
]
