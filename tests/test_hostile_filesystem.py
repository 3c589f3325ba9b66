"""Hostile filesystem objects at every path the SDK takes: typed errors, fast, never a hang.

FIFOs (opening one for reading blocks until a writer appears), endless devices
(``/dev/zero``), symlink loops and links out of a bundle, broken links, unreadable files,
files where folders are expected and back, sparse files of huge apparent size, unwritable
output paths. A FIFO test that regressed would block forever inside ``open``; the
``_fifo`` helper therefore unblocks any reader after a few seconds (it opens the write end
and closes it) so that such a regression fails the timing assertion instead of hanging CI.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest
from hostile import clinical_values
from hostile_fs import fifo as _fifo
from hostile_fs import needs_fifo, needs_posix_ids
from hostile_fs import unprivileged as _unprivileged

from hccatom import read_ct
from hccatom.bundle import load_bundle
from hccatom.clinical import ClinicalVariables
from hccatom.ct_folder import MAX_FOLDER_ENTRIES
from hccatom.demo import demo_bundle_path
from hccatom.errors import (
    BundleError,
    BundleFormatError,
    BundleIntegrityError,
    ClinicalInputError,
    CTInputError,
    HccatomError,
    InputError,
    InputTooLargeError,
)
from hccatom.path_checks import (
    check_input_file,
    check_input_folder,
    check_output_file,
    check_output_folder,
)
from hccatom.validation.cohort import read_cohort
from hccatom.validation.errors import CohortInputError

FAST_S = 5.0  # every refusal here is a stat call; generous for a loaded 2-core machine
HUGE = 50 << 30  # apparent size of the sparse files (truncate -s 50G)



def _sparse(path: Path, size: int = HUGE) -> Path:
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


def _fast(call: object, kind: type[BaseException], needle: str) -> str:
    t0 = time.perf_counter()
    with pytest.raises(kind) as err:
        call()  # type: ignore[operator]
    assert time.perf_counter() - t0 < FAST_S, "refusal took too long (blocked?)"
    msg = str(err.value)
    assert needle in msg, msg
    return msg


def _dicom_copy(real_data: Path, tmp_path: Path) -> Path:
    src = real_data / "totalseg_example" / "example_ct_dicom"
    dest = tmp_path / "series"
    shutil.copytree(src, dest)
    return dest


# --- CT inputs ------------------------------------------------------------------------------
@needs_fifo
@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nrrd", "ct.dcm", "ct"])
def test_fifo_as_ct_file_is_refused_unopened(tmp_path: Path, name: str) -> None:
    with _fifo(tmp_path / name) as p:
        msg = _fast(lambda: read_ct(p), CTInputError, "named pipe (FIFO)")
    assert str(p) in msg


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_endless_device_as_ct_is_refused(device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist on this platform")
    _fast(lambda: read_ct(device), CTInputError, "character device")


@needs_fifo
@pytest.mark.parametrize(("header", "text"), [
    ("x.mhd", "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\n"
              "ElementDataFile = data.raw\n"),
    ("x.nhdr", "NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n"
               "data file: data.raw\n\n"),
])
def test_detached_data_file_that_is_a_fifo_is_refused(tmp_path: Path, header: str,
                                                       text: str) -> None:
    (tmp_path / header).write_text(text)
    with _fifo(tmp_path / "data.raw"):
        _fast(lambda: read_ct(tmp_path / header), CTInputError, "names a named pipe (FIFO)")


@needs_fifo
def test_fifo_as_label_file_is_refused(tmp_path: Path) -> None:
    from hccatom.ct_io import read_labels

    with _fifo(tmp_path / "labels.nrrd") as p:
        _fast(lambda: read_labels(p), CTInputError, "named pipe")


def test_sparse_huge_ct_file_is_refused_from_its_size(tmp_path: Path) -> None:
    for name in ("big.nii.gz", "big.dcm", "big.mha"):
        _fast(lambda n=name: read_ct(_sparse(tmp_path / n)), InputTooLargeError, "50.0 GiB")


def test_symlink_loop_and_broken_link_as_ct(tmp_path: Path) -> None:
    loop = tmp_path / "loop.nii.gz"
    os.symlink(loop, loop)
    _fast(lambda: read_ct(loop), CTInputError, "symbolic link loop")
    broken = tmp_path / "broken.nii.gz"
    os.symlink(tmp_path / "nowhere.nii.gz", broken)
    _fast(lambda: read_ct(broken), CTInputError, "broken symbolic link")


@needs_posix_ids
def test_unreadable_ct_file_and_folder_are_typed_errors() -> None:
    def check(tmp: Path) -> None:
        f = tmp / "ct.nii.gz"
        f.write_bytes(b"\x1f\x8b" + bytes(100))
        f.chmod(0)
        d = tmp / "series"
        d.mkdir()
        d.chmod(0)
        _fast(lambda: read_ct(f), CTInputError, "permission denied")
        _fast(lambda: read_ct(d), CTInputError, "permission denied")
        _fast(lambda: ClinicalVariables.from_json(f), ClinicalInputError, "permission denied")
        _fast(lambda: read_cohort(f), CohortInputError, "permission denied")

    _unprivileged(check)


def test_empty_folder_as_ct_is_a_typed_error(tmp_path: Path) -> None:
    _fast(lambda: read_ct(tmp_path), CTInputError, "No DICOM series found")


@needs_fifo
def test_fifo_among_dicom_slices_is_refused_by_name(real_data: Path, tmp_path: Path) -> None:
    series = _dicom_copy(real_data, tmp_path)
    with _fifo(series / "zz_pipe"):
        msg = _fast(lambda: read_ct(series), CTInputError, "zz_pipe is a named pipe (FIFO)")
    assert str(series) in msg


def test_link_to_dev_zero_among_dicom_slices_is_refused(real_data: Path, tmp_path: Path) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("/dev/zero does not exist on this platform")
    series = _dicom_copy(real_data, tmp_path)
    os.symlink("/dev/zero", series / "zero.dcm")
    _fast(lambda: read_ct(series), CTInputError, "zero.dcm is a character device")


def test_links_in_a_dicom_folder(real_data: Path, tmp_path: Path) -> None:
    series = _dicom_copy(real_data, tmp_path)
    reference = read_ct(series)
    os.symlink("..", series / "parent")  # a link to the parent folder: not walked, read ok
    vol = read_ct(series)
    assert vol.shape == reference.shape and (vol.array == reference.array).all()
    # GDCM's scan cannot skip these (it loses the series or slices): refused by name
    os.symlink(series / "loop", series / "loop")
    _fast(lambda: read_ct(series), CTInputError, "loop is a broken symbolic link or a link loop")
    (series / "loop").unlink()
    os.symlink(tmp_path / "gone.dcm", series / "broken.dcm")
    _fast(lambda: read_ct(series), CTInputError, "broken.dcm is a broken symbolic link")


def test_many_tiny_files_in_a_series_folder_fail_fast(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(MAX_FOLDER_ENTRIES + 1):
        (folder / f"f{i:05d}.txt").write_bytes(b"x")
    _fast(lambda: read_ct(folder), CTInputError, f"more than {MAX_FOLDER_ENTRIES:,} entries")


# --- the DICOM study index -------------------------------------------------------------------
@needs_fifo
def test_study_walk_skips_fifos_devices_and_loops(
    real_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("pydicom", reason="the DICOM study index needs the dicom extra")
    from hccatom.dicom.index import index_study

    study = tmp_path / "study"
    study.mkdir()
    _dicom_copy(real_data, study)
    (study / "series" / "deeper").mkdir()
    os.symlink("../..", study / "series" / "deeper" / "up")  # a link to an ancestor
    os.symlink(study / "self", study / "self")  # a loop
    os.symlink(tmp_path / "none", study / "broken")
    if os.path.exists("/dev/zero"):
        os.symlink("/dev/zero", study / "zero.dcm")
    with _fifo(study / "series" / "pipe.dcm"), caplog.at_level(logging.WARNING):
        t0 = time.perf_counter()
        index = index_study(study)
        assert time.perf_counter() - t0 < 3 * FAST_S
    assert len(index.series) == 1 and index.series[0].n_slices == 20
    assert index.skipped_special >= 3
    assert "pipe.dcm (a named pipe (FIFO))" in caplog.text


def test_study_index_of_many_tiny_files_is_bounded(tmp_path: Path) -> None:
    pytest.importorskip("pydicom", reason="the DICOM study index needs the dicom extra")
    from hccatom.dicom.errors import DicomStudyError
    from hccatom.dicom.index import index_study

    for i in range(20_000):
        (tmp_path / f"f{i:05d}.txt").write_bytes(b"x")
    t0 = time.perf_counter()
    with pytest.raises(DicomStudyError, match="20000 files, 20000 not DICOM"):
        index_study(tmp_path)
    assert time.perf_counter() - t0 < 15.0


def test_study_folder_that_is_a_file_or_unlistable(tmp_path: Path) -> None:
    pytest.importorskip("pydicom", reason="the DICOM study index needs the dicom extra")
    from hccatom.dicom.errors import DicomStudyError
    from hccatom.dicom.index import index_study

    f = tmp_path / "f.dcm"
    f.write_bytes(b"x")
    _fast(lambda: index_study(f), DicomStudyError, "is a file")
    _fast(lambda: index_study(tmp_path / "empty_missing"), DicomStudyError, "not found")


# --- clinical JSON, key, reference, cohort ---------------------------------------------------
@needs_fifo
def test_fifo_and_devices_as_clinical_json(tmp_path: Path) -> None:
    with _fifo(tmp_path / "clinical.json") as p:
        _fast(lambda: ClinicalVariables.from_json(p), ClinicalInputError, "named pipe")
    if os.path.exists("/dev/urandom"):
        _fast(lambda: ClinicalVariables.from_json("/dev/urandom"), ClinicalInputError,
              "character device")


def test_sparse_clinical_json_and_folder(tmp_path: Path) -> None:
    big = _sparse(tmp_path / "big.json")
    _fast(lambda: ClinicalVariables.from_json(big), ClinicalInputError, "refused unread")
    _fast(lambda: ClinicalVariables.from_json(tmp_path), ClinicalInputError, "is a folder")


@needs_fifo
def test_hostile_key_files(tmp_path: Path) -> None:
    pytest.importorskip("cryptography", reason="bundle signatures need cryptography")
    from hccatom.bundle.signature import public_key_raw

    with _fifo(tmp_path / "key.pem") as p:
        _fast(lambda: public_key_raw(p), InputError, "named pipe")
    _fast(lambda: public_key_raw(_sparse(tmp_path / "big.pem")), InputError, "refused unread")
    _fast(lambda: public_key_raw(tmp_path), InputError, "is a folder")


@needs_fifo
def test_hostile_clinical_reference_files(tmp_path: Path) -> None:
    from hccatom.bundle.explain_spec import reference_from_json

    with _fifo(tmp_path / "ref.json") as p:
        _fast(lambda: reference_from_json(p), ClinicalInputError, "named pipe")
    _fast(lambda: reference_from_json(_sparse(tmp_path / "big.json")), ClinicalInputError,
          "refused unread")


@needs_fifo
def test_hostile_cohort_tables(tmp_path: Path) -> None:
    with _fifo(tmp_path / "cohort.csv") as p:
        _fast(lambda: read_cohort(p), CohortInputError, "named pipe")
    _fast(lambda: read_cohort(_sparse(tmp_path / "big.csv")), CohortInputError,
          "refused unread")
    _fast(lambda: read_cohort(_sparse(tmp_path / "big.parquet")), CohortInputError,
          "refused unread")
    _fast(lambda: read_cohort(tmp_path), CohortInputError, "is a folder")
    if os.path.exists("/dev/zero"):
        _fast(lambda: read_cohort("/dev/zero"), CohortInputError, "character device")


# --- bundles ---------------------------------------------------------------------------------
@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(demo_bundle_path(), dest)
    return dest


def test_bundle_file_linked_outside_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    # the same bytes outside the bundle: the checksum would match, the location does not
    model = next(bundle_copy.rglob("*.onnx"))
    outside = tmp_path / "outside.onnx"
    shutil.copy(model, outside)
    model.unlink()
    os.symlink(outside, model)
    _fast(lambda: load_bundle(bundle_copy), BundleIntegrityError, "pointing outside the bundle")


@pytest.mark.parametrize("link", ["parent", "loop", "broken", "self_dir"])
def test_bundle_links_that_loop_or_dangle_are_refused(bundle_copy: Path, link: str) -> None:
    target = {"parent": "..", "loop": "loop", "broken": "nowhere", "self_dir": "."}[link]
    os.symlink(target, bundle_copy / link)
    with pytest.raises(BundleIntegrityError) as err:
        load_bundle(bundle_copy)
    assert repr(link) in str(err.value)


@needs_fifo
def test_fifo_inside_a_bundle_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.sig.json").unlink()  # a FIFO where the signature would be
    for name in ("extra.bin", "manifest.sig.json"):
        with _fifo(bundle_copy / name):
            _fast(lambda: load_bundle(bundle_copy), BundleIntegrityError, "named pipe")
        (bundle_copy / name).unlink()


@needs_fifo
def test_bundle_path_that_is_a_fifo_device_or_huge(tmp_path: Path) -> None:
    with _fifo(tmp_path / "bundle.zip") as p:
        _fast(lambda: load_bundle(p), BundleFormatError, "named pipe")
    _fast(lambda: load_bundle(_sparse(tmp_path / "big.zip", 20 << 30)), BundleFormatError,
          "refused unread")
    (tmp_path / "empty").mkdir()
    _fast(lambda: load_bundle(tmp_path / "empty"), BundleError, "no manifest.json")
    if os.path.exists("/dev/zero"):
        _fast(lambda: load_bundle("/dev/zero"), BundleFormatError, "character device")


@needs_posix_ids
def test_unreadable_bundle_folder() -> None:
    def check(tmp: Path) -> None:
        bundle = tmp / "bundle"
        shutil.copytree(demo_bundle_path(), bundle)
        sub = next(p for p in sorted(bundle.iterdir()) if p.is_dir())
        sub.chmod(0)
        _fast(lambda: load_bundle(bundle), BundleIntegrityError, "cannot be listed")
        bundle.chmod(0)
        _fast(lambda: load_bundle(bundle), BundleFormatError, "permission denied")

    _unprivileged(check)


# --- the path checks themselves ---------------------------------------------------------------
def test_input_checks_name_what_is_wrong(tmp_path: Path) -> None:
    f = tmp_path / "a.json"
    f.write_text("{}")
    assert check_input_file(f, "x", max_bytes=2) == f
    _fast(lambda: check_input_file(f, "x", max_bytes=1), InputError,
          "2 bytes, larger than the 1 bytes")
    _fast(lambda: check_input_file(tmp_path, "--x"), InputError, "--x")
    _fast(lambda: check_input_folder(f, "--study"), InputError, "not a folder")
    assert check_input_folder(tmp_path, "--study") == tmp_path


@needs_fifo
def test_output_checks_before_the_work(tmp_path: Path) -> None:
    _fast(lambda: check_output_file(tmp_path / "missing" / "r.json", "--json"), InputError,
          "does not exist")
    _fast(lambda: check_output_file(tmp_path, "--json"), InputError, "existing folder")
    with _fifo(tmp_path / "out.json") as p:
        _fast(lambda: check_output_file(p, "--json"), InputError, "named pipe")
    loop = tmp_path / "loop.json"
    os.symlink(loop, loop)
    _fast(lambda: check_output_file(loop, "--json"), InputError, "link loop")
    f = tmp_path / "file"
    f.write_text("x")
    _fast(lambda: check_output_folder(f, "--out"), InputError, "not a folder")
    _fast(lambda: check_output_file(f / "r.json", "--json"), InputError, "not a folder")
    assert check_output_folder(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert check_output_file(tmp_path / "ok.json", "--json") == tmp_path / "ok.json"


@needs_posix_ids
def test_unwritable_output_paths() -> None:
    def check(tmp: Path) -> None:
        ro = tmp / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        _fast(lambda: check_output_file(ro / "r.json", "--json"), InputError, "not writable")
        _fast(lambda: check_output_folder(ro / "out" / "deeper", "--out"), InputError,
              "not writable")
        locked = tmp / "locked.json"
        locked.write_text("{}")
        locked.chmod(0o400)
        _fast(lambda: check_output_file(locked, "--json"), InputError, "not writable")

    _unprivileged(check)


# --- the CLI: exit codes 2 / 3 and one line, never a traceback --------------------------------
def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from hccatom.cli import main

    t0 = time.perf_counter()
    code = main(args)
    assert time.perf_counter() - t0 < 3 * FAST_S
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err


@needs_fifo
def test_cli_hostile_filesystem_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      real_data: Path) -> None:
    clinical = tmp_path / "clinical.json"
    clinical.write_text(json.dumps(clinical_values()))
    ct = real_data / "totalseg_example" / "example_ct_sm.nii.gz"
    bundle = str(demo_bundle_path())

    def recommend(**over: str) -> list[str]:
        opts = {"--bundle": bundle, "--arterial": str(ct), "--portal": str(ct),
                "--clinical": str(clinical), **over}
        return ["recommend", "-q", "--device", "cpu", *[x for kv in opts.items() for x in kv]]

    (tmp_path / "empty").mkdir()
    with _fifo(tmp_path / "pipe.nii.gz") as pipe:
        cases: list[tuple[list[str], int, str]] = [
            (recommend(**{"--arterial": str(pipe)}), 2, "named pipe"),
            (recommend(**{"--clinical": str(pipe)}), 2, "named pipe"),
            (recommend(**{"--clinical": str(_sparse(tmp_path / "big.json"))}), 2,
             "refused unread"),
            (recommend(**{"--json": str(tmp_path / "no" / "r.json")}), 2, "does not exist"),
            (recommend(**{"--json": str(tmp_path)}), 2, "existing folder"),
            (recommend(**{"--json": str(pipe)}), 2, "named pipe"),
            (recommend(**{"--bundle": str(pipe)}), 3, "named pipe"),
            (["bundle", "verify", "-q", str(pipe), "--no-run"], 3, "named pipe"),
            (["bundle", "verify", "-q", str(_sparse(tmp_path / "b.zip", 20 << 30)), "--no-run"], 3,
             "refused unread"),
            (["bundle", "info", str(tmp_path / "empty")], 3, "no manifest.json"),
        ]
        if os.path.exists("/dev/zero"):
            cases.append((recommend(**{"--portal": "/dev/zero"}), 2, "character device"))
        if _has("matplotlib"):  # without the report extra, --report is refused first (exit 5)
            cases.append((recommend(**{"--report": str(tmp_path / "no" / "r.pdf")}), 2,
                          "does not exist"))
        if _has("cryptography"):
            cases.append((["bundle", "verify", "-q", bundle, "--no-run", "--trusted-key",
                           str(pipe)], 2, "named pipe"))
        for args, code, needle in cases:
            got, err = _cli(args, capsys)
            assert (got, needle in err) == (code, True), (args, err)
            assert len(err.splitlines()) == 1, err


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@needs_fifo
def test_cli_validate_hostile_cohort_and_out(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lifelines", reason="hccatom validate needs the validate extra")
    with _fifo(tmp_path / "cohort.csv") as pipe:
        code, err = _cli(["validate", str(pipe), "--bundle", str(demo_bundle_path()),
                          "--out", str(tmp_path / "out")], capsys)
        assert code == 2 and "named pipe" in err, err
    f = tmp_path / "f"
    f.write_text("x")
    code, err = _cli(["validate", str(f), "--bundle", str(demo_bundle_path()), "--out", str(f)],
                     capsys)
    assert code == 2 and "not a folder" in err, err


def test_every_refusal_is_an_hccatom_error() -> None:
    # the contract the CLI relies on for its exit codes
    for kind in (CTInputError, ClinicalInputError, CohortInputError, BundleIntegrityError,
                 BundleFormatError, InputTooLargeError):
        assert issubclass(kind, HccatomError)
