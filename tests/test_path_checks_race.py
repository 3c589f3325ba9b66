"""The stat-then-open race: a path that is a regular file when checked and a FIFO when opened.

Every reader that hccatom opens itself goes through
:func:`hccatom.path_checks.open_regular_file` (``O_NONBLOCK``, ``fstat`` of the open
descriptor, reads from it). The race is made deterministic here: ``hccatom.path_checks``
sees an ``os`` whose ``open`` first replaces the target path by a FIFO, i.e. exactly after
every ``stat`` check and right before the open. Each call runs in a thread joined with a
timeout, so a regression (a blocking open) fails the test instead of hanging the suite; a
reader that stopped using the helper fails too (nothing is swapped, so nothing is refused).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hostile import clinical_values

from hccatom import path_checks
from hccatom.bundle import load_bundle
from hccatom.bundle.signature import SIGNATURE_NAME, public_key_raw
from hccatom.clinical import ClinicalVariables
from hccatom.demo import demo_bundle_path
from hccatom.errors import (
    BundleFormatError,
    BundleIntegrityError,
    ClinicalInputError,
    CTInputError,
    InputError,
)
from hccatom.path_checks import open_regular_file, read_regular_file
from hccatom.validation.cohort import read_cohort
from hccatom.validation.errors import CohortInputError

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no os.mkfifo on this OS")

JOIN_S = 20.0  # a refusal is a few system calls; this only bounds a regression (a hang)


class _SwapOnOpen(ModuleType):
    """``os`` as ``hccatom.path_checks`` sees it, except that opening ``target`` first turns
    it into a FIFO (the attacker wins the race every time)."""

    def __init__(self, target: Path) -> None:
        super().__init__("os")
        self.target = target
        self.swapped = False

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, mode: int = 0o777) -> int:
        if not self.swapped and Path(path) == self.target:
            os.unlink(self.target)
            os.mkfifo(self.target)
            self.swapped = True
        return os.open(path, flags, mode)


@contextlib.contextmanager
def _race(monkeypatch: pytest.MonkeyPatch, target: Path) -> Iterator[_SwapOnOpen]:
    swap = _SwapOnOpen(target)
    monkeypatch.setattr(path_checks, "os", swap)
    try:
        yield swap
    finally:
        monkeypatch.setattr(path_checks, "os", os)


def _returns(call: Callable[[], object], release: Path) -> BaseException | None:
    """Run ``call`` in a thread; its exception (None if it returned). A call still blocked
    after JOIN_S is released (the FIFO's write end opened) and the test fails."""
    box: list[BaseException | None] = [None]

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test thread
            box[0] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(JOIN_S)
    if worker.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(release, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail(f"the read of {release} blocked (stat-then-open race not closed)")
    return box[0]


def _refused(monkeypatch: pytest.MonkeyPatch, target: Path, call: Callable[[], object],
             kind: type[BaseException], needle: str = "named pipe") -> str:
    with _race(monkeypatch, target) as swap:
        exc = _returns(call, target)
    assert swap.swapped, "the reader did not open the file through path_checks"
    assert isinstance(exc, kind), repr(exc)
    assert needle in str(exc), str(exc)
    return str(exc)


# --- the helper itself ------------------------------------------------------------------------
def test_open_regular_file_checks_the_descriptor(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"12345")
    with open_regular_file(f, "x") as fh:
        flags = fcntl.fcntl(fh.fileno(), fcntl.F_GETFL)
        assert not flags & os.O_NONBLOCK  # cleared once the file is known to be regular
        assert fcntl.fcntl(fh.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert fh.read() == b"12345"
    assert read_regular_file(f, "x", max_bytes=5) == b"12345"
    with pytest.raises(InputError, match="5 bytes, larger than the 4 bytes"):
        read_regular_file(f, "--x", max_bytes=4)
    with pytest.raises(CTInputError, match="is a folder"):
        read_regular_file(tmp_path, "x", error=CTInputError)
    if os.path.exists("/dev/null"):
        with pytest.raises(InputError, match="character device"):
            read_regular_file("/dev/null", "x")
    with pytest.raises(FileNotFoundError):  # the open's own failures: the caller words them
        read_regular_file(tmp_path / "missing", "x")


def test_a_fifo_is_refused_without_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    exc = _returns(lambda: read_regular_file(fifo, "--clinical"), fifo)
    assert isinstance(exc, InputError) and "--clinical" in str(exc) and "named pipe" in str(exc)


def test_the_race_itself_is_real(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # the harness: after a passing stat check, the open meets a FIFO
    f = tmp_path / "c.json"
    f.write_text("{}")
    path_checks.check_input_file(f, "x")
    with _race(monkeypatch, f) as swap:
        path_checks.os.open(f, os.O_RDONLY | os.O_NONBLOCK)
    assert swap.swapped and f.is_fifo()


# --- every reader ---------------------------------------------------------------------------
def test_clinical_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "clinical.json"
    f.write_text(json.dumps(clinical_values()))
    msg = _refused(monkeypatch, f, lambda: ClinicalVariables.from_json(f), ClinicalInputError)
    assert str(f) in msg


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_bundle_path(), tmp_path / "bundle"))


@pytest.mark.parametrize("name", ["manifest.json", SIGNATURE_NAME, "model"])
def test_bundle_folder_files(monkeypatch: pytest.MonkeyPatch, bundle_dir: Path,
                             name: str) -> None:
    if name == "model":
        name = next(p.relative_to(bundle_dir).as_posix()
                    for p in sorted(bundle_dir.rglob("*.onnx")))
    msg = _refused(monkeypatch, bundle_dir / name, lambda: load_bundle(bundle_dir),
                   BundleIntegrityError)
    assert Path(name).name in msg


def test_bundle_zip(monkeypatch: pytest.MonkeyPatch, bundle_dir: Path, tmp_path: Path) -> None:
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(bundle_dir.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(bundle_dir).as_posix())
    load_bundle(z).close()  # intact, it loads
    _refused(monkeypatch, z, lambda: load_bundle(z), BundleFormatError)


def test_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("cryptography", reason="signature checks need cryptography")
    from hccatom.bundle.signature import DEMO_PUBLIC_KEY_PATH

    key = tmp_path / "pub.pem"
    shutil.copyfile(DEMO_PUBLIC_KEY_PATH, key)
    assert len(public_key_raw(key)) == 32
    _refused(monkeypatch, key, lambda: public_key_raw(key), InputError)


def test_cohort_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    table = tmp_path / "cohort.csv"
    table.write_text("case_id,treatment\n1,TACE\n")
    _refused(monkeypatch, table, lambda: read_cohort(table), CohortInputError)


def test_segmentation_spec(monkeypatch: pytest.MonkeyPatch, bundle_dir: Path,
                           tmp_path: Path) -> None:
    from hccatom.segmentation.spec import SegmentationSpec

    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    spec = tmp_path / "segmentation_spec.json"
    spec.write_text(json.dumps(manifest["segmentation"]["spec"]))
    SegmentationSpec.load(spec)
    _refused(monkeypatch, spec, lambda: SegmentationSpec.load(spec), BundleFormatError)


def test_recommendation_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hccatom.recommendation import Recommendation

    f = tmp_path / "rec.json"
    f.write_text("{}")
    _refused(monkeypatch, f, lambda: Recommendation.from_json(f), InputError)


def test_ct_file_header(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hostile import nifti1_bytes, write

    from hccatom import read_ct

    ct = write(tmp_path / "ct.nii", nifti1_bytes())
    _refused(monkeypatch, ct, lambda: read_ct(ct), CTInputError)


def test_dicom_study_scan_skips_the_swapped_file(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    pytest.importorskip("pydicom", reason="study indexing needs the dicom extra")
    from hccatom.dicom.errors import DicomStudyError
    from hccatom.dicom.index import index_study

    study = tmp_path / "study"
    study.mkdir()
    target = study / "a.dcm"
    target.write_bytes(b"\0" * 128 + b"DICM")
    with _race(monkeypatch, target) as swap:
        exc = _returns(lambda: index_study(study), target)
    assert swap.swapped
    assert isinstance(exc, DicomStudyError) and "No DICOM image" in str(exc), repr(exc)


def test_triton_repository_texts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hccatom.serve.errors import RepositoryError
    from hccatom.serve.triton_repo import _read_text

    sums = tmp_path / "SHA256SUMS"
    sums.write_text("abc  m/1/model.onnx\n")
    assert _read_text(sums).startswith("abc")
    _refused(monkeypatch, sums, lambda: _read_text(sums), RepositoryError)
