"""A synthetic cohort table for ``hccatom validate --demo`` (no patient data anywhere).

Patients are drawn per treatment cohort from :mod:`hccatom.synthetic` (the paper's Table 1
marginals and a known outcome model). For each cohort the demo picks, from a larger seeded
draw, equal numbers of patients with and without the outcome (so that AUCs can be computed
on a handful of cases), labels half of them ``train`` and half ``external``, and writes
their two phases as NIfTI files plus one ``cohort.csv``. Survival times are synthetic too:
exponential with a hazard that falls with the patient's known outcome probability, and
consistent with the drawn 1-year outcome of the TC/HC cohorts.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hccatom.ct_io import write_volume
from hccatom.validation.cohort import CLINICAL_FIELDS

TREATMENT_OF = {"TACE": "TACE", "HAIC": "HAIC", "TC": "TACE + systemic",
                "HC": "HAIC + systemic"}


def _survival(rng: np.random.Generator, p: float, outcome: bool,
              one_year_endpoint: bool) -> tuple[float, int]:
    """(months, event) with hazard ~ (1 - p); TC/HC: alive at 12 months iff outcome."""
    rate = 0.02 + 0.12 * (1.0 - p)
    t = float(rng.exponential(1.0 / rate))
    if one_year_endpoint:
        t = 12.0 + t if outcome else min(t, 11.5)
        if not outcome:
            return round(max(t, 0.5), 1), 1
    follow_up = float(rng.uniform(14.0, 36.0))  # administrative censoring
    return (round(t, 1), 1) if t <= follow_up else (round(follow_up, 1), 0)


def write_demo_cohort(folder: Path, per_cohort: int, seed: int = 0,
                      note: Callable[[str], None] | None = None) -> Path:
    """Write ``per_cohort`` synthetic patients per cohort; returns the cohort.csv path."""
    from hccatom.demo import demo_scan
    from hccatom.synthetic import COHORTS, draw_cohort, generate_patient

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    say = note or (lambda _t: None)
    for cohort in COHORTS:
        draw = draw_cohort(cohort, max(40, 8 * per_cohort), seed=seed)
        yes = [p for p in draw.patients if p.outcome]
        no = [p for p in draw.patients if not p.outcome]
        pairs = [p for pair in zip(yes, no, strict=False) for p in pair]  # y0 n0 y1 n1 ...
        chosen = pairs[:per_cohort]
        for k, member in enumerate(chosen):
            case_id = f"demo-{cohort}-{k:03d}"
            study = generate_patient(member.seed, demo_scan(), member.features)
            art = write_volume(study.arterial, folder / "ct" / f"{case_id}_arterial.nii.gz")
            por = write_volume(study.portal, folder / "ct" / f"{case_id}_portal.nii.gz")
            months, event = _survival(rng, member.probability, member.outcome,
                                      cohort in ("TC", "HC"))
            clin = member.clinical.model_dump(mode="json")
            rows.append({
                "case_id": case_id, "treatment": TREATMENT_OF[cohort],
                "arterial": art.relative_to(folder).as_posix(),
                "portal": por.relative_to(folder).as_posix(),
                "response": int(member.outcome) if cohort in ("TACE", "HAIC") else "",
                "os_months": months, "os_event": event,
                "set": "train" if (k // 2) % 2 == 0 else "external",
                **{f: str(clin[f]).lower() if isinstance(clin[f], bool) else clin[f]
                   for f in CLINICAL_FIELDS},
            })
            say(f"synthetic patient {len(rows)}/{per_cohort * len(COHORTS)} written")
    path = folder / "cohort.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


__all__ = ["write_demo_cohort"]
