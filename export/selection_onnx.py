"""Export SELECTION models to ONNX, with parity against PyTorch (build time only).

One model: inputs ``arterial``, ``portal`` (B, 3, 224, 224), ``lab`` (B, 8), ``demo`` (B, 6),
``iv`` (B, 6), float32; outputs ``logit`` and ``score`` = sigmoid(logit), (B, 1).
Fused: the four cohort models in one graph taking the same inputs once and returning
``scores`` and ``logits`` (B, 4) in the order TACE, HAIC, TC, HC.

The batch dimension is dynamic. The graph is produced by PyTorch's ``torch.export``-based
ONNX exporter (``dynamo=True``, the default since PyTorch 2.9; the deprecated TorchScript
exporter is available as ``exporter="legacy"``). Export is not done until ONNX Runtime (CPU)
reproduces PyTorch within the tolerance at batch 1 and 4; the report is written beside the
model as ``<name>.parity.json`` and a failure raises :class:`ParityError` with the numbers
(the failing model file is deleted, the report kept).

The fast graphs carry no attention outputs (they would cost memory and time on every
call). ``explain=True`` also writes, per model, an explain twin
``selection_<cohort>.explain.onnx`` that outputs the head-averaged attention maps next to
the score (:mod:`hccatom.export.selection_explain`), checked to give the same score.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hccatom.engines.providers import file_sha256
from hccatom.errors import ExportError
from hccatom.export.checkpoint import load_selection
from hccatom.export.fp16 import (
    Precision,
    convert_graph_fp16,
    fp16_path,
    refuse,
    selection_fp16_parity,
    wants_fp16,
)
from hccatom.export.parity import (
    check_parity,
    library_versions,
    raise_if_failed,
    write_report,
)
from hccatom.export.selection_model import Fusion, SelectionModel, SelectionSize

COHORTS: tuple[str, ...] = ("TACE", "HAIC", "TC", "HC")
INPUT_NAMES: tuple[str, ...] = ("arterial", "portal", "lab", "demo", "iv")
SINGLE_OUTPUTS: tuple[str, ...] = ("logit", "score")
FUSED_OUTPUTS: tuple[str, ...] = ("scores", "logits")
DEFAULT_OPSET = 18
MAX_SINGLE_FILE_BYTES = 1_900_000_000  # protobuf's 2 GiB limit, with headroom
Exporter = Literal["dynamo", "legacy"]


class SelectionScoreModule(nn.Module):
    """One binary SELECTION model as exported: (logit, sigmoid(logit)), each (B, 1)."""

    def __init__(self, model: SelectionModel) -> None:
        super().__init__()
        if model.size.num_classes != 1:
            raise ExportError(
                f"SELECTION exports one logit per model; this one has {model.size.num_classes}"
            )
        self.model = model

    def forward(
        self, arterial: Tensor, portal: Tensor, lab: Tensor, demo: Tensor, iv: Tensor
    ) -> tuple[Tensor, Tensor]:
        logit = self.model(arterial, portal, lab, demo, iv)
        return logit, torch.sigmoid(logit)


class FusedSelection(nn.Module):
    """The four cohort models on shared inputs: ``scores``, ``logits`` (B, 4), COHORTS order."""

    def __init__(self, models: Mapping[str, SelectionModel]) -> None:
        super().__init__()
        if sorted(models) != sorted(COHORTS):
            raise ExportError(f"a fused export needs exactly the cohorts {COHORTS}, got "
                              f"{sorted(models)}")
        sizes = {m.size for m in models.values()}
        if len(sizes) != 1:
            raise ExportError("the four fused models must have the same size")
        for cohort, m in models.items():
            if m.size.num_classes != 1:
                raise ExportError(f"{cohort}: SELECTION exports one logit per model")
        self.models = nn.ModuleList(models[c] for c in COHORTS)

    def forward(
        self, arterial: Tensor, portal: Tensor, lab: Tensor, demo: Tensor, iv: Tensor
    ) -> tuple[Tensor, Tensor]:
        logits = torch.cat([m(arterial, portal, lab, demo, iv) for m in self.models], dim=1)
        return torch.sigmoid(logits), logits


def example_inputs(size: SelectionSize, batch: int, seed: int = 0) -> dict[str, Tensor]:
    """Seeded random inputs: images in the normalised range [-1, 1], clinical ~ N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    px = size.image_size
    return {
        "arterial": torch.rand(batch, 3, px, px, generator=gen) * 2 - 1,
        "portal": torch.rand(batch, 3, px, px, generator=gen) * 2 - 1,
        "lab": torch.randn(batch, size.n_lab, generator=gen),
        "demo": torch.randn(batch, size.n_demo, generator=gen),
        "iv": torch.randn(batch, size.n_iv, generator=gen),
    }


@dataclass(frozen=True)
class SelectionExportResult:
    """Where an export went and what its parity report says."""

    model_path: Path
    report_path: Path
    report: dict[str, Any]

    @property
    def max_abs_diff(self) -> float:
        """Largest |score difference| between ONNX Runtime and PyTorch."""
        return float(self.report["parity"]["max_abs_diff"])


def _onnx_export(
    module: nn.Module,
    size: SelectionSize,
    path: Path,
    output_names: tuple[str, ...],
    opset: int,
    exporter: Exporter,
    metadata: Mapping[str, str],
) -> None:
    """Write ``module`` to ``path`` as ONNX with a dynamic batch and metadata props."""
    args = tuple(example_inputs(size, 2, seed=123).values())
    n_params = sum(p.numel() for p in module.parameters())
    external = n_params * 4 > MAX_SINGLE_FILE_BYTES
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
            program = torch.onnx.export(
                module, args, None, dynamo=True, input_names=list(INPUT_NAMES),
                output_names=list(output_names), opset_version=opset, verbose=False,
                dynamic_shapes={n: {0: batch} for n in INPUT_NAMES},
            )
        if program is None:  # pragma: no cover - dynamo export always returns a program
            raise ExportError("torch.onnx.export(dynamo=True) returned no program")
        program.model.metadata_props.update(metadata)
        program.save(path, external_data=external)
    elif exporter == "legacy":
        import onnx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module, args, str(path), dynamo=False, input_names=list(INPUT_NAMES),
                output_names=list(output_names), opset_version=opset,
                dynamic_axes={n: {0: "batch"} for n in (*INPUT_NAMES, *output_names)},
            )
        proto = onnx.load(str(path))
        _restore_unused_inputs(proto, args)
        onnx.helper.set_model_props(proto, dict(metadata))
        onnx.save(proto, str(path), save_as_external_data=external)
    else:
        raise ExportError(f"unknown exporter {exporter!r}; use 'dynamo' or 'legacy'")


def _restore_unused_inputs(proto: Any, args: tuple[Tensor, ...]) -> None:
    """Put back inputs the TorchScript exporter pruned because nothing reads them.

    With ``fusion="image_only"`` the clinical inputs do not reach the output; the graph must
    still take them, so that every SELECTION model has the same interface.
    """
    from onnx import TensorProto, helper

    graph = proto.graph
    present = {i.name: i for i in graph.input}
    ordered = []
    for name, arg in zip(INPUT_NAMES, args, strict=True):
        if name in present:
            ordered.append(present[name])
        else:
            ordered.append(helper.make_tensor_value_info(
                name, TensorProto.FLOAT, ["batch", *arg.shape[1:]]
            ))
    extra = [i for i in graph.input if i.name not in INPUT_NAMES]
    del graph.input[:]
    graph.input.extend([*ordered, *extra])


def _export_and_check(
    module: nn.Module,
    size: SelectionSize,
    path: Path,
    output_names: tuple[str, ...],
    compare: str,
    report_base: dict[str, Any],
    *,
    opset: int,
    exporter: Exporter,
    tolerance: float,
    batches: tuple[int, ...],
    precision: Precision = "fp32",
) -> SelectionExportResult:
    fp16 = wants_fp16(precision)
    if opset < 17:
        raise ExportError(f"opset {opset} is too old; SELECTION exports need opset >= 17")
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    metadata = {
        "hccatom.kind": str(report_base["kind"]),
        "hccatom.size": size.name,
        "hccatom.fusion": str(report_base["fusion"]),
        "hccatom.cohorts": ",".join(report_base["cohorts"]),
        "hccatom.outputs": ",".join(output_names),
    }
    _onnx_export(module, size, path, output_names, opset, exporter, metadata)
    parity = check_parity(
        module, path, lambda b, s: example_inputs(size, b, s), output_names=output_names,
        compare=compare, batches=batches, tolerance=tolerance,
    )
    data_file = path.with_name(path.name + ".data")
    report: dict[str, Any] = {
        "model": path.name,
        "model_sha256": file_sha256(path),
        **({"external_data": data_file.name} if data_file.exists() else {}),
        **report_base,
        "size": size.as_dict(),
        "opset": opset,
        "exporter": f"torch.onnx.export(dynamo={exporter == 'dynamo'})",
        "inputs": {
            "arterial": ["batch", 3, size.image_size, size.image_size],
            "portal": ["batch", 3, size.image_size, size.image_size],
            "lab": ["batch", size.n_lab],
            "demo": ["batch", size.n_demo],
            "iv": ["batch", size.n_iv],
        },
        "outputs": {n: ["batch", 4 if report_base["kind"] == "selection_fused" else 1]
                    for n in output_names},
        "dtype": "float32",
        "versions": library_versions(),
        "parity": parity,
    }
    report_path = write_report(report, path.with_name(path.stem + ".parity.json"))
    if not parity["passed"]:
        for f in (path, data_file):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
    raise_if_failed(report, report_path)
    if fp16:
        _add_fp16(path, size, compare, batches)
    return SelectionExportResult(path, report_path, report)


def _add_fp16(path: Path, size: SelectionSize, compare: str, batches: tuple[int, ...]) -> Path:
    """The fp16 twin of ``path`` beside it, kept only if its scores are within 1e-3."""
    half = convert_graph_fp16(path, fp16_path(path))

    def inputs(b: int, seed: int) -> dict[str, Any]:
        return {k: v.numpy() for k, v in example_inputs(size, b, seed).items()}

    gate = selection_fp16_parity(path, half, inputs, output=compare, batches=batches)
    report = {"model": half.name, "model_sha256": file_sha256(half),
              "reference_model": path.name, "dtype": "float16 inside, float32 inputs/outputs",
              "converter": "onnxruntime.transformers.float16(keep_io_types=True)",
              "versions": library_versions(), "parity": gate}
    report_path = write_report(report, path.with_name(path.stem + ".fp16.parity.json"))
    if not gate["passed"]:
        report_path.rename(report_path.with_name(path.stem + ".fp16.refused.json"))
        refuse([half], report, report_path.with_name(path.stem + ".fp16.refused.json"),
               "SELECTION")
    return half


def export_selection(
    model: SelectionModel,
    out_dir: str | Path,
    cohort: str,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: Exporter = "dynamo",
    tolerance: float = 1e-5,
    batches: tuple[int, ...] = (1, 4),
    checkpoint_sha256: str | None = None,
    precision: Precision = "fp32",
    explain: bool = False,
) -> SelectionExportResult:
    """Export one cohort model to ``out_dir/selection_<cohort>.onnx`` and check parity.

    ``precision`` ``fp16``/``both`` adds ``selection_<cohort>.fp16.onnx`` (fp32 IO) when its
    scores are within 1e-3 of the fp32 graph's (else ``Fp16ParityError``). ``explain`` adds
    ``selection_<cohort>.explain.onnx`` (attention maps next to the score)."""
    cohort = _cohort(cohort)
    base: dict[str, Any] = {
        "kind": "selection", "cohorts": [cohort], "fusion": model.fusion,
        "checkpoints_sha256": {cohort: checkpoint_sha256} if checkpoint_sha256 else {},
    }
    path = Path(out_dir) / f"selection_{cohort.lower()}.onnx"
    result = _export_and_check(
        SelectionScoreModule(model), model.size, path, SINGLE_OUTPUTS, "score", base,
        opset=opset, exporter=exporter, tolerance=tolerance, batches=batches,
        precision=precision,
    )
    if explain:
        write_explain_twin(path, model)
    return result


def write_explain_twin(fast: Path, model: SelectionModel) -> Path:
    """``fast``'s explain twin beside it, with a report proving it gives the same score."""
    from hccatom.export.selection_explain import add_explain_outputs, check_explain_graph

    twin = add_explain_outputs(fast, model.size, model.fusion)
    feeds = {k: v.numpy() for k, v in example_inputs(model.size, 2, seed=7).items()}
    diff = check_explain_graph(fast, twin, feeds)
    write_report({"model": twin.name, "model_sha256": file_sha256(twin),
                  "reference_model": fast.name, "compared_output": "score",
                  "parity": {"max_abs_diff": diff, "passed": True, "tolerance": 1e-6}},
                 twin.with_name(twin.name[: -len(".onnx")] + ".parity.json"))
    return twin


def export_fused(
    models: Mapping[str, SelectionModel],
    out_dir: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: Exporter = "dynamo",
    tolerance: float = 1e-5,
    batches: tuple[int, ...] = (1, 4),
    checkpoints_sha256: Mapping[str, str] | None = None,
    precision: Precision = "fp32",
    explain: bool = False,
) -> SelectionExportResult:
    """Export the four cohort models as one graph ``out_dir/selection_fused.onnx``.

    ``explain`` adds one explain graph per cohort (``selection_<cohort>.explain.onnx``),
    each from that cohort's own single-model export (the fused graph stays unchanged)."""
    models = {_cohort(c): m for c, m in models.items()}
    fused = FusedSelection(models)
    fusions = {m.fusion for m in models.values()}
    if len(fusions) != 1:
        raise ExportError(f"the four fused models must share one fusion mode, got {fusions}")
    size = next(iter(models.values())).size
    base: dict[str, Any] = {
        "kind": "selection_fused", "cohorts": list(COHORTS), "fusion": fusions.pop(),
        "checkpoints_sha256": dict(checkpoints_sha256 or {}),
    }
    result = _export_and_check(
        fused, size, Path(out_dir) / "selection_fused.onnx", FUSED_OUTPUTS, "scores", base,
        opset=opset, exporter=exporter, tolerance=tolerance, batches=batches,
        precision=precision,
    )
    if explain:
        import shutil
        import tempfile

        for cohort, m in models.items():
            with tempfile.TemporaryDirectory(prefix="hccatom-explain-") as tmp:
                single = export_selection(m, tmp, cohort, opset=opset, exporter=exporter,
                                          tolerance=tolerance, batches=batches)
                twin = write_explain_twin(single.model_path, m)
                for f in (twin, twin.with_name(twin.name[: -len(".onnx")] + ".parity.json")):
                    shutil.copyfile(f, Path(out_dir) / f.name)
    return result


def export_selection_checkpoint(
    checkpoint: str | Path,
    cohort: str,
    out_dir: str | Path,
    *,
    size: str = "paper",
    fusion: Fusion = "paper",
    **kwargs: Any,
) -> SelectionExportResult:
    """Load a checkpoint strictly and export it (the ``hccatom export selection`` path)."""
    model = load_selection(checkpoint, size=size, fusion=fusion)
    return export_selection(
        model, out_dir, cohort, checkpoint_sha256=file_sha256(Path(checkpoint)), **kwargs
    )


def export_fused_checkpoints(
    checkpoints: Mapping[str, str | Path],
    out_dir: str | Path,
    *,
    size: str = "paper",
    fusion: Fusion = "paper",
    **kwargs: Any,
) -> SelectionExportResult:
    """Load the four cohort checkpoints strictly and export them as one fused graph."""
    models = {_cohort(c): load_selection(p, size=size, fusion=fusion)
              for c, p in checkpoints.items()}
    shas = {_cohort(c): file_sha256(Path(p)) for c, p in checkpoints.items()}
    return export_fused(models, out_dir, checkpoints_sha256=shas, **kwargs)


def _cohort(name: str) -> str:
    up = name.upper()
    if up not in COHORTS:
        raise ExportError(f"unknown cohort {name!r}; choose one of {', '.join(COHORTS)}")
    return up
