"""``hccatom demo build``: argparse wiring for :mod:`hccatom.export.demo` (needs the export extra).

Imported lazily by ``hccatom.cli`` only when the subcommand runs.
Also runnable as ``python -m hccatom.export.demo_cli [--out DIR] [--seed N]``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

DEFAULT_OUT = Path("hccatom-demo-bundle")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo build`` arguments to ``parser``."""
    parser.description = (
        "Rebuild the synthetic demo bundle from a seed: train an nnU-Net v2 segmentation and "
        "four small SELECTION models on synthetic data, export them and write a bundle whose "
        "provenance records the seed and the held-out figures. Not the paper's models."
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"bundle folder (or .zip) to write (default ./{DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=None, help="build seed (default 2024)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep intermediate files here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of each of the two training stages, which run "
                        "side by side (default 1); nnU-Net takes twice this once SELECTION is "
                        "done")
    parser.add_argument("--quick", action="store_true",
                        help="a much smaller, faster build for smoke tests (figures will miss "
                        "their targets)")


def run(args: argparse.Namespace) -> int:
    """Build; progress and figures on stderr (``-q`` silences them). Exit code 0 on
    success."""
    from hccatom.bundle.writer import check_bundle_output
    from hccatom.errors import InputError
    from hccatom.export.demo import DemoConfig, build_demo
    from hccatom.path_checks import check_output_folder

    check_bundle_output(args.out, "--out", error=InputError)  # before hours of training
    if args.work is not None:
        check_output_folder(args.work, "--work")
    cfg = DemoConfig()
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    if args.threads is not None:
        cfg = replace(cfg, threads=args.threads)
    if args.quick:
        cfg = replace(cfg, seg_train_patients=4, seg_test_patients=1, seg_epochs=1,
                      seg_iterations=4, sel_train=24, sel_test=16, sel_epochs=1)
    progress = getattr(args, "progress", None)  # the hccatom CLI's stderr progress
    log = progress.note if progress is not None else (
        lambda m: print(m, file=sys.stderr, flush=True))
    build_demo(args.out, cfg, work=args.work, log=log)
    print(f"demo bundle written to {args.out} (signed with the public DEMO key, which proves "
          "nothing; re-sign it with your own key for anything else)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m hccatom.export.demo_cli``."""
    parser = argparse.ArgumentParser(prog="hccatom demo build")
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
