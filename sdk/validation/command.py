"""``hccatom validate``: a site's cohort through a bundle, evaluated as the paper did.

    hccatom validate COHORT.csv --bundle B --out DIR [--workers N]
                     [--calibrate-thresholds NEW_BUNDLE_DIR [--sign-key PRIVATE.pem]]
    hccatom validate --demo [--out DIR] [--demo-per-cohort N]

Needs the ``validate`` extra (lifelines, matplotlib). Progress and ETA go to stderr; the
output folder's layout is in :mod:`hccatom.validation.report`. Rerunning with the same
``--out`` and bundle reuses every case already scored.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

from hccatom.errors import ExtraMissingError, InputError
from hccatom.path_checks import check_input_file, check_output_folder

VALIDATE_INSTALL = 'pip install "hccatom[validate]"'
NEEDS = ("lifelines", "matplotlib")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hccatom validate``."""
    parser.description = ("Score a cohort table with a bundle and reproduce the paper's "
                          "evaluation (Table 2, Fig. 3c, Fig. 4, Table 3) on it.")
    parser.add_argument("cohort", nargs="?", type=Path, default=None,
                        help="cohort table (.csv, or .parquet with pyarrow)")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="bundle directory or .zip (default with --demo: the demo bundle)")
    parser.add_argument("--out", type=Path, default=Path("hccatom-validation"),
                        help="output folder (tables, plots, report.html, per-case cache)")
    parser.add_argument("--compare-bundle", type=Path, default=None, metavar="B2",
                        help="also score with a second bundle and DeLong-test each model's "
                        "AUC against it (cases need CT; cached under OUT/compare/cases)")
    parser.add_argument("--workers", type=int, default=1, help="cases scored in parallel")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "tensorrt"))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per engine")
    parser.add_argument("--calibrate-thresholds", type=Path, default=None, metavar="NEW_BUNDLE",
                        help="write a new bundle version with the median train score per model "
                        "as its MSS to this folder (the source bundle is never modified)")
    parser.add_argument("--sign-key", type=Path, default=None, metavar="PRIVATE.pem",
                        help="sign the calibrated bundle with this Ed25519 key")
    parser.add_argument("--no-plots", action="store_true", help="tables and HTML only")
    parser.add_argument("--demo", action="store_true",
                        help="run on a synthetic cohort with the demo bundle")
    parser.add_argument("--demo-per-cohort", type=int, default=4, metavar="N",
                        help="synthetic patients per treatment cohort (default 4)")


def _check_extra() -> None:
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise ExtraMissingError(
            f"`hccatom validate` needs the validate extra ({', '.join(missing)} not installed); "
            f"nothing was done. Install it with: {VALIDATE_INSTALL}"
        )


def _live_line(progress: Any) -> Any:
    """The terminal's in-place status line for scoring progress; None off a terminal."""
    return progress.live if getattr(progress, "tty", False) else None


def _with_comparison(scoring: Any, args: argparse.Namespace, out: Path, progress: Any) -> Any:
    """Scores of a second bundle as each case's ``compare_<MODEL>`` (DeLong test)."""
    from dataclasses import replace

    from hccatom.predictor import Predictor
    from hccatom.validation.scoring import score_cohort

    with progress.stage("load_compare_bundle"):
        other = Predictor.from_bundle(args.compare_bundle, device=args.device,
                                      threads=args.threads)
    with other, progress.stage("score_cases_compare_bundle"):
        cases = [replace(s.case, scores=None) for s in scoring.scored
                 if s.case.arterial is not None or s.case.study is not None]
        second = score_cohort(cases, other, out / "compare", workers=args.workers,
                              note=progress.note, live=_live_line(progress))
    by_line = {s.case.line: s.scores for s in second.scored}
    scored = [replace(s, case=replace(s.case, compare={**s.case.compare, **by_line[s.case.line]}))
              if s.case.line in by_line else s for s in scoring.scored]
    return replace(scoring, scored=scored,
                   failed=scoring.failed + [replace(f, error_type=f"compare bundle: "
                                                    f"{f.error_type}") for f in second.failed])


def run(args: argparse.Namespace) -> int:
    """Read, score (cached), analyse, write; optionally calibrate. Returns the exit code."""
    _check_extra()
    from hccatom.predictor import Predictor
    from hccatom.validation.analyses import analyse
    from hccatom.validation.calibrate import check_calibration_out, write_calibrated_bundle
    from hccatom.validation.cohort import read_cohort
    from hccatom.validation.report import write_outputs
    from hccatom.validation.scoring import score_cohort

    t0 = time.perf_counter()
    progress: Any = args.progress
    out: Path = check_output_folder(args.out, "--out")
    if args.calibrate_thresholds is not None:  # before the scoring, not after it
        check_calibration_out(args.calibrate_thresholds, "--calibrate-thresholds")
    if args.sign_key is not None:
        check_input_file(args.sign_key, "--sign-key")
    out.mkdir(parents=True, exist_ok=True)
    bundle_path = args.bundle
    cohort_path = args.cohort
    if args.demo:
        from hccatom.demo import BANNER, demo_bundle_path
        from hccatom.validation.demo_cohort import write_demo_cohort

        print(BANNER)
        bundle_path = bundle_path or demo_bundle_path()
        if cohort_path is None:
            cohort_path = out / "demo_cohort" / "cohort.csv"
            if not cohort_path.is_file():
                with progress.stage("synthetic_cohort"):
                    write_demo_cohort(cohort_path.parent, args.demo_per_cohort,
                                      note=progress.note)
    if cohort_path is None:
        raise InputError("give a cohort table (COHORT.csv) or --demo.")
    if bundle_path is None:
        raise InputError("give --bundle B: its models score the cases and its MSS are the "
                           "thresholds.")
    with progress.stage("read_cohort"):
        cohort = read_cohort(cohort_path)
    with progress.stage("load_bundle"):
        predictor = Predictor.from_bundle(bundle_path, device=args.device, threads=args.threads)
    with predictor:
        with progress.stage("score_cases"):
            scoring = score_cohort(cohort.cases, predictor, out, workers=args.workers,
                                   note=progress.note, live=_live_line(progress))
        if args.compare_bundle is not None:
            scoring = _with_comparison(scoring, args, out, progress)
        thresholds = dict(predictor.bundle.manifest.thresholds)
        with progress.stage("statistics"):
            results = analyse(scoring.scored, thresholds)
        calibration = None
        if args.calibrate_thresholds is not None:
            with progress.stage("calibrate_thresholds"):
                calibration = write_calibrated_bundle(
                    predictor.bundle, scoring.scored, cohort.sha256, args.calibrate_thresholds,
                    sign_key=args.sign_key)
        m = predictor.bundle.manifest
        meta = {
            "bundle": f"{m.name} {m.version} (sha256 {predictor.bundle.sha256[:16]}...)",
            "bundle trained on synthetic data": m.synthetic,
            "cohort table": f"{Path(cohort_path).name} (sha256 {cohort.sha256[:16]}...)",
            "cases": len(cohort.cases), "scored now": scoring.n_new,
            "from cache": scoring.n_cached, "failed": len(scoring.failed),
            "thresholds (MSS)": thresholds,
        }
        if args.demo:
            meta["demo"] = ("synthetic cohort: equal numbers with and without the outcome "
                            "picked per cohort; numbers mean nothing clinically")
        with progress.stage("report"):
            report = write_outputs(results, scoring, out, title="hccatom site validation",
                                   meta=meta, calibration=calibration,
                                   make_plots=not args.no_plots)
    progress.close()
    print(f"{len(scoring.scored)} of {len(cohort.cases)} cases scored "
          f"({scoring.n_cached} from cache), {len(scoring.failed)} failed")
    for f in scoring.failed:
        print(f"  failed: line {f.case.line}: {f.error_type}: {f.message}")
    for row in results.table2:
        print(f"  {row['model']:<4} {row['set']:<9} n {row['n']:>4}  AUC {row['auc']:.3f} "
              f"({row['auc_ci_low']:.3f}-{row['auc_ci_high']:.3f})")
    if calibration is not None:
        print(f"calibrated bundle written to {args.calibrate_thresholds} "
              f"(version {calibration.new_version})")
    print(f"report: {report}  ({time.perf_counter() - t0:.1f} s)")
    sys.stdout.flush()
    return 1 if scoring.failed and not scoring.scored else 0


__all__ = ["configure_parser", "run"]
