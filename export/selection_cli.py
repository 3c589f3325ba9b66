"""``hccatom export selection``: checkpoint(s) -> ONNX with a parity report.

Imported lazily by the CLI only when the subcommand runs (it needs torch). Single model::

    hccatom export selection --checkpoint FILE --cohort TACE --size paper --out DIR

All four cohort models as one graph (``scores`` (B, 4) in the order TACE, HAIC, TC, HC)::

    hccatom export selection --fused TACE=a.pth HAIC=b.pth TC=c.pth HC=d.pth --out DIR

Exit codes: 0 exported, 2 bad input (arguments, checkpoint), 1 export or parity failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hccatom.cli_args import cohort_paths
from hccatom.errors import CheckpointError, ExportError, ParityError
from hccatom.path_checks import check_output_folder

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``export selection`` arguments to ``parser``."""
    from hccatom.export.selection_sizes import FUSIONS, SIZES

    cohorts = ("TACE", "HAIC", "TC", "HC")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, metavar="FILE",
                     help="one trained SELECTION checkpoint (.pth/.pt/.safetensors)")
    src.add_argument("--fused", nargs=4, metavar="COHORT=FILE",
                     help="four checkpoints, one per cohort (TACE=... HAIC=... TC=... HC=...), "
                          "exported as one graph returning scores (B, 4)")
    parser.add_argument("--cohort", type=str.upper, choices=cohorts,
                        help="which model the checkpoint is (required with --checkpoint)")
    parser.add_argument("--size", choices=sorted(SIZES), default="paper",
                        help="network size the checkpoint was trained with (default: paper)")
    parser.add_argument("--fusion", choices=FUSIONS, default="paper",
                        help="'paper' (default): clinical tokens join after the multimodal "
                             "blocks, as in the paper/IRENE; 'image_only': the public "
                             "training code's behaviour (clinical inputs have no effect)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder for the .onnx and its .parity.json report")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17, default 18)")
    parser.add_argument("--tolerance", type=float, default=1e-5,
                        help="max |score difference| ONNX Runtime vs PyTorch (default 1e-5)")
    parser.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo",
                        help="PyTorch ONNX exporter (default: dynamo, torch.export based)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "both"), default="fp32",
                        help="fp16/both: also write an fp16 graph (fp32 inputs/outputs) beside "
                             "the fp32 one, kept only if its scores are within 1e-3 of fp32's "
                             "(default: fp32 only)")
    parser.add_argument("--explain", action="store_true",
                        help="also write per model an explain graph "
                             "(selection_<cohort>.explain.onnx: attention maps next to the "
                             "score) for Predictor.explain and reports; fast graphs unchanged")


def _parse_fused(items: list[str]) -> dict[str, Path]:
    out = cohort_paths(items, "--fused", "COHORT=FILE")
    if sorted(out) != sorted(("TACE", "HAIC", "TC", "HC")):
        raise ValueError(f"--fused needs TACE, HAIC, TC and HC once each, got {sorted(out)}")
    return out


def run(args: argparse.Namespace) -> int:
    """Run the export; print where the model and report went. Returns an exit code."""
    from hccatom.export.selection_onnx import (
        export_fused_checkpoints,
        export_selection_checkpoint,
    )

    common = {"size": args.size, "fusion": args.fusion, "opset": args.opset,
              "tolerance": args.tolerance, "exporter": args.exporter,
              "precision": args.precision, "explain": args.explain}
    try:
        check_output_folder(args.out, "--out")  # before the export: a bad --out fails now
        if args.fused:
            result = export_fused_checkpoints(_parse_fused(args.fused), args.out, **common)
        else:
            if not args.cohort:
                raise ValueError("--cohort is required with --checkpoint")
            result = export_selection_checkpoint(args.checkpoint, args.cohort, args.out,
                                                 **common)
    except (ValueError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ParityError as exc:
        print(f"parity failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    parity = result.report["parity"]
    print(f"wrote {result.model_path} (fusion {result.report['fusion']}, size {args.size})")
    print(f"parity {parity['compared_output']}: max |diff| {parity['max_abs_diff']:.2e} "
          f"<= {parity['tolerance']:.0e}; report {result.report_path}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m hccatom.export.selection_cli``) for build machines."""
    parser = argparse.ArgumentParser(prog="hccatom export selection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
