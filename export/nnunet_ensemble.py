"""Several nnU-Net v2 configurations -> one ensemble segmentation spec (build time).

``nnUNetv2_ensemble`` averages the softmax probabilities that each configuration predicts
on the input grid (e.g. ``2d`` + ``3d_fullres``, as ``nnUNetv2_find_best_configuration``
may choose). Here each member (a model folder, its configuration and folds) is exported
with :func:`~hccatom.export.nnunet_export.export_nnunet` into its own sub-folder
``member_<i>_<configuration>/`` (ONNX per fold + parity report); the spec at the top
describes member 0 and lists the others in ``ensemble``, and the runtime
(:mod:`hccatom.segmentation.ensemble`) averages their probabilities.

The ensemble's postprocessing (``postprocessing.json`` of the chosen ensemble) belongs to the
whole and is stored at the top; members carry none. CLI: ``hccatom export nnunet
--model-folder A B ...`` (the same ``--folds`` for every member).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hccatom.errors import ExportError
from hccatom.export.nnunet_export import (
    REPORT_FILENAME,
    NnunetExportResult,
    export_nnunet,
    stage_spec,
)
from hccatom.segmentation.spec import SegmentationSpec


@dataclass(frozen=True)
class EnsembleMember:
    """One configuration of an ensemble: its model folder, configuration and folds.

    ``configuration`` None: from the folder name; ``folds`` None: all present.
    """

    model_folder: Path
    configuration: str | None = None
    folds: Sequence[int | str] | None = None


def member_dir_name(index: int, configuration: str) -> str:
    """Sub-folder of member ``index``: ``member_<index>_<configuration>``."""
    return f"member_{index}_{configuration}"


def export_nnunet_ensemble(
    members: Sequence[EnsembleMember],
    out_dir: str | Path,
    *,
    checkpoint: str = "checkpoint_final.pth",
    label_map: Mapping[str, int] | None = None,
    seed: int = 0,
    window_before_segmentation: bool | None = None,
    postprocessing: str | Path | None = None,
    training_orientation: str | None = None,
    raw_dataset: str | Path | None = None,
) -> NnunetExportResult:
    """Export every member and write the ensemble's spec and report. Raises ExportError.

    Members must describe the same labels (same dataset); a member may itself be a cascade.
    Keyword arguments as in :func:`~hccatom.export.nnunet_export.export_nnunet`.
    """
    if len(members) < 2:
        raise ExportError("an ensemble needs at least two members (model folders)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs: list[SegmentationSpec] = []
    reports: list[dict[str, Any]] = []
    for i, member in enumerate(members):
        configuration = member.configuration or _configuration_of(member.model_folder)
        sub = member_dir_name(i, configuration)
        result = export_nnunet(
            member.model_folder, out / sub, configuration=configuration, folds=member.folds,
            checkpoint=checkpoint, label_map=label_map, seed=seed + 100 * i,
            window_before_segmentation=window_before_segmentation,
            training_orientation=training_orientation, raw_dataset=raw_dataset,
        )
        specs.append(stage_spec(result, sub))
        reports.append({"member": i, "configuration": configuration, "folder": sub,
                        "report": f"{sub}/{REPORT_FILENAME}",
                        "passed": bool(result.report["passed"])})
    post = None
    if postprocessing is not None:
        from hccatom.export.nnunet_postprocessing import read_postprocessing

        post = read_postprocessing(postprocessing)
    data = json.loads(specs[0].to_json())
    data["ensemble"] = [json.loads(s.to_json()) for s in specs[1:]]
    data["postprocessing"] = None if post is None else json.loads(post.model_dump_json())
    try:
        spec = SegmentationSpec.model_validate(data)
    except ValueError as exc:
        raise ExportError(f"the members do not form an ensemble: {exc}") from exc
    report = {
        "kind": "nnunet-ensemble",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "combination": "mean of the members' softmax probabilities on the input grid, "
        "then argmax (nnUNetv2_ensemble)",
        "members": reports,
        "passed": all(r["passed"] for r in reports),
    }
    spec.save(out)
    (out / REPORT_FILENAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return NnunetExportResult(out_dir=out, spec=spec, report=report)


def _configuration_of(folder: Path) -> str:
    """The configuration named by ``<Trainer>__<Plans>__<configuration>``."""
    parts = Path(folder).name.split("__")
    if len(parts) != 3 or not parts[2]:
        raise ExportError(
            f"cannot tell the configuration of {folder} from its name; use a folder named "
            "<Trainer>__<Plans>__<configuration> or give the configuration"
        )
    return parts[2]
