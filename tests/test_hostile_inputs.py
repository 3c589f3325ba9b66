"""Issue #18: hostile inputs end in a typed error, fast; nothing impossible is accepted.

Every test builds its reproducer itself (crafted bytes, see ``tests/hostile.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hostile import (
    clinical_values,
    mha_text,
    nested_json,
    nhdr_text,
    nifti1_bytes,
    nifti2_bytes,
    nifti_bomb,
    write,
)

from hccatom import header_guard, memory_budget, memory_plan, read_ct
from hccatom.bundle import load_bundle
from hccatom.bundle.reader import parse_manifest
from hccatom.chain import prepare_phase
from hccatom.cli import exit_code_for
from hccatom.clinical import ClinicalVariables
from hccatom.demo import demo_bundle_path
from hccatom.errors import (
    BundleFormatError,
    BundleIntegrityError,
    BundleTooLargeError,
    ClinicalInputError,
    CTInputError,
    InputTooLargeError,
    ModelLoadError,
)
from hccatom.preprocess import PreprocessSpec
from hccatom.volume import Volume

FAST_S = 5.0  # every refusal here is immediate; generous for a loaded 2-core machine


def _refused(path: Path, needle: str, kind: type[Exception] = CTInputError) -> str:
    t0 = time.perf_counter()
    with pytest.raises(kind) as err:
        read_ct(path)
    assert time.perf_counter() - t0 < FAST_S
    msg = str(err.value)
    assert needle in msg, msg
    return msg


# --- NIfTI headers -------------------------------------------------------------------------
def test_valid_crafted_nifti_reads_both_endians(tmp_path: Path) -> None:
    for e in "<>":
        vol = read_ct(write(tmp_path / f"ok{e == '>'}.nii", nifti1_bytes(endian=e)))
        assert vol.shape == (4, 8, 8) and vol.spacing == (2.0, 1.0, 1.0)


def test_infinite_sform_row_is_refused_before_itk(tmp_path: Path) -> None:
    # the fuzz reproducer: srow_y = (1, -1.5, inf, -5) hangs ReadImageInformation for minutes
    srow = ((1.0, 0.0, 0.0, 0.0), (1.0, -1.5, float("inf"), -5.0), (0.0, 0.0, 2.0, 0.0))
    _refused(write(tmp_path / "inf.nii.gz", nifti1_bytes(srow=srow)), "srow_y")


def test_nifti2_header_is_checked_too(tmp_path: Path) -> None:
    srow = ((1.0, 0.0, 0.0, 0.0), (1.0, -1.5, float("inf"), -5.0), (0.0, 0.0, 2.0, 0.0))
    for e in "<>":
        _refused(write(tmp_path / "inf2.nii", nifti2_bytes(srow=srow, endian=e)), "srow_y")
        _refused(write(tmp_path / "pd2.nii", nifti2_bytes(pixdim=(1.0, 0.0, 1.0), endian=e)),
                 "pixdim[2]")
    # a sound NIfTI-2 passes our checks; SimpleITK then reads it or says it cannot (typed)
    try:
        assert read_ct(write(tmp_path / "ok2.nii", nifti2_bytes())).shape == (4, 8, 8)
    except CTInputError as exc:
        assert "SimpleITK can read" in str(exc)


def test_singular_sform_is_refused(tmp_path: Path) -> None:
    srow = ((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0))
    _refused(write(tmp_path / "zero.nii", nifti1_bytes(srow=srow)), "singular")


def test_bad_qform_quaternion_is_refused(tmp_path: Path) -> None:
    _refused(
        write(tmp_path / "q.nii", nifti1_bytes(qform_code=1, quatern=(float("nan"), 0, 0))),
        "quatern",
    )
    _refused(write(tmp_path / "q2.nii", nifti1_bytes(qform_code=1, quatern=(3.0, 0, 0))),
             "unit quaternion")


@pytest.mark.parametrize("offset", [float("inf"), float("nan"), -352.0, 353.5, 100.0])
def test_bad_vox_offset_is_refused(tmp_path: Path, offset: float) -> None:
    _refused(write(tmp_path / "v.nii", nifti1_bytes(vox_offset=offset)), "vox_offset")


def test_complex_nifti_is_refused(tmp_path: Path) -> None:
    data = nifti1_bytes(np.zeros((4, 4, 4), dtype=np.complex64))
    _refused(write(tmp_path / "c.nii", data), "complex64")


def test_complex_sitk_image_is_refused() -> None:
    image = sitk.Image([4, 4, 4], sitk.sitkComplexFloat32)
    with pytest.raises(CTInputError, match="complex"):
        read_ct(image)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_nifti_voxels_are_refused(tmp_path: Path, bad: float) -> None:
    # ITK's NIfTI reader turns NaN into 0 HU silently; hccatom scans the voxels itself
    arr = np.full((8, 8, 4), -1000.0, dtype=np.float32)
    arr[3, 3, 1] = bad
    arr[4, 4, 2] = bad
    for name in ("n.nii", "n.nii.gz"):
        msg = _refused(write(tmp_path / name, nifti1_bytes(arr)), "2 non-finite voxel")
        assert "NaN" in msg


@pytest.mark.parametrize("pixdim", [(0.0, 1.0, 2.0), (1.0, float("nan"), 2.0),
                                    (1.0, 1.0, float("inf"))])
def test_zero_or_nan_pixdim_is_refused(tmp_path: Path, pixdim: tuple[float, ...]) -> None:
    _refused(write(tmp_path / "p.nii", nifti1_bytes(pixdim=pixdim)), "pixdim[")


def test_negative_pixdim_is_refused_documented_choice(tmp_path: Path) -> None:
    # chosen and documented in hccatom.image_headers: refuse (the flip is ambiguous)
    msg = _refused(write(tmp_path / "p.nii", nifti1_bytes(pixdim=(-1.0, 1.0, 2.0))), "pixdim[1]")
    assert "negative" in msg


def test_truncated_nifti_is_still_refused(tmp_path: Path) -> None:
    data = nifti1_bytes()
    _refused(write(tmp_path / "t.nii.gz", data[:-40]), "truncated")


def test_decompression_bomb_is_refused_from_its_declared_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = nifti_bomb(tmp_path / "bomb.nii.gz", side=1024)
    assert bomb.stat().st_size < 2_000_000
    monkeypatch.setenv(memory_budget.ENV_VAR, "1GiB")
    msg = _refused(bomb, "1024 x 1024 x 1024", InputTooLargeError)
    assert "decompression bomb" in msg and "GiB" in msg and memory_budget.ENV_VAR in msg


# --- MetaImage / NRRD data files ---------------------------------------------------------
SECRET = b"root:x:0:0:SECRET-CONTENT-MARKER\n" * 8


@pytest.mark.parametrize("kind", ["mhd", "nhdr"])
def test_data_file_outside_the_folder_is_refused_without_echo(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "secret.raw"
    outside.write_bytes(SECRET)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in (str(outside), "../secret.raw"):
        text = mha_text(name) if kind == "mhd" else nhdr_text(name)
        header = folder / f"ct.{kind}"
        header.write_text(text)
        msg = _refused(header, "outside the image's folder")
        assert "SECRET" not in msg and "root:" not in msg


def test_mha_with_etc_passwd_is_refused(tmp_path: Path) -> None:
    header = tmp_path / "ct.mha"
    header.write_text(mha_text("/etc/passwd"))
    assert "root:" not in _refused(header, "ElementDataFile")


@pytest.mark.parametrize("kind", ["mhd", "nhdr"])
def test_data_file_beside_the_header_reads(tmp_path: Path, kind: str) -> None:
    values = np.full((4, 4, 4), -1000, dtype="<i2")
    values[1:3, 1:3, 1:3] = 40
    (tmp_path / "ct.raw").write_bytes(values.tobytes())
    header = tmp_path / f"ct.{kind}"
    header.write_text(mha_text("ct.raw") if kind == "mhd" else nhdr_text("ct.raw"))
    assert read_ct(header).shape == (4, 4, 4)


def test_declared_size_of_a_mha_is_checked_against_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = tmp_path / "big.mha"
    header.write_text(mha_text("LOCAL", dims=(4096, 4096, 4096)))
    monkeypatch.setenv(memory_budget.ENV_VAR, "4GiB")
    _refused(header, "4096 x 4096 x 4096", InputTooLargeError)


@pytest.mark.parametrize(("kind", "rank"), [("mhd", "39999999999999999999"), ("mhd", "0"),
                                            ("nhdr", "99")])
def test_absurd_number_of_dimensions_is_refused(tmp_path: Path, kind: str, rank: str) -> None:
    """Found by the mha fuzz target: NDims = 4e19 kept ITK's MetaImage reader busy for
    minutes (corpus: finding-timeout-c7f04b9396a2)."""
    (tmp_path / "ct.raw").write_bytes(np.zeros(64, "<i2").tobytes())
    header = tmp_path / f"ct.{kind}"
    text = mha_text("ct.raw") if kind == "mhd" else nhdr_text("ct.raw")
    key = "NDims = 3" if kind == "mhd" else "dimension: 3"
    assert key in text
    header.write_text(text.replace(key, key[:-1] + rank))
    _refused(header, "NDims" if kind == "mhd" else "dimension")


def test_dicom_without_preamble_with_a_huge_length_is_refused(tmp_path: Path) -> None:
    """Found by the dicom fuzz target: a 287-byte file without the DICM preamble, starting
    like a dataset, made GDCM allocate 3 GB (corpus: finding-oom-1e0ab97745e5)."""
    import struct

    folder = tmp_path / "series"
    folder.mkdir()
    # (0008,0016) UI, 4 bytes; then (0010,0010) PN declaring 60,000 bytes in a tiny file
    data = struct.pack("<HH2sH", 0x0008, 0x0016, b"UI", 4) + b"1.2\x00"
    data += struct.pack("<HH2sH", 0x0010, 0x0010, b"PN", 60000) + b"A" * 16
    (folder / "raw").write_bytes(data)
    (folder / "README.txt").write_text("not DICOM: left to GDCM, which skips it\n")
    msg = _refused(folder, "(0010,0010)")
    assert "60,000 bytes" in msg


def test_dicom_element_with_an_unknown_vr_is_refused(tmp_path: Path) -> None:
    """Found by the dicom fuzz target: an unknown explicit VR ('CE', a mutated 'AE') whose
    length GDCM reads as 4 bytes made it allocate 1.2 GB (corpus: finding-oom-e18c335e6c98)."""
    import struct

    folder = tmp_path / "series"
    folder.mkdir()
    meta = struct.pack("<HH2sH", 0x0002, 0x0016, b"CE", 4) + b"GDCM"
    (folder / "x.dcm").write_bytes(b"\x00" * 128 + b"DICM" + meta + b"\x00" * 16)
    _refused(folder, "(0002,0016) at byte 132 has an unknown value representation")


# --- header probe: the last guard ----------------------------------------------------------
def test_hanging_header_read_is_stopped_without_a_thread_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "ok.nii", nifti1_bytes())
    monkeypatch.setattr(header_guard, "_PROBE", "import time\ntime.sleep(60)\n")
    threads = threading.active_count()
    t0 = time.perf_counter()
    with pytest.raises(CTInputError, match="did not finish within 1 s"):
        header_guard.probe_header(path, limit_s=1.0)
    assert time.perf_counter() - t0 < 10
    assert threading.active_count() == threads


def test_crashing_header_read_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "ok.nii", nifti1_bytes())
    monkeypatch.setattr(header_guard, "_PROBE", "import os, signal\nos.kill(os.getpid(), 11)\n")
    with pytest.raises(CTInputError, match="crashed the image reader"):
        header_guard.probe_header(path, limit_s=20)


def test_header_probe_child_is_reused_and_replaced_after_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "ok.nii", nifti1_bytes())
    header_guard.probe_header(path, limit_s=20)
    proc = header_guard._PROBER._proc
    assert proc is not None
    header_guard.probe_header(path, limit_s=20)
    assert header_guard._PROBER._proc is proc  # warm child reused
    with monkeypatch.context() as m:
        m.setattr(header_guard, "_PROBE", "import time\ntime.sleep(60)\n")
        with pytest.raises(CTInputError, match="did not finish"):
            header_guard.probe_header(path, limit_s=0.5)
    assert proc.poll() is not None  # the old child was replaced, the hung one killed
    header_guard.probe_header(path, limit_s=20)
    assert header_guard._PROBER._proc is not None and header_guard._PROBER._proc is not proc


def test_header_guard_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(header_guard.ENV_VAR, "0")
    assert header_guard.timeout_s() == 0
    header_guard.probe_header(Path("/nonexistent"))  # off: nothing runs
    monkeypatch.setenv(header_guard.ENV_VAR, "soon")
    with pytest.raises(CTInputError, match=header_guard.ENV_VAR):
        header_guard.timeout_s()


# --- direction matrices --------------------------------------------------------------------
@pytest.mark.parametrize("direction", [np.zeros((3, 3)), np.full((3, 3), np.nan),
                                       np.diag([1.0, 1.0, 2.0])])
def test_bad_direction_is_refused_fast(direction: np.ndarray) -> None:
    arr = np.full((4, 4, 4), -1000.0, dtype=np.float32)
    t0 = time.perf_counter()
    with pytest.raises(CTInputError, match="direction"):
        Volume.from_array(arr, (1.0, 1.0, 1.0), direction=direction)
    # a Volume built around from_array (dataclass constructor) reaches read_ct: same refusal
    raw = Volume(array=arr, spacing=(1.0, 1.0, 1.0), direction=tuple(map(tuple, direction)))  # type: ignore[arg-type]
    with pytest.raises(CTInputError, match="direction"):
        read_ct(raw)
    assert time.perf_counter() - t0 < FAST_S


def test_oblique_orthonormal_direction_is_accepted() -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    rot = ((1.0, 0.0, 0.0), (0.0, c, -s), (0.0, s, c))
    vol = Volume.from_array(np.zeros((2, 2, 2)), (1.0, 1.0, 1.0), direction=rot)
    assert vol.direction[1][1] == pytest.approx(c)


# --- DICOM ----------------------------------------------------------------------------------
def test_truncated_dicom_file_is_named(real_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "series"
    shutil.copytree(real_data / "totalseg_example" / "example_ct_dicom", folder)
    victim = sorted(folder.iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:2000])
    msg = _refused(folder, victim.name)
    assert "corrupt or truncated" in msg and "spacing" not in msg


def test_truncated_dicom_pixel_data_is_named(real_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "series"
    shutil.copytree(real_data / "dcmqi_ct3slice" / "dicom", folder)
    victim = folder / "02.dcm"
    victim.write_bytes(victim.read_bytes()[:300_000])
    msg = _refused(folder, "02.dcm")
    assert "(7FE0,0010)" in msg and "only 297,814 remain" in msg
    _refused(victim, "(7FE0,0010)")  # the single file too


def test_dicom_element_length_past_the_end_is_refused_before_gdcm(
    real_data: Path, tmp_path: Path
) -> None:
    # fuzz finding: a mutated length made GDCM allocate ~2 GB while listing the folder
    folder = tmp_path / "series"
    folder.mkdir()
    src = sorted((real_data / "totalseg_example" / "example_ct_dicom").iterdir())[0]
    data = bytearray(src.read_bytes())
    pos = data.index(b"\xe0\x7f\x10\x00")  # pixel data tag, little endian
    data[pos + 8 : pos + 12] = (0x7FFFFFF0).to_bytes(4, "little")
    (folder / "a.dcm").write_bytes(bytes(data))
    _refused(folder, "declares 2,147,483,632 bytes")


# --- memory budget ---------------------------------------------------------------------------
def test_budget_parsing_and_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert memory_budget.parse_bytes("16GiB") == 16 << 30
    assert memory_budget.parse_bytes("800MB") == 800_000_000
    assert memory_budget.parse_bytes("off") is None
    with pytest.raises(ValueError, match=memory_budget.ENV_VAR):
        memory_budget.parse_bytes("lots")
    monkeypatch.setenv(memory_budget.ENV_VAR, "2GiB")
    assert memory_budget.memory_budget_bytes() == 2 << 30
    assert memory_budget.memory_budget_bytes(5) == 5  # the argument wins
    try:
        memory_budget.set_memory_budget("3GiB")  # the process-wide setting beats the env
        assert memory_budget.memory_budget_bytes() == 3 << 30
        memory_budget.set_memory_budget(0)
        assert memory_budget.memory_budget_bytes() is None  # no limit
    finally:
        memory_budget.set_memory_budget(None)
    assert memory_budget.memory_budget_bytes() == 2 << 30
    monkeypatch.delenv(memory_budget.ENV_VAR)
    assert memory_budget.memory_budget_bytes() >= 1 << 30  # from available memory


def test_z_resampling_512x512x400_at_20mm_is_refused_before_allocating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 400 slices of 20 mm -> 8000 slices of 1 mm: 7.8 GiB of float32 (issue #18). The array
    # is a zero-stride view: nothing of that size exists in this test.
    array = np.broadcast_to(np.float32(-1000.0), (400, 512, 512))
    vol = Volume.from_array(array, (20.0, 0.8, 0.8))
    monkeypatch.setenv(memory_budget.ENV_VAR, "4GiB")
    with pytest.raises(InputTooLargeError) as err:
        prepare_phase(vol, PreprocessSpec())
    msg = str(err.value)
    assert "8000 slices" in msg and "7.8 GiB" in msg and "Crop" in msg
    assert err.value.needed_bytes > 8000 * 512 * 512 * 4 > err.value.budget_bytes
    assert exit_code_for(err.value) == 2


def test_segmentation_grid_is_checked_from_the_manifest() -> None:
    spec = load_bundle(demo_bundle_path()).manifest.segmentation.spec
    with pytest.raises(InputTooLargeError, match="network grid"):
        memory_plan.check_segmentation((600, 512, 512), (1.0, 0.7, 0.7), spec,
                                       budget_bytes=1 << 30)
    memory_plan.check_segmentation((60, 64, 64), (1.0, 0.7, 0.7), spec, budget_bytes=1 << 30)


@pytest.mark.parametrize(
    ("where", "change", "needle"),
    [
        ("segmentation", {"patch_size": [4096, 4096, 4096]}, "patch 4096 x 4096 x 4096"),
        ("preprocessing", {"slice_thickness_mm": 0.001}, "thickness 0.001 mm"),
    ],
)
def test_bundle_values_that_need_too_much_memory(
    where: str, change: dict[str, object], needle: str
) -> None:
    m = load_bundle(demo_bundle_path()).manifest
    memory_plan.check_bundle(m, budget_bytes=8 << 30)  # the demo bundle itself fits
    if where == "segmentation":
        seg = m.segmentation.model_copy(update={"spec": m.segmentation.spec.model_copy(
            update=change)})
        bad = m.model_copy(update={"segmentation": seg})
    else:
        bad = m.model_copy(update={"preprocessing": m.preprocessing.model_copy(update=change)})
    with pytest.raises(BundleTooLargeError, match=needle) as err:
        memory_plan.check_bundle(bad, budget_bytes=8 << 30)
    assert exit_code_for(err.value) == 3


# --- clinical JSON ------------------------------------------------------------------------
def _clinical_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clinical.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize("digits", [400, 5000])
def test_huge_integers_are_typed_errors(tmp_path: Path, digits: int) -> None:
    text = json.dumps(clinical_values()).replace("38.5", "9" * digits)
    with pytest.raises(ClinicalInputError, match="characters") as err:
        ClinicalVariables.from_json(_clinical_file(tmp_path, text))
    assert "9" * 50 not in str(err.value)
    # the same value given as a Python int (no JSON): a typed error, no digits echoed
    with pytest.raises(ClinicalInputError) as err2:
        ClinicalVariables.from_mapping(clinical_values(albumin_g_per_l=10**digits - 1))
    assert "albumin_g_per_l" in str(err2.value) and "9" * 50 not in str(err2.value)


def test_deeply_nested_json_is_a_typed_error_fast(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ClinicalInputError, match="nested 100001 levels"):
        ClinicalVariables.from_json(_clinical_file(tmp_path, nested_json(100_000)))
    assert time.perf_counter() - t0 < FAST_S


def test_oversized_clinical_file_is_not_read(tmp_path: Path) -> None:
    text = json.dumps(clinical_values(notes="x" * 1_000_000))
    with pytest.raises(ClinicalInputError, match="larger than"):
        ClinicalVariables.from_json(_clinical_file(tmp_path, text))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_json_numbers_are_refused(tmp_path: Path, literal: str) -> None:
    text = json.dumps(clinical_values()).replace("38.5", literal)
    with pytest.raises(ClinicalInputError):
        ClinicalVariables.from_json(_clinical_file(tmp_path, text))


def test_huge_value_is_not_echoed() -> None:
    with pytest.raises(ClinicalInputError) as err:
        ClinicalVariables.from_mapping(clinical_values(albumin_g_per_l="7" * 50_000_000))
    assert len(str(err.value)) < 2000 and "length 50,000,000" in str(err.value)


def test_many_unknown_keys_are_refused_fast_with_a_short_message() -> None:
    values = clinical_values() | {f"k{i}": i for i in range(300_000)}
    t0 = time.perf_counter()
    with pytest.raises(ClinicalInputError) as err:
        ClinicalVariables.from_mapping(values)
    assert time.perf_counter() - t0 < FAST_S
    assert "300,020 keys" in str(err.value) and len(str(err.value)) < 500


def test_many_unknown_keys_in_a_file_are_refused_fast(tmp_path: Path) -> None:
    values = clinical_values() | {f"k{i}": 0 for i in range(20_000)}  # ~190 kB, under the cap
    path = _clinical_file(tmp_path, json.dumps(values))
    t0 = time.perf_counter()
    with pytest.raises(ClinicalInputError, match="20,020 keys") as err:
        ClinicalVariables.from_json(path)
    assert time.perf_counter() - t0 < FAST_S and len(str(err.value)) < 500


def test_unknown_keys_reported_together_and_metadata_accepted() -> None:
    values = clinical_values(patient_id="P-1", case_id=7, notes="seen by viewer")
    cv = ClinicalVariables.from_mapping(values)
    assert not hasattr(cv, "patient_id") and "P-1" not in repr(cv)
    assert ClinicalVariables(**values) == cv
    bad = clinical_values(viewer_field=1, albumin_g_per_dl=3.5, **{f"x{i}": 0 for i in range(12)})
    with pytest.raises(ClinicalInputError) as err:
        ClinicalVariables.from_mapping(bad)
    names = [name for name, _ in err.value.problems]
    assert "viewer_field" in names and "albumin_g_per_dl" in names
    assert "<more unknown keys>" in names and len(names) == 11
    assert "extra='ignore'" in str(err.value)
    assert ClinicalVariables.from_mapping(bad, extra="ignore") == cv


def test_unknown_keys_ignored_from_json_when_asked(tmp_path: Path) -> None:
    path = _clinical_file(tmp_path, json.dumps(clinical_values(viewer_field="x")))
    with pytest.raises(ClinicalInputError, match="viewer_field"):
        ClinicalVariables.from_json(path)
    assert ClinicalVariables.from_json(path, extra="ignore").albumin_g_per_l == 38.5


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("albumin_g_per_l", "38.5", 'not "38.5"'),
        ("ecog", "1", "text is not accepted"),
        ("hbv", "yes", "true/false"),
        ("ascites", "off", "true/false"),
        ("metastasis", 1, "not 1 or 0"),
        ("age_years", True, "allowed: number"),
    ],
)
def test_strings_for_numbers_and_booleans_are_refused(field: str, value: object,
                                                      needle: str) -> None:
    with pytest.raises(ClinicalInputError) as err:
        ClinicalVariables.from_mapping(clinical_values(**{field: value}))
    problems = dict(err.value.problems)
    assert list(problems) == [field] and needle in problems[field]


def test_integral_float_for_an_integer_field_still_accepted() -> None:
    assert ClinicalVariables.from_mapping(clinical_values(ecog=1.0)).ecog == 1


# --- bundle manifest and zip ---------------------------------------------------------------
def _manifest_with(extra: str) -> bytes:
    return ('{"schema_version": "1.0", "junk": ' + extra + "}").encode()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [("9" * 400, "characters"), ("9" * 5000, "characters"),
     ("[" * 100_000 + "]" * 100_000, "nested 100001 levels"), ("NaN", "NaN")],
)
def test_manifest_json_limits_give_format_errors(extra: str, needle: str) -> None:
    with pytest.raises(BundleFormatError, match=needle) as err:
        parse_manifest(_manifest_with(extra), "b")
    assert exit_code_for(err.value) == 3 and "9" * 50 not in str(err.value)


def _zip_of(root: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())
    return out


def _flip_member_byte(zpath: Path, member: str) -> None:
    with zipfile.ZipFile(zpath) as zf:
        info = zf.getinfo(member)
    data = bytearray(zpath.read_bytes())
    name_len, extra_len = np.frombuffer(bytes(data[info.header_offset + 26:
                                                   info.header_offset + 30]), "<u2")
    start = info.header_offset + 30 + int(name_len) + int(extra_len)
    data[start + info.file_size // 2] ^= 0x5A
    zpath.write_bytes(bytes(data))


@pytest.mark.parametrize("member", ["manifest.json", "selection/TACE/selection_tace.onnx"])
def test_zip_member_with_bad_crc_is_a_bundle_error(tmp_path: Path, member: str) -> None:
    z = _zip_of(demo_bundle_path(), tmp_path / "demo.zip")
    _flip_member_byte(z, member)
    with pytest.raises(BundleIntegrityError, match="corrupt") as err:
        load_bundle(z)
    assert member in str(err.value) and "CRC" in str(err.value)
    assert exit_code_for(err.value) == 3


def test_encrypted_zip_member_is_a_bundle_error(tmp_path: Path) -> None:
    """Found by the bundle_zip fuzz target: zipfile raises RuntimeError for an encrypted
    member (corpus: finding-crash-8e6e7116de23)."""
    z = tmp_path / "enc.zip"
    manifest = (demo_bundle_path() / "manifest.json").read_bytes()
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("manifest.json", manifest)
    data = bytearray(z.read_bytes())  # set the "encrypted" bit (zipfile never writes it)
    data[data.index(b"PK\x03\x04") + 6] |= 0x1  # local header flags
    data[data.index(b"PK\x01\x02") + 8] |= 0x1  # central directory flags
    z.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"'manifest\.json' is encrypted") as err:
        load_bundle(z)
    assert exit_code_for(err.value) == 3


@pytest.mark.parametrize(("name", "needle"), [("far.nii", "truncated"), ("far.nii.gz", "")])
def test_huge_vox_offset_is_truncation_not_memory_error(
    tmp_path: Path, name: str, needle: str
) -> None:
    """Found by the nifti fuzz target: a legal but huge vox_offset (here 2**39) made the voxel
    scan read that many bytes at once (MemoryError; corpus: finding-crash-6c3f7242a954)."""
    data = nifti1_bytes(vox_offset=float(2**39))
    if name.endswith(".gz"):
        data = gzip.compress(data)
    _refused(write(tmp_path / name, data), needle)  # a typed error, fast, no MemoryError


def test_corrupt_model_with_matching_checksum_is_a_bad_bundle(tmp_path: Path) -> None:
    from hccatom import Predictor

    root = tmp_path / "b"
    shutil.copytree(demo_bundle_path(), root)
    rel = "selection/TACE/selection_tace.onnx"
    junk = b"this is not an onnx model" * 100
    (root / rel).write_bytes(junk)
    manifest = json.loads((root / "manifest.json").read_text())
    for f in manifest["files"]:
        if f["path"] == rel:
            f["sha256"], f["size_bytes"] = hashlib.sha256(junk).hexdigest(), len(junk)
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "manifest.sig.json").unlink()  # an unsigned bundle: loads without a trusted key
    with pytest.raises(ModelLoadError, match=r"selection_tace\.onnx") as err:
        Predictor.from_bundle(root, device="cpu")
    assert exit_code_for(err.value) == 3 and "rebuild" in str(err.value)


# --- the CLI: typed errors, never "internal error" -----------------------------------------
def test_cli_hostile_inputs_exit_2_not_internal_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hccatom.cli import main

    srow = ((1.0, 0.0, 0.0, 0.0), (1.0, -1.5, float("inf"), -5.0), (0.0, 0.0, 2.0, 0.0))
    ct = write(tmp_path / "inf.nii.gz", nifti1_bytes(srow=srow))
    ct2 = write(tmp_path / "inf2.nii.gz", nifti1_bytes(srow=srow))  # two paths, two phases
    good = tmp_path / "clinical.json"
    good.write_text(json.dumps(clinical_values()))
    nested = tmp_path / "nested.json"
    nested.write_text(nested_json(100_000))
    base = ["recommend", "--bundle", str(demo_bundle_path()), "--arterial", str(ct),
            "--portal", str(ct2), "--device", "cpu"]
    assert main([*base, "--clinical", str(nested)]) == 2
    err = capsys.readouterr().err
    assert "nested 100001 levels" in err and "internal error" not in err
    assert main([*base, "--clinical", str(good)]) == 2
    err = capsys.readouterr().err
    assert "srow_y" in err and "internal error" not in err and "Traceback" not in err


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_corrupt_model_is_a_bad_bundle_even_when_a_gpu_is_planned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with a GPU provider planned, an unloadable file must not read as "GPU unavailable"
    from hccatom.engines import onnxruntime_engine as ore

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage, not a protobuf" * 10)
    monkeypatch.setattr(ore, "ort_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    for device in ("auto", "cuda"):
        with pytest.raises(ModelLoadError, match=r"bad\.onnx") as err:
            ore.OnnxRuntimeEngine(bad, device=device)
        assert exit_code_for(err.value) == 3


@pytest.mark.parametrize("series", ["dcmqi_ct3slice/dicom", "totalseg_example/example_ct_dicom"])
def test_dicom_walk_accepts_real_files_even_without_a_transfer_syntax(
    real_data: Path, tmp_path: Path, series: str
) -> None:
    from hccatom.dicom_check import check_dicom_file

    for src in sorted((real_data / series).iterdir())[:3]:
        check_dicom_file(src)  # real slices (implicit/explicit VR, JPEG 2000) pass the walk
        data = bytearray(src.read_bytes())
        pos = data.index(b"\x02\x00\x10\x00")  # (0002,0010) Transfer Syntax UID
        data[pos + 2 : pos + 4] = b"\x99\x00"  # now (0002,0099): the syntax is unknown
        check_dicom_file(write(tmp_path / src.name, bytes(data)))


# --- the DICOM study index (fuzz findings of the dicom_study target) -------------------------
def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian element with a 2-byte length (no padding added)."""
    import struct

    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value


def _part10(body: bytes, meta_length: bytes | None = None) -> bytes:
    import struct

    meta = _element(2, 0x10, b"UI", b"1.2.840.10008.1.2.1\x00")
    length = meta_length if meta_length is not None else struct.pack("<I", len(meta))
    return bytes(128) + b"DICM" + _element(2, 0, b"UL", length) + meta + body


@pytest.mark.parametrize(("case", "data"), [
    # Rows (US) of 3 bytes: pydicom raises BytesLengthException on first access
    ("odd_length_us", _part10(_element(0x8, 0x60, b"CS", b"CT")
                              + _element(0x20, 0xE, b"UI", b"1.2.3\x00")
                              + _element(0x28, 0x10, b"US", b"\x01\x02\x03"))),
    # (the third finding, an unknown VR raising NotImplementedError on access, is replayed
    # from fuzz/corpus/dicom_study by tests/test_fuzz_targets.py)
    # a File Meta group length (UL) of 5 bytes: BytesLengthException inside dcmread
    ("bad_meta_length", _part10(_element(0x20, 0xE, b"UI", b"1.2.3\x00"),
                                meta_length=b"\x10\x00\x00\x00\x00")),
])
def test_study_index_counts_malformed_elements_as_unreadable(
    tmp_path: Path, case: str, data: bytes
) -> None:
    pytest.importorskip("pydicom", reason="the DICOM study index needs the dicom extra")
    from hccatom.dicom.errors import DicomStudyError
    from hccatom.dicom.index import index_study

    write(tmp_path / f"{case}.dcm", data)
    with pytest.raises(DicomStudyError, match=r"1 files, 0 not DICOM, 1 unreadable"):
        index_study(tmp_path)
