"""The cohort table: one row per patient, read with a typed schema.

Columns (CSV with a header; Parquet when pyarrow is installed):

* ``case_id`` (required, unique; a site's pseudonym, never printed in logs).
* ``arterial``, ``portal``: CT paths (relative to the table's folder or absolute), **or**
  ``study``: a DICOM study folder (needs the dicom extra), with optional
  ``arterial_series_uid`` / ``portal_series_uid`` to choose its series.
* the 20 clinical variables as columns named like :class:`~hccatom.clinical.ClinicalVariables`
  fields, **or** ``clinical_json``: a path to the case's JSON.
* ``treatment`` (required): ``TACE``, ``HAIC``, ``TACE + systemic`` or ``HAIC + systemic``
  (``TC`` / ``HC`` accepted).
* ``response`` (0/1, objective response; TACE/HAIC cohorts), ``os_months`` and ``os_event``
  (0 censored, 1 death): may be empty; the analysis that needs them skips the case.
* ``set``: ``train``, ``internal`` or ``external`` (optional).
* ``score_TACE``, ``score_HAIC``, ``score_TC``, ``score_HC``: precomputed scores (all four
  or none); such a case needs no CT.
* ``compare_<MODEL>``: another model's score for the same case (DeLong comparison).

Every problem of every row is collected and raised at once as
:class:`~hccatom.validation.errors.CohortInputError`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hccatom.atom import MODELS
from hccatom.clinical import ClinicalVariables
from hccatom.errors import ClinicalInputError
from hccatom.path_checks import check_input_file, os_reason, read_regular_file
from hccatom.phases import PHASES
from hccatom.validation.errors import CohortInputError

Treatment = Literal["TACE", "HAIC", "TACE + systemic", "HAIC + systemic"]
SetLabel = Literal["train", "internal", "external"]
#: The cohort model each treatment belongs to (as in the paper's four cohorts).
MODEL_OF_TREATMENT: dict[str, str] = {
    "TACE": "TACE", "HAIC": "HAIC", "TACE + systemic": "TC", "HAIC + systemic": "HC",
}
_TREATMENT_ALIASES = {
    "tace": "TACE", "haic": "HAIC", "tc": "TACE + systemic", "hc": "HAIC + systemic",
    "tace + systemic": "TACE + systemic", "tace+systemic": "TACE + systemic",
    "haic + systemic": "HAIC + systemic", "haic+systemic": "HAIC + systemic",
}
_SETS = ("train", "internal", "external")
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
CLINICAL_FIELDS: tuple[str, ...] = tuple(ClinicalVariables.model_fields)
_BOOL_FIELDS = {"comorbidity", "hbv", "ascites", "metastasis", "pvtt"}
_INT_FIELDS = {"child_pugh_score", "ecog", "tumour_number"}
_TEXT_FIELDS = {"sex", "bclc_stage"}
MAX_ROWS = 200_000
MAX_TABLE_BYTES = 1 << 30
"""A cohort table file larger than this (1 GiB) is refused from its size, unread."""


@dataclass(frozen=True)
class CohortCase:
    """One validated row of the cohort table."""

    line: int
    case_id: str
    treatment: Treatment
    arterial: Path | None = None
    portal: Path | None = None
    study: Path | None = None
    arterial_series_uid: str | None = None
    portal_series_uid: str | None = None
    clinical: ClinicalVariables | None = None
    response: int | None = None
    os_months: float | None = None
    os_event: int | None = None
    set: SetLabel | None = None
    scores: dict[str, float] | None = None
    compare: dict[str, float] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """The cohort model of this case's treatment (TACE, HAIC, TC or HC)."""
        return MODEL_OF_TREATMENT[self.treatment]

    def one_year_survival(self) -> int | None:
        """1 alive at 12 months, 0 died before, None when censored before or unknown."""
        if self.os_months is None or self.os_event is None:
            return None
        if self.os_months >= 12.0:
            return 1
        return 0 if self.os_event == 1 else None


@dataclass(frozen=True)
class Cohort:
    """The cases of a cohort table and the table's sha256 (provenance of calibrations)."""

    source: Path
    sha256: str
    cases: tuple[CohortCase, ...]


def _read_rows(path: Path, data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    """Column names and rows of the table whose bytes ``data`` were read from ``path``."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ModuleNotFoundError:
            raise CohortInputError(
                f"{path.name}: reading Parquet needs pyarrow (pip install pyarrow); or save the "
                "table as CSV."
            ) from None
        table = pq.read_table(io.BytesIO(data))
        cols = list(table.column_names)
        data_rows = table.to_pylist()
        return cols, [{k: "" if v is None else str(v) for k, v in r.items()} for r in data_rows]
    try:
        with io.TextIOWrapper(io.BytesIO(data), newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = list(reader.fieldnames or [])
            rows: list[dict[str, str]] = []
            for r in reader:
                if len(rows) >= MAX_ROWS:
                    raise CohortInputError(f"{path.name}: more than {MAX_ROWS} rows; split it.")
                rows.append({k: (v or "").strip() for k, v in r.items() if k is not None})
            return cols, rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CohortInputError(f"{path.name}: not a UTF-8 CSV table ({exc}).") from None


def _table_bytes(p: Path) -> bytes:
    """The table's bytes, read once through the checked descriptor (a FIFO swapped in after
    the ``stat`` check is refused, not waited on); parsed and digested from these bytes."""
    try:
        return read_regular_file(p, "cohort table", error=CohortInputError,
                                 max_bytes=MAX_TABLE_BYTES)
    except FileNotFoundError:
        raise CohortInputError(f"cohort table not found: {p}.") from None
    except OSError as exc:
        raise CohortInputError(f"cohort table {p}: cannot read it ({os_reason(exc)}).") from None


def _number(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError("not finite")
    return v


def _clinical_from_columns(row: dict[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in CLINICAL_FIELDS:
        text = row.get(name, "")
        if name in _BOOL_FIELDS:
            out[name] = _BOOL_TEXT.get(text.lower(), text)
        elif name in _TEXT_FIELDS:
            out[name] = text
        else:
            try:
                v = _number(text)
                out[name] = int(v) if name in _INT_FIELDS and v.is_integer() else v
            except ValueError:
                out[name] = text  # ClinicalVariables reports it as "not a number"
    return out


class _RowParser:
    """Parses one row, collecting problems instead of stopping at the first."""

    def __init__(self, line: int, row: dict[str, str], problems: list) -> None:
        self.line, self.row, self.problems = line, row, problems

    def bad(self, column: str, message: str) -> None:
        self.problems.append((self.line, column, message))

    def optional_number(self, column: str, lo: float = -math.inf) -> float | None:
        text = self.row.get(column, "")
        if text == "":
            return None
        try:
            v = _number(text)
        except ValueError:
            self.bad(column, f"{text!r} is not a number")
            return None
        if v < lo:
            self.bad(column, f"{v} is below {lo}")
            return None
        return v

    def optional_flag(self, column: str) -> int | None:
        text = self.row.get(column, "")
        if text == "":
            return None
        if text not in ("0", "1", "0.0", "1.0"):
            self.bad(column, f"{text!r}: use 0, 1 or leave empty")
            return None
        return int(float(text))

    def path(self, column: str, base: Path) -> Path | None:
        text = self.row.get(column, "")
        if text == "":
            return None
        p = Path(text)
        p = p if p.is_absolute() else base / p
        if not p.exists():
            self.bad(column, f"file or folder not found: {text}")
            return None
        return p


def _images(rp: _RowParser, base: Path) -> tuple[Path | None, Path | None, Path | None,
                                                 dict[str, str | None]]:
    """The case's images: ``arterial`` + ``portal`` paths, or one DICOM ``study`` folder."""
    row = rp.row
    uids: dict[str, str | None] = {ph: row.get(f"{ph}_series_uid", "") or None
                                   for ph in PHASES}
    has_paths = bool(row.get("arterial", "") or row.get("portal", ""))
    if row.get("study", ""):
        if has_paths:
            rp.bad("study", "give either a DICOM study folder or the arterial/portal paths, "
                   "not both")
            return None, None, None, uids
        study = rp.path("study", base)
        if study is not None and not study.is_dir():
            rp.bad("study", f"{row['study']} is not a folder; give the DICOM study folder")
            study = None
        return None, None, study, uids
    for ph, uid in uids.items():
        if uid is not None:
            rp.bad(f"{ph}_series_uid", "chooses a series in a DICOM study: give the study "
                   "column too, or leave it empty")
    arterial, portal = rp.path("arterial", base), rp.path("portal", base)
    for col, p in (("arterial", arterial), ("portal", portal)):
        if p is None and row.get(col, "") == "":
            rp.bad(col, "empty; give the CT path, a DICOM study folder (study) or all four "
                   "score_* columns")
    return arterial, portal, None, {"arterial": None, "portal": None}


def _parse_row(line: int, row: dict[str, str], base: Path, cols: set[str],
               problems: list) -> CohortCase | None:
    n_before = len(problems)
    rp = _RowParser(line, row, problems)
    case_id = row.get("case_id", "")
    if not case_id:
        rp.bad("case_id", "empty; every row needs a case id")
    treatment = _TREATMENT_ALIASES.get(row.get("treatment", "").lower())
    if treatment is None:
        rp.bad("treatment", f"{row.get('treatment', '')!r}: use TACE, HAIC, TACE + systemic "
               "or HAIC + systemic")
    response = rp.optional_flag("response")
    os_months = rp.optional_number("os_months", lo=0.0)
    os_event = rp.optional_flag("os_event")
    if (row.get("os_months", "") == "") != (row.get("os_event", "") == ""):
        rp.bad("os_months/os_event", "give both survival time and event, or neither")
    set_label = row.get("set", "").lower() or None
    if set_label is not None and set_label not in _SETS:
        rp.bad("set", f"{row.get('set')!r}: use train, internal, external or leave empty")
    scores = {m: rp.optional_number(f"score_{m}") for m in MODELS}
    given = {m: v for m, v in scores.items() if v is not None}
    for m, v in given.items():
        if not 0.0 <= v <= 1.0:
            rp.bad(f"score_{m}", f"{v} is outside [0, 1]")
    if given and len(given) != len(MODELS):
        rp.bad("score_*", f"give all four scores or none (missing: "
               f"{', '.join(m for m in MODELS if m not in given)})")
    compare: dict[str, float] = {}
    for m in MODELS:
        cv = rp.optional_number(f"compare_{m}")
        if cv is not None:
            compare[m] = cv
    arterial = portal = study = None
    series_uids: dict[str, str | None] = {"arterial": None, "portal": None}
    clinical = None
    if not given:  # the case must be scored: CT and clinical data needed
        arterial, portal, study, series_uids = _images(rp, base)
        try:
            if row.get("clinical_json", ""):
                cj = rp.path("clinical_json", base)
                clinical = ClinicalVariables.from_json(cj) if cj is not None else None
            elif set(CLINICAL_FIELDS) <= cols:
                clinical = ClinicalVariables.from_mapping(_clinical_from_columns(row))
            else:
                rp.bad("clinical_json", "empty and the table has no clinical columns")
        except ClinicalInputError as exc:
            for fld, msg in exc.problems or [("clinical", str(exc))]:
                rp.bad(fld, msg)
    if len(problems) > n_before or treatment is None:
        return None
    return CohortCase(
        line=line, case_id=case_id, treatment=treatment,  # type: ignore[arg-type]
        arterial=arterial, portal=portal, study=study,
        arterial_series_uid=series_uids["arterial"], portal_series_uid=series_uids["portal"],
        clinical=clinical, response=response,
        os_months=os_months, os_event=os_event, set=set_label,  # type: ignore[arg-type]
        scores={m: float(v) for m, v in given.items()} if given else None, compare=compare,
    )


def read_cohort(path: str | Path) -> Cohort:
    """Read and validate a cohort table; every bad row is reported in one error."""
    p = Path(path)
    check_input_file(p, "cohort table", error=CohortInputError, max_bytes=MAX_TABLE_BYTES)
    data = _table_bytes(p)
    cols, rows = _read_rows(p, data)
    problems: list[tuple[int | None, str, str]] = []
    for required in ("case_id", "treatment"):
        if required not in cols:
            problems.append((None, required, "column missing"))
    if problems:
        raise CohortInputError(f"{p.name}: the cohort table lacks required columns.", problems)
    if not rows:
        raise CohortInputError(f"{p.name}: the cohort table has no rows.")
    cases: list[CohortCase] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        line = i + 2  # header is line 1
        case = _parse_row(line, row, p.parent, set(cols), problems)
        cid = row.get("case_id", "")
        if cid and cid in seen:
            problems.append((line, "case_id", f"duplicate of line {seen[cid]}"))
        elif cid:
            seen[cid] = line
        if case is not None:
            cases.append(case)
    if problems:
        n_lines = len({r for r, _, _ in problems})
        raise CohortInputError(
            f"{p.name}: {len(problems)} problem(s) in {n_lines} row(s); fix them and rerun "
            "(nothing was scored).", problems,
        )
    digest = hashlib.sha256(data).hexdigest()
    return Cohort(source=p, sha256=digest, cases=tuple(cases))


__all__ = ["CLINICAL_FIELDS", "MODEL_OF_TREATMENT", "Cohort", "CohortCase", "read_cohort"]
