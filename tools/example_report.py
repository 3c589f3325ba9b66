"""Regenerate the example report of the demo patient shown in docs/explanations.md.

Builds, in a temporary folder, the committed demo bundle plus explain graphs
(:func:`hccatom.export.explain_bundle.add_explain_to_bundle`; needs onnx) and reference
values (medians / most frequent values of the demo's synthetic training cohort), signed with
the public demo key, runs the demo patient (seed 0) with ``explain=True`` and writes::

    python tools/example_report.py      # -> docs/images/example_report.{pdf,png}

The committed demo bundle itself is not changed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import hccatom
from hccatom.bundle.explain_spec import reference_values
from hccatom.bundle.signature import DEMO_PRIVATE_KEY_PATH
from hccatom.demo import demo_bundle_path, demo_case
from hccatom.export.demo import DemoConfig, training_cohort
from hccatom.export.explain_bundle import add_explain_to_bundle

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> int:
    """Write docs/images/example_report.pdf and .png."""
    cfg = DemoConfig()
    with tempfile.TemporaryDirectory(prefix="hccatom-example-report-") as tmp:
        bundle = add_explain_to_bundle(
            demo_bundle_path(), Path(tmp) / "bundle",
            clinical_reference=reference_values(training_cohort(cfg)),
            reference_source=f"synthetic training cohorts, seed {cfg.seed}",
            sign_key=DEMO_PRIVATE_KEY_PATH)
        ct, clinical, _ = demo_case(0)
        with hccatom.Predictor.from_bundle(bundle, device="cpu") as predictor:
            rec = predictor.recommend(ct, clinical, explain=True)
        OUT.mkdir(parents=True, exist_ok=True)
        for suffix in (".pdf", ".png"):
            print(rec.report(OUT / f"example_report{suffix}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
