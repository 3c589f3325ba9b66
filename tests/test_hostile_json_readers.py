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
    """A sparse file one byte over the limit: costs no disk, is never read whole."""
    path = tmp_path / "huge.json"
    with path.open("wb") as fh:
        fh.truncate(CLINICAL_COHORT_JSON_LIMITS.max_bytes + 1)
    return path


HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "deep": (_deep, "nested 100002 levels"),
    "huge number": (_huge_number, "5000 characters"),
    "huge file": (_huge_file, f"larger than the {CLINICAL_COHORT_JSON_LIMITS.max_bytes:,} bytes"),
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
    with pytest.raises(ClinicalInputError, match=r"not found: .*absent\.json"):
        read(missing)


# --- bundle and build-time files ---------------------------------------------------------
def _hostile_bytes(kind: str, limit: int) -> bytes:
    """A JSON object that breaks one limit: nesting, a number's length, or the size."""
    if kind == "deep":
        return ('{"a": ' + "[" * 30_000 + "]" * 30_000 + "}").encode()
    if kind == "huge number":
        return ('{"a": ' + "9" * 5000 + "}").encode()
    return b'{"a": "' + b"x" * limit + b'"}'


BUNDLE_NEEDLES = {"deep": "nested 30001 levels", "huge number": "5000 characters",
                  "huge file": "bytes"}


@pytest.mark.parametrize("hostile", sorted(BUNDLE_NEEDLES))
def test_signature_file_outside_the_limits_is_a_signature_error(tmp_path: Path,
                                                                 hostile: str) -> None:
    from hccatom.bundle import load_bundle
    from hccatom.bundle.signature import SIGNATURE_JSON_LIMITS, SIGNATURE_NAME, SignatureFile
    from hccatom.demo import demo_bundle_path
    from hccatom.errors import BundleSignatureError

    raw = _hostile_bytes(hostile, SIGNATURE_JSON_LIMITS.max_bytes)
    with pytest.raises(BundleSignatureError, match=BUNDLE_NEEDLES[hostile]) as err:
        SignatureFile.parse(raw, "b")
    assert SIGNATURE_NAME in str(err.value)
    # the same file inside a bundle folder: refused before any checksum, naming the bundle
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    bundle.joinpath("manifest.json").write_bytes(
        demo_bundle_path().joinpath("manifest.json").read_bytes())
    bundle.joinpath(SIGNATURE_NAME).write_bytes(raw)
    with pytest.raises(BundleSignatureError) as err:
        load_bundle(bundle)
    assert str(bundle) in str(err.value) and SIGNATURE_NAME in str(err.value)


@pytest.mark.parametrize("hostile", sorted(BUNDLE_NEEDLES))
def test_segmentation_spec_outside_the_limits_is_a_format_error(tmp_path: Path,
                                                                 hostile: str) -> None:
    from hccatom.errors import BundleFormatError
    from hccatom.segmentation.spec import SPEC_FILENAME, SPEC_JSON_LIMITS, SegmentationSpec

    path = tmp_path / SPEC_FILENAME
    path.write_bytes(_hostile_bytes(hostile, SPEC_JSON_LIMITS.max_bytes))
    t0 = time.perf_counter()
    with pytest.raises(BundleFormatError, match=BUNDLE_NEEDLES[hostile]) as err:
        SegmentationSpec.load(tmp_path)
    assert time.perf_counter() - t0 < FAST_S
    assert str(path) in str(err.value) and "9" * 50 not in str(err.value)


@pytest.mark.parametrize("hostile", sorted(BUNDLE_NEEDLES))
def test_thresholds_and_parity_files_outside_the_limits_are_export_errors(
        tmp_path: Path, hostile: str) -> None:
    from hccatom.bundle.writer import INPUT_JSON_LIMITS, parse_thresholds
    from hccatom.errors import ExportError

    path = tmp_path / "thresholds.json"
    path.write_bytes(_hostile_bytes(hostile, INPUT_JSON_LIMITS.max_bytes))
    with pytest.raises(ExportError, match=BUNDLE_NEEDLES[hostile]) as err:
        parse_thresholds(str(path))
    assert str(path) in str(err.value)


def test_a_deep_error_payload_from_a_server_is_no_typed_error_and_no_crash() -> None:
    import base64

    from hccatom.errors import CTInputError
    from hccatom.serve import wire

    assert isinstance(wire.decode_error(wire.encode_error(CTInputError("bad CT"))),
                      CTInputError)
    deep = base64.b64encode(('{"type": ' + "[" * 30_000 + "]" * 30_000 + "}").encode())
    assert wire.decode_error(f"{wire.ERROR_TAG}{deep.decode()} boom") is None


def test_a_deep_or_huge_score_cache_entry_is_scored_again(tmp_path: Path) -> None:
    from hccatom.validation.cohort import CohortCase
    from hccatom.validation.scoring import CACHE_JSON_LIMITS, _read_cache

    case = CohortCase(line=2, case_id="a", treatment="TACE", study=Path("/s/one"))
    for kind in ("deep", "huge number", "huge file"):
        entry = tmp_path / f"{kind}.json"
        entry.write_bytes(_hostile_bytes(kind, CACHE_JSON_LIMITS.max_bytes))
        assert _read_cache(entry, case, "0" * 64) is None, kind


@pytest.mark.parametrize("hostile", sorted(BUNDLE_NEEDLES))
def test_one_record_readers_refuse_hostile_json(tmp_path: Path, hostile: str) -> None:
    """``ClinicalVariables.from_json`` and the serving client read one record the same way."""
    from hccatom.client import _clinical_mapping
    from hccatom.clinical import CLINICAL_JSON_LIMITS, ClinicalVariables

    path = tmp_path / "clinical.json"
    path.write_bytes(_hostile_bytes(hostile, CLINICAL_JSON_LIMITS.max_bytes))
    for read in (ClinicalVariables.from_json, _clinical_mapping):
        with pytest.raises(ClinicalInputError, match=BUNDLE_NEEDLES[hostile]) as err:
            read(path)
        assert "Clinical file" in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("hostile", sorted(BUNDLE_NEEDLES))
def test_bundle_build_settings_files_refuse_hostile_json(tmp_path: Path, hostile: str) -> None:
    """``bundle build --safety/--policy/...``: pydantic's parser bounds depth and numbers,
    the size is bounded before reading (a sparse 4 MB + 1 file is not read)."""
    from hccatom.cli import _read_model
    from hccatom.errors import InputError
    from hccatom.safety import SafetyLimits

    path = tmp_path / "safety.json"
    if hostile == "huge file":
        with path.open("wb") as fh:
            fh.truncate((4 << 20) + 1)
    else:
        path.write_bytes(_hostile_bytes(hostile, 0))
    needle = {"deep": "recursion limit", "huge number": "number out of range",
              "huge file": "larger than the 4,194,304 bytes"}[hostile]
    with pytest.raises(InputError, match=needle) as err:
        _read_model(path, SafetyLimits, "safety")
    assert f"--safety {path}" in str(err.value)


@pytest.mark.parametrize("hostile", [*sorted(BUNDLE_NEEDLES), "missing"])
def test_a_hostile_recommendation_file_is_an_input_error_naming_it(tmp_path: Path,
                                                                    hostile: str) -> None:
    from hccatom.errors import InputError
    from hccatom.recommendation import Recommendation

    path = tmp_path / "rec.json"
    if hostile == "huge file":
        with path.open("wb") as fh:
            fh.truncate((64 << 20) + 1)
    elif hostile != "missing":
        path.write_bytes(_hostile_bytes(hostile, 0))
    needle = {"deep": "recursion limit", "huge number": "number out of range",
              "huge file": "larger than the 67,108,864 bytes",
              "missing": "No such file"}[hostile]
    with pytest.raises(InputError, match=needle) as err:
        Recommendation.from_json(path)
    assert f"recommendation file {path}" in str(err.value)
    with pytest.raises(InputError, match="the recommendation JSON text"):
        Recommendation.from_json('{"final_plan": 1}')
