"""``hccatom export nnunet``: argparse wiring for ``hccatom.export.nnunet_export``.

Imported lazily by ``hccatom.cli`` only when the subcommand runs (it needs torch).
Also runnable as ``python -m hccatom.export.nnunet_cli ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hccatom.errors import ExportError, HccatomError, ParityError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``export nnunet`` arguments to ``parser``."""
    parser.description = (
        "Export an nnU-Net v2 model folder to ONNX (one file per fold), check ONNX Runtime "
        "against PyTorch per fold, and write the segmentation spec for bundles."
    )
    parser.add_argument(
        "--model-folder", type=Path, required=True,
        help="<nnUNet_results>/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>",
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
        "--precision", choices=("fp32", "fp16", "both"), default="fp32",
        help="fp16/both: also write an fp16 graph per fold (fp32 inputs/outputs) beside the "
        "fp32 one, kept only if its segmentations match fp32 (label agreement >= 99.9 %%, "
        "Dice >= 0.99); GPUs then run it by default (default: fp32 only)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the export; print a summary. Exit codes: 0 ok, 1 parity failed, 2 bad input."""
    from hccatom.export.nnunet_export import export_nnunet, parse_label_map

    try:
        result = export_nnunet(
            args.model_folder,
            args.out,
            configuration=args.configuration,
            folds=args.folds,
            checkpoint=args.checkpoint,
            label_map=parse_label_map(args.label_map),
            seed=args.seed,
            precision=args.precision,
        )
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ExportError, HccatomError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = result.spec
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


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="hccatom export nnunet")
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
