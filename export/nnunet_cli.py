"""``hccatom export nnunet``: argparse wiring for ``hccatom.export.nnunet_export``.

Imported lazily by ``hccatom.cli`` only when the subcommand runs (it needs torch).
Also runnable as ``python -m hccatom.export.nnunet_cli ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hccatom.errors import ExportError, HccatomError, ParityError
from hccatom.path_checks import check_output_folder


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``export nnunet`` arguments to ``parser``."""
    parser.description = (
        "Export an nnU-Net v2 model folder to ONNX (one file per fold), check ONNX Runtime "
        "against PyTorch per fold, and write the segmentation spec for bundles."
    )
    parser.add_argument(
        "--model-folder", type=Path, required=True, nargs="+",
        help="<nnUNet_results>/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>; several "
        "folders: an ensemble of their configurations (nnUNetv2_ensemble: probabilities "
        "averaged), each exported into member_<i>_<configuration>/ with the same --folds",
    )
    parser.add_argument(
        "--previous-stage-folder", type=Path, default=None, metavar="DIR",
        help="3d_cascade_fullres only: the 3d_lowres model folder (default: the sibling "
        "<Trainer>__<Plans>__3d_lowres); both stages go into one export",
    )
    parser.add_argument(
        "--configuration", default=None,
        help="nnU-Net configuration (default: from the folder name, else 3d_fullres)",
    )
    parser.add_argument(
        "--folds", nargs="+", default=None, help="folds to export (default: all present)"
    )
    parser.add_argument("--checkpoint", default="checkpoint_final.pth")
    parser.add_argument(
        "--label-map", default=None,
        help="dataset.json label values of liver and tumour, e.g. liver=1,tumour=2 "
        "(default: found by label name)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parity patches")
    parser.add_argument(
        "--postprocessing", type=Path, default=None, metavar="FILE",
        help="postprocessing.json (or .pkl) from nnUNetv2_find_best_configuration: stored in "
        "the spec as data and applied at runtime (default: none, as nnUNetv2_predict)",
    )
    parser.add_argument(
        "--training-orientation", default=None, metavar="CODE",
        help="orientation of the arrays the model was trained on, as SimpleITK names it for "
        "the x, y, z index axes (e.g. LPS; RAS for NIfTI stored RAS+). Required unless "
        "--raw-dataset or $nnUNet_raw/<dataset> holds the training images to infer it from",
    )
    parser.add_argument(
        "--raw-dataset", type=Path, default=None, metavar="DIR",
        help="nnU-Net raw dataset folder (dataset.json + imagesTr/) to infer the training "
        "orientation from the image headers (default: $nnUNet_raw/<dataset> if present)",
    )
    parser.add_argument(
        "--window-before-segmentation", action=argparse.BooleanOptionalAction, required=True,
        help="required: whether this model was trained on CT clipped to the HU window "
        "(--window-before-segmentation; the paper windows to [-50, 350] HU before "
        "segmentation) or on raw HU (--no-window-before-segmentation; nnU-Net's own CT "
        "normalisation, the usual case). Recorded in the spec and used by `bundle build`.",
    )
    parser.add_argument(
        "--precision", choices=("fp32", "fp16", "both"), default="fp32",
        help="fp16/both: also write an fp16 graph per fold (fp32 inputs/outputs) beside the "
        "fp32 one, kept only if its segmentations match fp32 (label agreement >= 99.9 %%, "
        "Dice >= 0.99); GPUs then run it by default (default: fp32 only)",
    )


def _dataset_name(plans_file: Path) -> str | None:
    """plans.json's dataset name, or None (export_nnunet reports a bad plans.json)."""
    try:
        name = json.loads(plans_file.read_text(encoding="utf-8")).get("dataset_name")
    except (OSError, ValueError, AttributeError):
        return None
    return str(name) if name else None


def run(args: argparse.Namespace) -> int:
    """Run the export; print a summary. Exit codes: 0 ok, 1 parity failed, 2 bad input."""
    from hccatom.export.nnunet_export import export_nnunet, parse_label_map
    from hccatom.export.nnunet_orientation import resolve_training_orientation

    folders: list[Path] = list(args.model_folder)
    try:
        check_output_folder(args.out, "--out")  # before the export: a bad --out fails now
        plans_file = folders[0] / "plans.json"
        dataset_name = _dataset_name(plans_file)
        orientation = resolve_training_orientation(
            args.training_orientation, args.raw_dataset, dataset_name
        )
        if orientation is None and plans_file.is_file():
            print("error: the orientation the model was trained on is unknown: pass "
                  "--training-orientation (e.g. LPS, or RAS for NIfTI stored RAS+) or "
                  "--raw-dataset DIR to infer it from the training images", file=sys.stderr)
            return 2
        if len(folders) > 1:
            return _run_ensemble(args, folders, orientation)
        result = export_nnunet(
            folders[0],
            args.out,
            configuration=args.configuration,
            folds=args.folds,
            checkpoint=args.checkpoint,
            label_map=parse_label_map(args.label_map),
            seed=args.seed,
            window_before_segmentation=args.window_before_segmentation,
            postprocessing=args.postprocessing,
            training_orientation=orientation,
            raw_dataset=args.raw_dataset,
            precision=args.precision,
            previous_stage_folder=args.previous_stage_folder,
        )
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ExportError, HccatomError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = result.spec
    if spec.previous_stage is not None:
        prev = spec.previous_stage
        print(f"exported cascade: {prev.configuration} folds {[f.fold for f in prev.folds]} "
              f"-> {spec.configuration} ({spec.num_input_channels} input channels)")
    print(
        f"exported {spec.configuration} folds {[f.fold for f in spec.folds]} to "
        f"{result.out_dir} (patch {spec.patch_size}, spacing {spec.target_spacing_mm} mm, "
        f"mirror axes {spec.mirror_axes})"
    )
    if any(f.onnx_fp16 for f in spec.folds):
        print(f"  fp16 graphs kept: {[f.onnx_fp16 for f in spec.folds]} (fp16_parity_report.json)")
    for r in result.report["folds"]:
        print(f"  fold {r['fold']}: relative max logit diff {r['relative_max_diff']:.2e} "
              f"(<= {result.report['tolerance_relative_max_diff']:.0e})")
    return 0


def _run_ensemble(args: argparse.Namespace, folders: list[Path], orientation: str | None
                  ) -> int:
    """``--model-folder A B ...``: export an ensemble of configurations."""
    from hccatom.export.nnunet_ensemble import EnsembleMember, export_nnunet_ensemble
    from hccatom.export.nnunet_export import parse_label_map

    if args.configuration is not None or args.previous_stage_folder is not None:
        print("error: with several --model-folder (an ensemble) each configuration comes from "
              "its folder name; drop --configuration/--previous-stage-folder", file=sys.stderr)
        return 2
    if args.precision != "fp32":
        print("error: fp16 graphs are not supported for ensembles yet; use --precision fp32",
              file=sys.stderr)
        return 2
    result = export_nnunet_ensemble(
        [EnsembleMember(f, folds=args.folds) for f in folders], args.out,
        checkpoint=args.checkpoint, label_map=parse_label_map(args.label_map), seed=args.seed,
        window_before_segmentation=args.window_before_segmentation,
        postprocessing=args.postprocessing, training_orientation=orientation,
        raw_dataset=args.raw_dataset,
    )
    for m in result.report["members"]:
        print(f"  member {m['member']}: {m['configuration']} -> {result.out_dir / m['folder']}")
    print(f"exported an ensemble of {len(folders)} configurations to {result.out_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="hccatom export nnunet")
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
