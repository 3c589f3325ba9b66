"""``--calibrate-thresholds``: the median training score per model becomes its new MSS.

As the paper derived its thresholds, each model's median survival score (MSS) is the median
score of the cases labelled ``train`` in that model's cohort. The result is written as a NEW
bundle version in another folder: the model files are copied unchanged (the reader checks
every checksum), the manifest gets the new thresholds, a new version string and the
provenance of the calibration (cohort sha256, n per model, date, source bundle digest). The
source bundle is never modified. The copy is unsigned unless a signing key is given: the
source's signature covered the old thresholds.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hccatom.atom import MODELS
from hccatom.bundle.reader import MANIFEST_NAME, Bundle, load_bundle
from hccatom.bundle.signature import SIGNATURE_NAME
from hccatom.path_checks import check_output_folder
from hccatom.validation.errors import StatisticsInputError
from hccatom.validation.scoring import ScoredCase


@dataclass(frozen=True)
class Calibration:
    """New thresholds and where they came from."""

    thresholds: dict[str, float]
    previous_thresholds: dict[str, float]
    n_train: dict[str, int]
    cohort_sha256: str
    source_bundle: str
    source_bundle_sha256: str
    new_version: str
    date: str

    def provenance_note(self) -> str:
        """One line for the manifest's ``provenance.notes``."""
        return ("thresholds calibrated by `hccatom validate --calibrate-thresholds` on "
                f"{self.date}: median train score per model "
                f"(n {json.dumps(self.n_train)}) of cohort table sha256 {self.cohort_sha256}; "
                f"from bundle {self.source_bundle} (sha256 {self.source_bundle_sha256}); "
                f"previous thresholds {json.dumps(self.previous_thresholds)}")


def median_train_scores(scored: list[ScoredCase], min_cases: int = 2) -> tuple[
        dict[str, float], dict[str, int]]:
    """Median score of the train cases of each model's cohort, and their numbers."""
    thresholds: dict[str, float] = {}
    counts: dict[str, int] = {}
    missing = []
    for m in MODELS:
        s = [c.scores[m] for c in scored if c.case.model == m and c.case.set == "train"]
        counts[m] = len(s)
        if len(s) < min_cases:
            missing.append(f"{m} ({len(s)})")
            continue
        thresholds[m] = float(np.median(s))
    if missing:
        raise StatisticsInputError(
            f"--calibrate-thresholds needs at least {min_cases} scored train cases per model; "
            f"too few for {', '.join(missing)}. Label the training cases set=train."
        )
    for m, v in thresholds.items():
        if not 0.0 < v < 1.0:
            raise StatisticsInputError(
                f"--calibrate-thresholds: the median train score of {m} is {v}; a threshold "
                "must lie strictly between 0 and 1."
            )
    return thresholds, counts


def check_calibration_out(out: str | Path, what: str) -> Path:
    """``out`` as a Path when the calibrated bundle can be written there: a new folder under
    a writable one (:func:`hccatom.path_checks.check_output_folder`); an existing path is
    refused (the source and earlier calibrations are never overwritten). Checked before the
    cases are scored, and again when writing."""
    p = check_output_folder(out, what, error=StatisticsInputError)
    if os.path.lexists(p):
        raise StatisticsInputError(f"{p} exists; choose a new folder for the calibrated bundle.")
    return p


def write_calibrated_bundle(bundle: Bundle, scored: list[ScoredCase], cohort_sha256: str,
                            out: Path, *, version_suffix: str = "site-calibrated",
                            sign_key: Path | None = None) -> Calibration:
    """Copy ``bundle`` to ``out`` with the median train scores as thresholds; verify it."""
    thresholds, counts = median_train_scores(scored)
    out = check_calibration_out(out, "calibrated bundle folder")
    if out.resolve() == bundle.root.resolve() or bundle.root.resolve() in out.resolve().parents:
        raise StatisticsInputError("the calibrated bundle must be written outside the source.")
    m = bundle.manifest
    now = datetime.now(timezone.utc)
    cal = Calibration(
        thresholds=thresholds, previous_thresholds=dict(m.thresholds), n_train=counts,
        cohort_sha256=cohort_sha256, source_bundle=f"{m.name} {m.version}",
        source_bundle_sha256=bundle.sha256, new_version=f"{m.version}+{version_suffix}",
        date=now.date().isoformat(),
    )
    notes = (m.provenance.notes + "\n" if m.provenance.notes else "") + cal.provenance_note()
    new = m.model_copy(update={
        "thresholds": thresholds, "version": cal.new_version, "created_at": now,
        "provenance": m.provenance.model_copy(update={"notes": notes}),
    })
    root = bundle.root.resolve()

    def skip_root_manifest(folder: str, names: list[str]) -> set[str]:
        at_root = Path(folder).resolve() == root
        return {n for n in names if at_root and n in (MANIFEST_NAME, SIGNATURE_NAME)}

    shutil.copytree(bundle.root, out, ignore=skip_root_manifest)
    (out / MANIFEST_NAME).write_text(new.model_dump_json(by_alias=True, indent=2) + "\n",
                                     encoding="utf-8")
    if sign_key is not None:
        from hccatom.bundle.signer import sign_bundle

        sign_bundle(out, sign_key)
    load_bundle(out).close()  # checksums and manifest verify
    return cal


__all__ = ["Calibration", "median_train_scores", "write_calibrated_bundle"]
