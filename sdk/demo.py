"""``hccatom demo``: the whole chain on a synthetic patient with the packaged demo bundle.

No download, no PyTorch, no patient data: a seeded synthetic patient (two contrast phases
from :mod:`hccatom.synthetic` and clinical variables drawn from the paper's Table 1
marginals) goes through ``Predictor.from_bundle(<demo bundle>).recommend(...)``; the
summary is printed, and the recommendation JSON written where ``--json`` says (only then).
Progress (stage names, tile counts) goes to stderr.

The demo bundle's models were trained on synthetic data by ``hccatom demo build``. They are
NOT the paper's models; the output shows what the SDK does, never anything about patients.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hccatom.errors import BundleNotFoundError

if TYPE_CHECKING:
    from hccatom.synthetic import ScanSpec

DEMO_BUNDLE_DIR = Path(__file__).resolve().parent / "data" / "demo_bundle"
BANNER = (
    "SYNTHETIC DEMO - research use only. The patient is a synthetic phantom and the models "
    "were trained on synthetic data by `hccatom demo build`; they are NOT the SELECTION "
    "paper's models and say nothing about real patients."
)


def demo_bundle_path() -> Path:
    """The demo bundle shipped inside the package (``hccatom/data/demo_bundle``)."""
    if not (DEMO_BUNDLE_DIR / "manifest.json").is_file():
        raise BundleNotFoundError(
            f"The packaged demo bundle is missing ({DEMO_BUNDLE_DIR}); reinstall hccatom, or "
            "rebuild it with `hccatom demo build --out DIR` (export extra) and pass "
            "--bundle DIR."
        )
    return DEMO_BUNDLE_DIR


def demo_scan() -> ScanSpec:
    """The demo's acquisition: small and fast, with a small patient shift between phases."""
    from hccatom.synthetic import ScanSpec  # lazy: `demo --help` and the bundle load start first

    return replace(ScanSpec.demo(), max_shift_mm=4.0)


def demo_case(seed: int) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """A synthetic patient: ``({'arterial': Volume, 'portal': Volume}, clinical, truth)``.

    The cohort the patient is drawn from rotates with the seed; ``truth`` holds the latent
    features and the known outcome probability (the demo prints them for transparency).
    """
    from hccatom.synthetic import COHORTS, draw_cohort, generate_patient

    cohort = COHORTS[seed % len(COHORTS)]
    member = draw_cohort(cohort, 1, seed=seed).patients[0]
    study = generate_patient(member.seed, demo_scan(), member.features)
    truth = {
        "drawn_from_cohort": cohort,
        "latent_features": member.features,
        "true_outcome_probability": member.probability,
        "phase_shift_mm": study.shift_mm,
    }
    return {"arterial": study.arterial, "portal": study.portal}, member.clinical, truth


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hccatom demo``."""
    parser.description = "Run the full chain on a synthetic patient with the demo bundle. " + BANNER
    parser.add_argument("--seed", type=int, default=0, help="synthetic patient seed (default 0)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write the recommendation JSON to OUT ('-': JSON alone on "
                        "stdout); nothing is written unless asked")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="a bundle to use instead of the packaged demo bundle")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "tensorrt"),
                        help="inference device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per engine")


def _null_progress() -> Any:
    from hccatom.cli_progress import StderrProgress

    return StderrProgress(sys.stderr, "quiet")


def run(args: argparse.Namespace) -> int:
    """Generate, recommend, print (JSON only with ``--json``). Errors propagate as typed
    HccatomErrors."""
    from hccatom.path_checks import check_output_file
    from hccatom.predictor import Predictor

    if args.json is not None and str(args.json) != "-":
        check_output_file(args.json, "--json")  # before the work, not after it
    t0 = time.perf_counter()
    progress = getattr(args, "progress", None) or _null_progress()
    json_only = args.json is not None and str(args.json) == "-"
    say = (lambda *a: None) if json_only else print
    say(BANNER)
    bundle = args.bundle or demo_bundle_path()
    # The bundle loads (checksums, engines) while the phantom is generated.
    with progress.stage("load_bundle"), ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="hccatom-load"
    ) as pool:
        loading = pool.submit(Predictor.from_bundle, bundle, device=args.device,
                              threads=args.threads)
        with progress.stage("synthetic_patient"):
            ct, clinical, truth = demo_case(args.seed)
        predictor = loading.result()
    f = truth["latent_features"]
    say(f"Synthetic patient seed {args.seed} (drawn like the {truth['drawn_from_cohort']} "
        f"cohort): {f.n_tumours} tumour(s), largest {f.max_diameter_mm:.0f} mm, "
        f"vascular invasion {'yes' if f.vascular_invasion else 'no'}, "
        f"BCLC {clinical.bclc_stage.value}, AFP {clinical.afp_ng_per_ml:.0f} ng/mL")
    with predictor:
        rec = predictor.recommend(ct, clinical, progress=progress)
    progress.close()
    if json_only:
        sys.stdout.write(rec.to_json() + "\n")
        return 0
    print(rec.summary())
    if args.json is not None:
        rec.to_json(args.json)
        print(f"Recommendation JSON written to {args.json}")
    print(f"({time.perf_counter() - t0:.1f} s in all)")
    return 0


__all__ = ["BANNER", "configure_parser", "demo_bundle_path", "demo_case", "run"]
