"""Every reader of a user's JSON file parses it through ``hccatom.safe_json``: a hostile file
(deep nesting, a huge number, a huge file) ends in the reader's typed error naming the file,
fast and without reading the file whole."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hostile import clinical_values, nested_json

from hccatom.bundle.explain_spec import reference_from_json
from hccatom.clinical import CLINICAL_COHORT_JSON_LIMITS
from hccatom.errors import ClinicalInputError, HccatomError
from hccatom.safety import training_population_from_json

FAST_S = 5.0  # each refusal is immediate; generous for a loaded 2-core machine

Reader = Callable[[Path], Any]
CLINICAL_LIST_READERS: dict[str, tuple[Reader, type[HccatomError], str]] = {
    "training cohort": (training_population_from_json, ClinicalInputError,
                        "Training cohort file"),
    "clinical reference": (reference_from_json, ClinicalInputError, "Clinical reference file"),
}


def _deep(tmp_path: Path) -> Path:
    path = tmp_path / "deep.json"
    path.write_text("[" + nested_json(100_000) + "]")
    return path


def _huge_number(tmp_path: Path) -> Path:
    path = tmp_path / "number.json"
    path.write_text(json.dumps([clinical_values()]).replace("38.5", "9" * 5000))
    return path


def _huge_file(tmp_path: Path) -> Path:
    """A sparse file one byte over the limit: costs no disk, would cost 64 MB to read whole."""
    path = tmp_path / "huge.json"
    with path.open("wb") as fh:
        fh.truncate(CLINICAL_COHORT_JSON_LIMITS.max_bytes + 1)
    return path


HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "deep": (_deep, "nested 100002 levels"),
    "huge number": (_huge_number, "5000 characters"),
    "huge file": (_huge_file, "larger than the 67,108,864 bytes"),
}


@pytest.mark.parametrize("hostile", sorted(HOSTILE))
@pytest.mark.parametrize("reader", sorted(CLINICAL_LIST_READERS))
def test_clinical_list_readers_refuse_hostile_json(tmp_path: Path, reader: str,
                                                   hostile: str) -> None:
    read, error, what = CLINICAL_LIST_READERS[reader]
    make, needle = HOSTILE[hostile]
    path = make(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(error) as err:
        read(path)
    assert time.perf_counter() - t0 < FAST_S
    msg = str(err.value)
    assert what in msg and str(path) in msg and needle in msg, msg
    assert "9" * 50 not in msg


@pytest.mark.parametrize("reader", sorted(CLINICAL_LIST_READERS))
def test_clinical_list_readers_still_read_a_cohort(tmp_path: Path, reader: str) -> None:
    path = tmp_path / "cohort.json"
    path.write_text(json.dumps([clinical_values(), clinical_values(age_years=70.0)]))
    read, _, _ = CLINICAL_LIST_READERS[reader]
    assert read(path)
    missing = tmp_path / "absent.json"
    with pytest.raises(ClinicalInputError, match="not found: .*absent.json"):
        read(missing)
