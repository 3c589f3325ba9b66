"""nnU-Net v2 model folder -> ONNX per fold + ``SegmentationSpec`` + parity report (build time).

Steps (see ``hccatom export nnunet --help``):

1. check the folder is an nnU-Net v2 training output (``dataset.json``, ``plans.json``,
   ``fold_X/<checkpoint>``), not an nnU-Net v1 one, and that the configuration exists,
   uses ``CTNormalization`` on one channel and nnU-Net's default resampling functions, and
   is not region-based; a cascade stage (``3d_cascade_fullres``) first exports its previous
   stage (``3d_lowres``, the sibling model folder unless given) into ``previous_stage/``;
2. map ``dataset.json`` labels to hccatom's (liver, tumour), by name or ``--label-map``;
3. per fold: load the checkpoint (``torch.load(weights_only=True)`` first; if that fails
   the file is trusted site material, so warn and load it fully), build the network as
   ``nnUNetPredictor`` does (the checkpoint's trainer class, ``build_network_architecture``,
   deep supervision off; ``get_network_from_plans`` if the trainer class is unknown), load
   the weights, export ONNX (opset 17, dynamic batch, spatial size fixed to the patch);
4. parity per fold: ONNX Runtime (through :class:`hccatom.engines.OnnxRuntimeEngine`, CPU)
   vs PyTorch on seeded random patches, max |logit difference| / logit range <= 1e-4,
   :class:`ParityError` otherwise;
5. write ``segmentation_spec.json`` and ``parity_report.json``;
6. with ``precision`` ``fp16``/``both``: an fp16 twin per fold, gated against fp32 on whole
   segmentations (``fp16_parity_report.json``; see :mod:`hccatom.export.fp16`).
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from hccatom.engines import OnnxRuntimeEngine
from hccatom.engines.providers import file_sha256
from hccatom.errors import CheckpointError, ExportError, ParityError
from hccatom.export.fp16 import (
    Precision,
    convert_graph_fp16,
    default_parity_volumes,
    fp16_path,
    refuse,
    segmentation_fp16_parity,
    wants_fp16,
)
from hccatom.segmentation.spec import (
    SPEC_FILENAME,
    CTIntensityStats,
    FoldModel,
    LabelMeaning,
    ResamplingSpec,
    SegmentationSpec,
)
from hccatom.volume import Volume

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
"""Max |ONNX - PyTorch| logit difference relative to the PyTorch logit range."""
REPORT_FILENAME = "parity_report.json"
FP16_REPORT_FILENAME = "fp16_parity_report.json"
OPSET = 17
LIVER_NAMES = ("liver",)
TUMOUR_NAMES = ("tumour", "tumor", "lesion", "cancer", "hcc", "neoplasm", "mass")
SUPPORTED_RESAMPLING = "resample_data_or_seg_to_shape"
V1_MARKERS = ("plans.pkl", "model_final_checkpoint.model", "model_best.model")
PREVIOUS_STAGE_DIR = "previous_stage"
"""Sub-folder of a cascade export holding the previous stage's fold models and report."""


@dataclass(frozen=True)
class NnunetExportResult:
    """What :func:`export_nnunet` wrote."""

    out_dir: Path
    spec: SegmentationSpec
    report: dict[str, Any]


# --- folder checks ----------------------------------------------------------------------
def _check_folder(folder: Path, checkpoint: str) -> None:
    if not folder.is_dir():
        raise ExportError(f"model folder {folder} does not exist or is not a directory")
    v1 = [m for m in V1_MARKERS if (folder / m).exists() or any(folder.glob(f"fold_*/{m}"))]
    if v1 or re.search(r"nnUNetTrainerV2|nnUNetPlansv2\.1", folder.name):
        raise ExportError(
            f"{folder} looks like an nnU-Net v1 model ({', '.join(v1) or folder.name}); hccatom "
            "exports nnU-Net v2 models only. Convert it with nnU-Net v2's "
            "`nnUNetv2_convert_old_nnUNet_dataset` and retrain, or use a v2 model folder."
        )
    missing = [n for n in ("dataset.json", "plans.json") if not (folder / n).is_file()]
    if missing:
        raise ExportError(
            f"{folder} is not an nnU-Net v2 results folder: missing {', '.join(missing)}. "
            "Point --model-folder at <nnUNet_results>/DatasetXXX_Name/"
            "<Trainer>__<Plans>__<configuration>/ (it holds dataset.json, plans.json and fold_X/)."
        )
    if not any(folder.glob(f"fold_*/{checkpoint}")):
        raise ExportError(
            f"{folder} has no fold_X/{checkpoint}; train a fold first or pass --checkpoint "
            "(e.g. checkpoint_best.pth)"
        )


def _available_folds(folder: Path, checkpoint: str) -> list[int | str]:
    out: list[int | str] = []
    for d in sorted(folder.glob("fold_*")):
        if (d / checkpoint).is_file():
            tag = d.name[len("fold_") :]
            out.append(int(tag) if tag.isdigit() else tag)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path.name} in {path.parent}: {exc}") from exc
    if not isinstance(data, dict):
        raise ExportError(f"{path.name} in {path.parent} is not a JSON object")
    return data


# --- labels -----------------------------------------------------------------------------
def parse_label_map(text: str | None) -> dict[str, int] | None:
    """``"liver=1,tumour=2"`` -> ``{"liver": 1, "tumour": 2}`` (dataset.json label values)."""
    if text is None:
        return None
    out: dict[str, int] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("liver", "tumour", "tumor") or not value.strip().isdigit():
            raise ExportError(
                f"bad --label-map entry {part!r}; write e.g. --label-map liver=1,tumour=2 "
                "(dataset.json label values)"
            )
        out["tumour" if key == "tumor" else key] = int(value)
    if set(out) != {"liver", "tumour"}:
        raise ExportError("--label-map needs both liver=<value> and tumour=<value>")
    return out


def label_meaning(
    dataset_json: Mapping[str, Any], label_map: Mapping[str, int] | None = None
) -> LabelMeaning:
    """Map nnU-Net output channels (sorted label values) to hccatom labels 0/1/2."""
    labels = dataset_json.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise ExportError("dataset.json has no 'labels' mapping")
    regions = {k: v for k, v in labels.items() if isinstance(v, list | tuple)}
    if regions or dataset_json.get("regions_class_order") is not None:
        raise ExportError(
            f"the model is region-based ({', '.join(regions) or 'regions_class_order'}); "
            "hccatom reproduces softmax/argmax label models only (region models use sigmoid "
            "outputs and an ordered overlay that the bundle format does not describe)"
        )
    values = {str(k): int(v) for k, v in labels.items() if str(k) != "ignore"}
    by_value = sorted(values.items(), key=lambda kv: kv[1])
    if [v for _, v in by_value] != list(range(len(by_value))):
        raise ExportError(f"dataset.json labels must be consecutive from 0, got {values}")
    listing = ", ".join(f"{k}={v}" for k, v in by_value)
    if label_map is not None:
        liver_v, tumour_v = label_map["liver"], label_map["tumour"]
        bad = [v for v in (liver_v, tumour_v) if v not in values.values() or v == 0]
        if bad:
            raise ExportError(
                f"--label-map values {bad} are not foreground labels of dataset.json ({listing})"
            )
    else:

        def find(names: Sequence[str]) -> list[int]:
            return [v for k, v in values.items() if v != 0 and any(n in k.lower() for n in names)]

        livers, tumours = find(LIVER_NAMES), find(TUMOUR_NAMES)
        if len(livers) != 1 or len(tumours) != 1 or livers[0] == tumours[0]:
            raise ExportError(
                f"cannot tell liver and tumour apart from dataset.json labels ({listing}); "
                "pass --label-map liver=<value>,tumour=<value>"
            )
        liver_v, tumour_v = livers[0], tumours[0]
    to_label: list[Any] = [0] * len(by_value)
    to_label[liver_v] = 1
    to_label[tumour_v] = 2
    return LabelMeaning(
        channel_names=[k for k, _ in by_value],
        channel_to_label=to_label,
        liver_channel=liver_v,
        tumour_channel=tumour_v,
    )


# --- plans ------------------------------------------------------------------------------
def _resampling(cfg: Mapping[str, Any], kind: str) -> ResamplingSpec:
    """The resampling kwargs of ``kind`` (data, probabilities, or seg: is_seg=True)."""
    from nnunetv2.configuration import ANISO_THRESHOLD

    fn = cfg.get(f"resampling_fn_{kind}")
    if fn != SUPPORTED_RESAMPLING:
        raise ExportError(
            f"resampling_fn_{kind} is {fn!r}; the runtime reproduces only nnU-Net's default "
            f"{SUPPORTED_RESAMPLING!r}"
        )
    kw = dict(cfg.get(f"resampling_fn_{kind}_kwargs") or {})
    if bool(kw.get("is_seg")) != (kind == "seg"):
        raise ExportError(f"resampling_fn_{kind}_kwargs has is_seg={kw.get('is_seg')}; "
                          "unsupported")
    if kind == "seg" and int(kw.get("order_z", 0)) != 0:
        raise ExportError("resampling_fn_seg_kwargs order_z != 0 is not supported")
    return ResamplingSpec(
        order=int(kw.get("order", 3)),
        order_z=int(kw.get("order_z", 0)),
        force_separate_z=kw.get("force_separate_z"),
        anisotropy_threshold=float(kw.get("separate_z_anisotropy_threshold", ANISO_THRESHOLD)),
    )


def _configuration(plans: dict[str, Any], configuration: str, allow_cascade: bool = False
                   ) -> Any:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    if configuration not in pm.available_configurations:
        raise ExportError(
            f"configuration {configuration!r} is not in plans.json (it has "
            f"{', '.join(pm.available_configurations)}); pass --configuration"
        )
    cm = pm.get_configuration(configuration)
    if cm.previous_stage_name is not None and not allow_cascade:
        raise ExportError(
            f"{configuration} is a cascade stage (needs {cm.previous_stage_name}'s "
            "segmentation as input); hccatom supports 2d, 3d_fullres and 3d_lowres only"
        )
    schemes = list(cm.normalization_schemes)
    if schemes != ["CTNormalization"]:
        raise ExportError(
            f"configuration {configuration} normalises with {schemes}; only one CT channel "
            "with CTNormalization is supported: the runtime takes one CT phase in HU and "
            "applies the training set's fixed HU statistics. Per-image schemes (ZScore) or "
            "several channels would need inputs and statistics the bundle does not carry."
        )
    return pm, cm


def _ct_stats(pm: Any) -> CTIntensityStats:
    props = pm.foreground_intensity_properties_per_channel
    p = props.get("0", props.get(0)) if isinstance(props, Mapping) else None
    if not p:
        raise ExportError("plans.json lacks foreground_intensity_properties_per_channel['0']")
    return CTIntensityStats(
        mean=float(p["mean"]),
        std=float(p["std"]),
        percentile_00_5=float(p["percentile_00_5"]),
        percentile_99_5=float(p["percentile_99_5"]),
    )


# --- checkpoints and network --------------------------------------------------------------
def _numpy_scalar_globals() -> list[Any]:
    """numpy scalar/dtype reconstructors (plain numbers, no code) under both module names."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    out: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_):
        out.append(type(np.dtype(t)))
    return out


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint as safely as it allows; warn if it needs a full (pickle) load.

    1. ``torch.load(weights_only=True)``;
    2. the same with numpy scalars and dtypes allowed: nnU-Net's own checkpoints keep numpy
       floats in their training log, which step 1 refuses (this loads them safely);
    3. otherwise warn and load fully: the exporting site trained the model and owns the
       file, so this is acceptable at build time for a trusted file. The runtime never
       loads checkpoints.
    """
    try:
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            with torch.serialization.safe_globals(_numpy_scalar_globals()):
                ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        warnings.warn(
            f"{path.name}: torch.load(weights_only=True) refused it ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); loading it fully because a checkpoint is the "
            "exporting site's own trusted file. Do not export checkpoints of unknown origin.",
            stacklevel=2,
        )
        ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or "network_weights" not in ck:
        raise CheckpointError(
            f"{path} is not an nnU-Net v2 checkpoint (no 'network_weights'); keys: "
            f"{sorted(ck)[:10] if isinstance(ck, dict) else type(ck).__name__}"
        )
    return ck


def build_network(
    pm: Any, cm: Any, dataset_json: dict[str, Any], trainer_name: str | None
) -> nn.Module:
    """The inference network, built as ``nnUNetPredictor`` builds it from a model folder."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    n_in = determine_num_input_channels(pm, cm, dataset_json)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    trainer_class = None
    if trainer_name:
        try:
            from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

            trainer_class = recursive_find_trainer_class_by_name(trainer_name)
        except Exception as exc:  # unknown custom trainer
            log.warning("trainer %s not importable (%s); building from plans", trainer_name, exc)
    if trainer_class is not None:
        sig = inspect.signature(trainer_class.build_network_architecture)
        if "plans_manager" in sig.parameters:
            net = trainer_class.build_network_architecture(
                pm, cm, n_in, n_out, enable_deep_supervision=False
            )
        else:
            net = trainer_class.build_network_architecture(
                cm.network_arch_class_name, cm.network_arch_init_kwargs,
                cm.network_arch_init_kwargs_req_import, n_in, n_out,
                enable_deep_supervision=False,
            )
    else:
        net = get_network_from_plans(
            cm.network_arch_class_name, cm.network_arch_init_kwargs,
            cm.network_arch_init_kwargs_req_import, n_in, n_out,
            allow_init=True, deep_supervision=False,
        )
    return net


def _load_weights(net: nn.Module, weights: Mapping[str, torch.Tensor], where: str) -> None:
    clean = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in weights.items()}
    try:
        net.load_state_dict(clean, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{where}: weights do not fit the network built from plans.json "
            f"({str(exc).splitlines()[0][:300]}); is plans.json from the same training?"
        ) from exc


def export_onnx(net: nn.Module, patch: Sequence[int], path: Path, channels: int = 1) -> None:
    """Export with a dynamic batch axis and the spatial size fixed to ``patch``
    (``channels`` input channels: 1, or more for a cascade stage)."""
    net.eval()
    dummy = torch.zeros((1, channels, *patch), dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (dummy,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def parity(
    net: nn.Module,
    onnx_path: Path,
    patch: Sequence[int],
    seed: int,
    batches: Sequence[int] = (1, 2),
    channels: int = 1,
) -> dict[str, Any]:
    """ONNX Runtime (CPU) vs PyTorch on seeded random patches; relative max difference."""
    engine = OnnxRuntimeEngine(onnx_path, device="cpu")
    rng = np.random.default_rng(seed)
    rows = []
    for b in batches:
        x = rng.normal(0.0, 1.0, size=(b, channels, *patch)).astype(np.float32)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        got = engine.run({"image": x})["logits"]
        if got.shape != ref.shape:
            raise ParityError(f"{onnx_path.name}: ONNX output {got.shape} vs PyTorch {ref.shape}")
        diff = np.abs(got.astype(np.float64) - ref)
        rng_ = float(ref.max() - ref.min()) or 1.0
        rows.append({
            "batch": b,
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "logit_range": rng_,
            "relative_max_diff": float(diff.max() / rng_),
        })
    worst = max(r["relative_max_diff"] for r in rows)
    return {"checks": rows, "relative_max_diff": worst, "passed": worst <= PARITY_TOLERANCE}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("hccatom", "nnunetv2", "torch", "onnx", "onnxruntime", "numpy", "scipy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


# --- entry point ------------------------------------------------------------------------
def export_nnunet(
    model_folder: str | Path,
    out_dir: str | Path,
    *,
    configuration: str | None = None,
    folds: Sequence[int | str] | None = None,
    checkpoint: str = "checkpoint_final.pth",
    label_map: Mapping[str, int] | None = None,
    seed: int = 0,
    window_before_segmentation: bool | None = None,
    postprocessing: str | Path | None = None,
    training_orientation: str | None = None,
    raw_dataset: str | Path | None = None,
    precision: Precision = "fp32",
    fp16_volumes: Mapping[str, Volume] | None = None,
    previous_stage_folder: str | Path | None = None,
) -> NnunetExportResult:
    """Export an nnU-Net v2 model folder; see the module docstring. Raises ExportError.

    ``window_before_segmentation``: whether the model was trained on HU-windowed CT (True)
    or raw HU (False), recorded in the spec; None leaves it unrecorded (then ``hccatom
    bundle build`` asks for it). ``postprocessing``: nnU-Net's ``postprocessing.json`` (or
    ``.pkl``, read with a restricted unpickler) to store in the spec as data.
    ``training_orientation`` / ``raw_dataset``: the orientation the model was trained on, given
    or inferred from the raw training images' headers (``raw_dataset``, else
    ``$nnUNet_raw/<dataset>`` when present); None when neither is available.
    ``precision`` ``"fp16"``/``"both"``: also write ``fold_N.fp16.onnx`` per fold (fp32 IO),
    kept only if whole segmentations of ``fp16_volumes`` (default: a small synthetic
    two-phase study) pass the fp16 gate (:mod:`hccatom.export.fp16`); else
    :class:`~hccatom.export.fp16.Fp16ParityError` after writing the fp32 export.
    ``previous_stage_folder`` (cascades): the previous stage's model folder (default: the
    sibling ``<Trainer>__<Plans>__<previous stage>``); all its folds are exported.
    """
    fp16 = wants_fp16(precision)
    folder = Path(model_folder)
    out = Path(out_dir)
    _check_folder(folder, checkpoint)
    dataset_json = _read_json(folder / "dataset.json")
    plans = _read_json(folder / "plans.json")
    if configuration is None:
        m = re.match(r".+__.+__(.+)$", folder.name)
        configuration = m.group(1) if m else "3d_fullres"
    pm, cm = _configuration(plans, configuration, allow_cascade=True)
    if cm.previous_stage_name is not None and fp16:
        raise ExportError("fp16 graphs are not supported for cascades yet; use --precision fp32")
    labels = label_meaning(dataset_json, label_map)
    from hccatom.export.nnunet_orientation import resolve_training_orientation

    orientation = resolve_training_orientation(
        training_orientation, raw_dataset, str(plans.get("dataset_name", "")) or None
    )
    post = None
    if postprocessing is not None:
        from hccatom.export.nnunet_postprocessing import read_postprocessing
        from hccatom.segmentation.postprocessing import check_mappable

        post = read_postprocessing(postprocessing)
        try:
            check_mappable(post, labels.channel_to_label)
        except ValueError as exc:
            raise ExportError(f"{postprocessing}: {exc}") from exc
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    if n_out != len(labels.channel_to_label):
        raise ExportError(f"network has {n_out} outputs but dataset.json lists "
                          f"{len(labels.channel_to_label)} labels")
    resampling_data = _resampling(cm.configuration, "data")
    resampling_probs = _resampling(cm.configuration, "probabilities")
    stats = _ct_stats(pm)
    previous = None
    if cm.previous_stage_name is not None:
        previous = _export_previous_stage(
            folder, out, str(cm.previous_stage_name), previous_stage_folder,
            checkpoint=checkpoint, label_map=label_map, seed=seed + 1000,
            window_before_segmentation=window_before_segmentation,
            training_orientation=orientation, raw_dataset=raw_dataset,
        )
    n_in = 1 if previous is None else 1 + previous.num_output_channels - 1
    avail = _available_folds(folder, checkpoint)
    chosen = list(avail) if folds is None else [int(f) if str(f).isdigit() else f for f in folds]
    missing = [f for f in chosen if f not in avail]
    if missing:
        raise ExportError(
            f"folds {missing} have no {checkpoint} in {folder} (available: {avail})"
        )
    patch = [int(p) for p in cm.patch_size]
    out.mkdir(parents=True, exist_ok=True)

    fold_models: list[FoldModel] = []
    fold_reports: list[dict[str, Any]] = []
    mirror: list[int] | None = None
    trainer_name = ""
    for i, fold in enumerate(chosen):
        ck_path = folder / f"fold_{fold}" / checkpoint
        ck = load_checkpoint(ck_path)
        trainer_name = str(ck.get("trainer_name", "nnUNetTrainer"))
        ck_conf = (ck.get("init_args") or {}).get("configuration")
        if ck_conf is not None and ck_conf != configuration:
            raise ExportError(
                f"fold {fold} was trained with configuration {ck_conf!r}, not {configuration!r}"
            )
        axes = ck.get("inference_allowed_mirroring_axes")
        fold_axes = [int(a) for a in axes] if axes is not None else []
        if mirror is None:
            mirror = fold_axes
        elif i > 0 and fold_axes != mirror:
            log.warning("fold %s allows mirror axes %s, fold %s %s; using the first",
                        fold, fold_axes, chosen[0], mirror)
        net = build_network(pm, cm, dataset_json, trainer_name)
        _load_weights(net, ck["network_weights"], f"fold {fold}")
        net.eval()
        onnx_name = f"fold_{fold}.onnx"
        export_onnx(net, patch, out / onnx_name, n_in)
        rep = parity(net, out / onnx_name, patch, seed + i, channels=n_in)
        rep["fold"] = fold
        fold_reports.append(rep)
        fold_id: int | Literal["all"] = fold if isinstance(fold, int) else "all"
        fold_models.append(
            FoldModel(fold=fold_id, onnx=onnx_name, sha256=file_sha256(out / onnx_name))
        )

    spec = SegmentationSpec(
        configuration=configuration,
        dims=3 if len(patch) == 3 else 2,
        patch_size=patch,
        target_spacing_mm=[float(s) for s in cm.spacing],
        transpose_forward=[int(t) for t in pm.transpose_forward],
        transpose_backward=[int(t) for t in pm.transpose_backward],
        ct_intensity=stats,
        resampling_data=resampling_data,
        resampling_probabilities=resampling_probs,
        mirror_axes=mirror or [],
        num_output_channels=n_out,
        folds=fold_models,
        labels=labels,
        provenance={
            "dataset": str(pm.dataset_name),
            "plans": str(pm.plans_name),
            "trainer": trainer_name,
            "checkpoint": checkpoint,
            "nnunetv2": _versions().get("nnunetv2", "unknown"),
        },
        window_before_segmentation=window_before_segmentation,
        postprocessing=post,
        training_orientation=orientation,
        previous_stage=previous,
        resampling_segmentation=None if previous is None else _resampling(
            cm.configuration, "seg"),
    )
    report = {
        "kind": "nnunet-onnx-parity",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tolerance_relative_max_diff": PARITY_TOLERANCE,
        "measure": "max |ONNX Runtime CPU - PyTorch| / (PyTorch logit max - min), seeded "
        "N(0,1) patches, batch 1 and 2",
        "patch_size": patch,
        "dynamic_batch": True,
        "fixed_spatial_size": True,
        "opset": OPSET,
        "folds": fold_reports,
        "versions": _versions(),
        "passed": all(r["passed"] for r in fold_reports),
    }
    if previous is not None:
        report["input_channels"] = n_in
        report["previous_stage"] = f"{PREVIOUS_STAGE_DIR}/{REPORT_FILENAME}"
    spec.save(out)
    (out / REPORT_FILENAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    failed = [r for r in fold_reports if not r["passed"]]
    if failed:
        worst = max(r["relative_max_diff"] for r in failed)
        raise ParityError(
            f"ONNX export of folds {[r['fold'] for r in failed]} differs from PyTorch: relative "
            f"max logit difference {worst:.2e} > {PARITY_TOLERANCE:.0e} (report: "
            f"{out / REPORT_FILENAME})"
        )
    if fp16:
        spec = _add_fp16_folds(spec, out, fp16_volumes)
    log.info("wrote %s and %d fold model(s) to %s", SPEC_FILENAME, len(fold_models), out)
    return NnunetExportResult(out_dir=out, spec=spec, report=report)


def stage_spec(result: NnunetExportResult, prefix: str) -> SegmentationSpec:
    """An export written into the sub-folder ``prefix`` as a stage or member of a larger
    spec: fold paths made relative to the parent folder, the sub-folder's own spec file
    removed (the parent's spec describes it; its parity report stays)."""
    def moved(name: str | None) -> str | None:
        return None if name is None else f"{prefix}/{name}"

    folds = [f.model_copy(update={"onnx": moved(f.onnx), "onnx_fp16": moved(f.onnx_fp16)})
             for f in result.spec.folds]
    (result.out_dir / SPEC_FILENAME).unlink()
    return result.spec.model_copy(update={"folds": folds})


def _export_previous_stage(
    folder: Path, out: Path, previous_name: str, previous_folder: str | Path | None,
    **kwargs: Any,
) -> SegmentationSpec:
    """Export a cascade's previous stage into ``out/previous_stage`` (all its folds)."""
    if previous_folder is None:
        trainer, plans_name, _ = [*folder.name.split("__"), "", "", ""][:3]
        previous_folder = folder.parent / f"{trainer}__{plans_name}__{previous_name}"
    prev_dir = Path(previous_folder)
    if not prev_dir.is_dir():
        raise ExportError(
            f"{folder.name} is a cascade stage that needs {previous_name}'s model folder; "
            f"{prev_dir} does not exist: pass --previous-stage-folder"
        )
    result = export_nnunet(prev_dir, out / PREVIOUS_STAGE_DIR, configuration=previous_name,
                           **kwargs)
    return stage_spec(result, PREVIOUS_STAGE_DIR)


def _add_fp16_folds(
    spec: SegmentationSpec, out: Path, volumes: Mapping[str, Volume] | None
) -> SegmentationSpec:
    """Convert every fold to fp16, gate the set on whole segmentations, record it in the spec."""
    pairs = {}
    for f in spec.folds:
        src = out / f.onnx
        pairs[f.fold] = (src, convert_graph_fp16(src, fp16_path(src)))
    report = segmentation_fp16_parity(
        spec, pairs, volumes if volumes is not None else default_parity_volumes()
    )
    report["versions"] = _versions()
    report_path = out / FP16_REPORT_FILENAME
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not report["passed"]:
        refuse([p[1] for p in pairs.values()], report, report_path, "segmentation")
    folds = [
        f.model_copy(update={"onnx_fp16": pairs[f.fold][1].name,
                             "sha256_fp16": file_sha256(pairs[f.fold][1])})
        for f in spec.folds
    ]
    spec = spec.model_copy(update={"folds": folds})
    spec.save(out)
    return spec
