"""``hccatom demo``: the whole chain on a synthetic patient with the packaged demo bundle.

No download, no PyTorch, no patient data: a seeded synthetic patient (two contrast phases
from :mod:`hccatom.synthetic` and clinical variables drawn from the paper's Table 1
marginals) goes through ``Predictor.from_bundle(<demo bundle>).recommend(...)``; the
summary is printed and the recommendation JSON written.

The demo bundle's models were trained on synthetic data by ``hccatom demo build``. They are
NOT the paper's models; the output shows what the SDK does, never anything about patients.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hccatom.errors import BundleNotFoundError
from hccatom.synthetic import COHORTS, ScanSpec, draw_cohort, generate_patient

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
    return replace(ScanSpec.demo(), max_shift_mm=4.0)


def demo_case(seed: int) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """A synthetic patient: ``({'arterial': Volume, 'portal': Volume}, clinical, truth)``.

    The cohort the patient is drawn from rotates with the seed; ``truth`` holds the latent
    features and the known outcome probability (the demo prints them for transparency).
    """
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
                        help="where to write the recommendation JSON "
                        "(default: hccatom-demo-seed<N>.json)")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="a bundle to use instead of the packaged demo bundle")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "tensorrt"),
                        help="inference device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per engine")


def run(args: argparse.Namespace) -> int:
    """Generate, recommend, print, write JSON. Errors propagate as typed HccatomErrors."""
    from hccatom.predictor import Predictor

    t0 = time.perf_counter()
    print(BANNER)
    bundle = args.bundle or demo_bundle_path()
    ct, clinical, truth = demo_case(args.seed)
    f = truth["latent_features"]
    print(f"Synthetic patient seed {args.seed} (drawn like the {truth['drawn_from_cohort']} "
          f"cohort): {f.n_tumours} tumour(s), largest {f.max_diameter_mm:.0f} mm, "
          f"vascular invasion {'yes' if f.vascular_invasion else 'no'}, "
          f"BCLC {clinical.bclc_stage.value}, AFP {clinical.afp_ng_per_ml:.0f} ng/mL")
    with Predictor.from_bundle(bundle, device=args.device, threads=args.threads) as predictor:
        rec = predictor.recommend(ct, clinical)
    print(rec.summary())
    out = args.json or Path(f"hccatom-demo-seed{args.seed}.json")
    rec.to_json(out)
    print(f"Recommendation JSON written to {out} ({time.perf_counter() - t0:.1f} s in all)")
    return 0


__all__ = ["BANNER", "configure_parser", "demo_bundle_path", "demo_case", "run"]
