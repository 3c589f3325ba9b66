"""Fuzz targets: each takes raw bytes and feeds them to one hccatom input reader.

The contract every target checks: whatever the bytes, the reader returns normally or raises
an :class:`hccatom.errors.HccatomError` - never another exception (a crash for the fuzzer),
never a hang (the runner's per-input timeout) and never an allocation beyond the memory
budget (the runner sets ``HCCATOM_MEMORY_BUDGET`` low and an RSS limit).

Targets run in one process and reuse one scratch folder; they are plain functions, so
``tests/test_fuzz_targets.py`` runs each on its seed corpus without atheris.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

#: Scratch folder for the files a target writes; the runner names it (``HCCATOM_FUZZ_SCRATCH``)
#: so that the last input survives a process that dies without writing an artifact.
_SCRATCH = Path(os.environ.get("HCCATOM_FUZZ_SCRATCH") or tempfile.mkdtemp(prefix="hccatom-fuzz-"))
_SCRATCH.mkdir(parents=True, exist_ok=True)


def _file(name: str, data: bytes) -> Path:
    path = _SCRATCH / name
    path.write_bytes(data)
    return path


def _expect_typed(call: Callable[[], object]) -> None:
    # imported here, not at module level: the runner instruments hccatom before its import
    from hccatom.errors import HccatomError

    with contextlib.suppress(HccatomError):
        call()


def nifti(data: bytes) -> None:
    """NIfTI-1/-2 header and voxels (``.nii``; gzip-framed input is read as ``.nii.gz``)."""
    from hccatom.ct_io import read_ct

    name = "x.nii.gz" if data[:2] == b"\x1f\x8b" else "x.nii"
    _expect_typed(lambda: read_ct(_file(name, data)))


def nrrd(data: bytes) -> None:
    """NRRD with an attached (``.nrrd``) header; may name a detached data file."""
    from hccatom.ct_io import read_ct

    _expect_typed(lambda: read_ct(_file("x.nrrd", data)))


def mha(data: bytes) -> None:
    """MetaImage (``.mha``): text header, then LOCAL data or a named data file."""
    from hccatom.ct_io import read_ct

    _expect_typed(lambda: read_ct(_file("x.mha", data)))


def dicom(data: bytes) -> None:
    """A DICOM folder holding one mutated file (GDCM series scan, header and pixel reading)."""
    from hccatom.ct_io import read_ct

    folder = _SCRATCH / "dicom"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    (folder / "a.dcm").write_bytes(data)
    _expect_typed(lambda: read_ct(folder))


def clinical_json(data: bytes) -> None:
    """A clinical JSON file (``ClinicalVariables.from_json``)."""
    from hccatom.clinical import ClinicalVariables

    _expect_typed(lambda: ClinicalVariables.from_json(_file("clinical.json", data)))


def manifest(data: bytes) -> None:
    """Bundle manifest bytes (``parse_manifest``: JSON limits, version, schema)."""
    from hccatom.bundle.reader import parse_manifest

    _expect_typed(lambda: parse_manifest(data, "fuzz"))


def bundle_zip(data: bytes) -> None:
    """A bundle zip (``load_bundle``: member checks, manifest, sizes, checksums)."""
    from hccatom.bundle.reader import load_bundle

    def run() -> None:
        load_bundle(_file("bundle.zip", data)).close()

    _expect_typed(run)


def cohort_csv(data: bytes) -> None:
    """A validation cohort table (``hccatom.validation.cohort.read_cohort``: CSV, rows,
    clinical columns, paths relative to the table's folder)."""
    from hccatom.validation.cohort import read_cohort

    folder = _SCRATCH / "cohort"
    folder.mkdir(exist_ok=True)
    _expect_typed(lambda: read_cohort(_file("cohort/cohort.csv", data)))


#: Separates the files of one ``dicom_study`` input (each part becomes one file).
STUDY_FILE_MARK = b"--hccatom-fuzz-file--"
_STUDY_MAX_FILES = 6


def dicom_study(data: bytes) -> None:
    """A small DICOM study folder whose files are the input's parts (split at
    :data:`STUDY_FILE_MARK`): ``index_study`` (pydicom headers, series grouping, slice
    order), then phase selection (``find_phases``) over the index."""
    from hccatom.dicom.index import index_study
    from hccatom.dicom.phases import find_phases

    folder = _SCRATCH / "study"
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "sub").mkdir(parents=True)
    for i, part in enumerate(data.split(STUDY_FILE_MARK)[:_STUDY_MAX_FILES]):
        (folder / ("sub" if i % 2 else "") / f"f{i}").write_bytes(part)

    def run() -> None:
        find_phases(index_study(folder))

    _expect_typed(run)


def serve_request(data: bytes) -> None:
    """The ``hccatom serve`` request decoder without PyTriton (``hccatom.serve.wire``):
    request JSON, each phase's geometry rebuilt around a small array, the clinical mapping
    validated - what the server does before the Predictor runs. The client's error-response
    decoder reads the same bytes as response text: it returns a typed error or None."""
    import numpy as np

    from hccatom.clinical import ClinicalVariables
    from hccatom.phases import PHASES
    from hccatom.serve import wire

    def run() -> None:
        req = wire.parse_request(data)
        array = np.full((2, 3, 3), -1000.0, dtype=np.float32)
        for name in PHASES:
            wire.phase_volume(name, req.get(name), array)
        if isinstance(req["clinical"], dict):
            ClinicalVariables.from_mapping(req["clinical"])

    _expect_typed(run)
    from hccatom.errors import HccatomError

    decoded = wire.decode_error(data.decode("utf-8", errors="replace"))
    assert decoded is None or isinstance(decoded, HccatomError)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "nifti": nifti,
    "nrrd": nrrd,
    "mha": mha,
    "dicom": dicom,
    "clinical_json": clinical_json,
    "manifest": manifest,
    "bundle_zip": bundle_zip,
    "cohort_csv": cohort_csv,
    "dicom_study": dicom_study,
    "serve_request": serve_request,
}

#: What a target needs beyond the runtime (an extra's package); the corpus replay test skips
#: the target with this reason where it is absent (the runtime-only CI environment).
NEEDS = {"dicom_study": "pydicom"}

#: Environment every fuzz process runs with: a small memory budget (a header declaring a
#: big image must be refused, not allocated) and no header-probe subprocess (a hang in a
#: reader must show up as the fuzzer's timeout, not be hidden by the guard).
FUZZ_ENV = {"HCCATOM_MEMORY_BUDGET": "256MiB", "HCCATOM_HEADER_TIMEOUT_S": "0"}


def apply_env() -> None:
    """Set :data:`FUZZ_ENV` in this process."""
    os.environ.update(FUZZ_ENV)
