"""Bundle build -> verify -> load, and every way a bundle can be refused (no torch needed)."""

from __future__ import annotations

import json
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
from fixtures.bundle.helpers import FUSED, SEGMENTATION, build_fixture_bundle, selection_dirs

from hccatom.atom import MODELS, PAPER_MSS, AtomPolicy
from hccatom.bundle import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Manifest,
    bundle_summary,
    load_bundle,
    sha256_file,
    verify_bundle,
)
from hccatom.errors import (
    BundleError,
    BundleFormatError,
    BundleIntegrityError,
    BundleNotFoundError,
    BundleVersionError,
    ExportError,
    ParityError,
)
from hccatom.export.bundle_writer import build_bundle, parse_thresholds, write_zip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_bundle(tmp_path_factory.mktemp("b") / "bundle")


@pytest.fixture()
def bundle_copy(built_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(built_dir, dest)
    return dest


def _rewrite_manifest(root: Path, **changes: object) -> None:
    data = json.loads((root / MANIFEST_NAME).read_text())
    data.update(changes)
    (root / MANIFEST_NAME).write_text(json.dumps(data))


# ---- round trip ------------------------------------------------------------------------
def test_build_verify_load_round_trip_directory(built_dir: Path) -> None:
    b = load_bundle(built_dir)
    m = b.manifest
    assert m.schema_version == SCHEMA_VERSION
    assert (m.name, m.version) == ("fixture-bundle", "0.0.1")
    assert m.thresholds == dict(PAPER_MSS)
    assert m.policy == AtomPolicy.atom_v1()
    assert set(m.selection.models) == set(MODELS) and m.selection.fused is not None
    assert m.synthetic and "research use only" in m.intended_use.lower()
    # every listed file exists with the recorded hash
    for f in m.files:
        assert sha256_file(b.path(f.path)) == f.sha256
    assert b.segmentation_dir.joinpath("segmentation_spec.json").is_file()
    assert m.segmentation.spec.patch_size == [32, 64, 64]
    # the bundle hash is the manifest's hash
    assert len(b.sha256) == 64
    report = verify_bundle(b)
    assert report.ok, report.text()
    names = [c.name for c in report.checks]
    assert "selection TACE" in names and "selection fused" in names
    assert "fused = separate" in names
    assert any(n.startswith("segmentation") for n in names)
    # the manifest survives a JSON round trip unchanged
    again = Manifest.model_validate_json(m.model_dump_json(by_alias=True))
    assert again == m


def test_zip_round_trip_and_cleanup(tmp_path: Path) -> None:
    z = build_fixture_bundle(tmp_path / "b.zip", fused=False)
    assert zipfile.is_zipfile(z)
    b = load_bundle(z)
    assert b.manifest.selection.fused is None
    extracted = b.root
    assert (extracted / "selection" / "TACE" / "model.onnx").is_file()
    assert verify_bundle(b).ok
    b.close()
    assert not extracted.exists()


def test_zip_of_a_folder_with_one_top_directory_loads(built_dir: Path, tmp_path: Path) -> None:
    z = tmp_path / "nested.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(built_dir.rglob("*")):
            if p.is_file():
                zf.write(p, "mybundle/" + p.relative_to(built_dir).as_posix())
    with load_bundle(z) as b:
        assert b.manifest.name == "fixture-bundle"
        assert b.sha256 == load_bundle(built_dir).sha256


def test_fused_only_bundle(tmp_path: Path) -> None:
    out = build_fixture_bundle(tmp_path / "f", separate=False)
    b = load_bundle(out)
    assert b.manifest.selection.models == {}
    assert verify_bundle(b).ok


def test_info_summary_is_readable(built_dir: Path) -> None:
    text = bundle_summary(load_bundle(built_dir))
    assert "fixture-bundle 0.0.1" in text
    assert "TACE 0.4035" in text and "HC 0.6458" in text
    assert "atom-v1" in text and "SYNTHETIC" in text
    assert "selection/TACE/model.onnx" in text


# ---- refusals ----------------------------------------------------------------------------
def test_tampered_file_names_the_file(bundle_copy: Path) -> None:
    target = bundle_copy / "selection" / "HAIC" / "model.onnx"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0x01  # one changed byte, same size
    target.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"selection/HAIC/model\.onnx"):
        load_bundle(bundle_copy)


def test_truncated_file_is_an_integrity_error(bundle_copy: Path) -> None:
    target = bundle_copy / "segmentation" / "fold_0.onnx"
    target.write_bytes(target.read_bytes()[:-1])
    with pytest.raises(BundleIntegrityError, match=r"fold_0\.onnx"):
        load_bundle(bundle_copy)


def test_missing_file_names_the_file(bundle_copy: Path) -> None:
    (bundle_copy / "selection" / "TC" / "model.onnx").unlink()
    with pytest.raises(BundleNotFoundError, match=r"selection/TC/model\.onnx"):
        load_bundle(bundle_copy)


def test_unlisted_file_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "segmentation" / "fold_1.onnx").write_bytes(b"x")
    with pytest.raises(BundleIntegrityError, match="not in its manifest"):
        load_bundle(bundle_copy)
    (bundle_copy / "segmentation" / "fold_1.onnx").unlink()
    (bundle_copy / ".DS_Store").write_bytes(b"clutter")  # hidden OS clutter is ignored
    assert load_bundle(bundle_copy).manifest.name == "fixture-bundle"


def test_tampered_zip_member(built_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "c"
    shutil.copytree(built_dir, copy)
    target = copy / "selection" / "fused" / "model.onnx"
    data = bytearray(target.read_bytes())
    data[10] ^= 0xFF
    target.write_bytes(bytes(data))
    z = write_zip(copy, tmp_path / "t.zip")
    with pytest.raises(BundleIntegrityError, match=r"selection/fused/model\.onnx"):
        load_bundle(z)


@pytest.mark.parametrize("member", ["../evil.txt", "segmentation/../../evil.txt", "/abs.txt"])
def test_zip_member_escaping_the_root_is_refused(
    built_dir: Path, tmp_path: Path, member: str
) -> None:
    z = write_zip(built_dir, tmp_path / "e.zip")
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr(member, b"escape")
    with pytest.raises(BundleIntegrityError, match="zip member"):
        load_bundle(z)
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_member_is_refused(built_dir: Path, tmp_path: Path) -> None:
    z = write_zip(built_dir, tmp_path / "l.zip")
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(BundleIntegrityError, match="symbolic link"):
        load_bundle(z)


def test_unknown_major_schema_version(bundle_copy: Path) -> None:
    _rewrite_manifest(bundle_copy, schema_version="2.0")
    with pytest.raises(BundleVersionError) as info:
        load_bundle(bundle_copy)
    assert "2.0" in str(info.value) and "1.x" in str(info.value)


def test_newer_minor_version_with_extra_fields_loads(bundle_copy: Path) -> None:
    _rewrite_manifest(bundle_copy, schema_version="1.7", future_field={"x": 1})
    assert load_bundle(bundle_copy).manifest.schema_version == "1.7"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"name": "x"}', "schema_version"),
        (b'{"schema_version": "one"}', "MAJOR.MINOR"),
        (b'{"schema_version": "1.0", "name": "x"}', "does not validate"),
    ],
)
def test_malformed_manifest(bundle_copy: Path, content: bytes, needle: str) -> None:
    (bundle_copy / MANIFEST_NAME).write_bytes(content)
    with pytest.raises(BundleFormatError, match=needle):
        load_bundle(bundle_copy)


def test_manifest_with_bad_threshold_is_a_format_error(bundle_copy: Path) -> None:
    data = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    data["thresholds"]["TC"] = 1.5
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleFormatError, match="thresholds"):
        load_bundle(bundle_copy)


def test_manifest_path_escaping_root_is_a_format_error(bundle_copy: Path) -> None:
    data = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    data["files"][0]["path"] = "../outside.onnx"
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleFormatError, match=r"\.\."):
        load_bundle(bundle_copy)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleNotFoundError, match="no such bundle"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleNotFoundError, match=r"manifest\.json"):
        load_bundle(tmp_path / "empty")
    (tmp_path / "file.bin").write_bytes(b"hello")
    with pytest.raises(BundleFormatError, match="neither"):
        load_bundle(tmp_path / "file.bin")
    assert issubclass(BundleNotFoundError, BundleError)


def test_runtime_bundle_code_never_unpickles() -> None:
    for path in (ROOT / "sdk" / "bundle").glob("*.py"):
        text = path.read_text()
        for word in ("import pickle", "pickle.load", "import torch", "allow_pickle", "np.load",
                     "joblib", "import dill"):
            assert word not in text, f"{path.name} mentions {word}"


# ---- verify catches broken models ---------------------------------------------------------
def test_verify_reports_a_model_with_the_wrong_contract(tmp_path: Path) -> None:
    # the HC slot holds a segmentation graph: wrong inputs, so its check fails by name
    root = tmp_path / "sel"
    for m, d in selection_dirs().items():
        shutil.copytree(d, root / m)
    shutil.copyfile(SEGMENTATION / "fold_0.onnx", root / "HC" / "model.onnx")
    with pytest.raises(ExportError, match="selection HC"):
        build_bundle(tmp_path / "bad", segmentation=SEGMENTATION,
                     selection={m: root / m for m in MODELS}, name="b", version="1",
                     thresholds=PAPER_MSS)
    out = build_bundle(tmp_path / "bad", segmentation=SEGMENTATION,
                       selection={m: root / m for m in MODELS}, name="b", version="1",
                       thresholds=PAPER_MSS, verify=False)
    report = verify_bundle(out)
    assert not report.ok
    assert [c.name for c in report.failures()] == ["selection HC"]
    assert "FAIL" in report.text()


def test_verify_catches_fused_disagreeing_with_separate(tmp_path: Path) -> None:
    root = tmp_path / "sel"
    for m, d in selection_dirs().items():
        shutil.copytree(d, root / m)
    # swap two cohorts: each graph is valid but the fused graph no longer matches
    shutil.copyfile(selection_dirs()["TACE"] / "model.onnx", root / "HAIC" / "model.onnx")
    out = build_bundle(tmp_path / "swapped", segmentation=SEGMENTATION,
                       selection={m: root / m for m in MODELS}, fused=FUSED, name="b",
                       version="1", thresholds=PAPER_MSS, verify=False)
    report = verify_bundle(out)
    assert [c.name for c in report.failures()] == ["fused = separate"]


# ---- writer input errors ------------------------------------------------------------------
def test_writer_requires_all_four_or_fused(tmp_path: Path) -> None:
    dirs = selection_dirs()
    del dirs["TC"]
    with pytest.raises(ExportError, match=r"missing: \['TC'\]"):
        build_bundle(tmp_path / "x", segmentation=SEGMENTATION, selection=dirs, name="b",
                     version="1", thresholds=PAPER_MSS)


def test_writer_refuses_unknown_cohort_and_existing_output(tmp_path: Path) -> None:
    dirs = {**selection_dirs(), "XYZ": FUSED}
    with pytest.raises(ExportError, match="XYZ"):
        build_bundle(tmp_path / "x", segmentation=SEGMENTATION, selection=dirs, name="b",
                     version="1", thresholds=PAPER_MSS)
    (tmp_path / "exists").mkdir()
    with pytest.raises(ExportError, match="--overwrite"):
        build_fixture_bundle(tmp_path / "exists")


def test_writer_refuses_failed_parity(tmp_path: Path) -> None:
    root = tmp_path / "sel"
    for m, d in selection_dirs().items():
        shutil.copytree(d, root / m)
    (root / "TC" / "model.parity.json").write_text(
        json.dumps({"parity": {"passed": False, "max_abs_diff": 0.1}})
    )
    with pytest.raises(ParityError, match="TC"):
        build_bundle(tmp_path / "x", segmentation=SEGMENTATION,
                     selection={m: root / m for m in MODELS}, name="b", version="1",
                     thresholds=PAPER_MSS)


def test_writer_records_parity_reports(tmp_path: Path) -> None:
    root = tmp_path / "sel"
    for m, d in selection_dirs().items():
        shutil.copytree(d, root / m)
        (root / m / "model.parity.json").write_text(
            json.dumps({"parity": {"passed": True, "max_abs_diff": 1e-7}})
        )
    out = build_bundle(tmp_path / "p", segmentation=SEGMENTATION,
                       selection={m: root / m for m in MODELS}, name="b", version="1",
                       thresholds=PAPER_MSS)
    m = load_bundle(out).manifest
    assert m.parity["selection.TACE"]["parity"]["max_abs_diff"] == 1e-7
    assert m.selection.models["TACE"].parity == "selection/TACE/model.parity.json"
    assert "selection.TACE" in bundle_summary(load_bundle(out))


def test_writer_rejects_bad_thresholds(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="thresholds"):
        build_fixture_bundle(tmp_path / "t", thresholds={**PAPER_MSS, "HC": 0.0})


def test_parse_thresholds(tmp_path: Path) -> None:
    assert parse_thresholds("TACE=0.4,HAIC=0.3,TC=0.6,HC=0.65") == {
        "TACE": 0.4, "HAIC": 0.3, "TC": 0.6, "HC": 0.65,
    }
    f = tmp_path / "t.json"
    f.write_text(json.dumps(PAPER_MSS))
    assert parse_thresholds(str(f)) == dict(PAPER_MSS)
    with pytest.raises(ExportError):
        parse_thresholds("TACE:0.4")


def test_schema_1_1_fields_are_left_out_when_unset() -> None:
    """Readers of schema 1.0 read the policy and the segmentation spec strictly: a bundle
    that uses no 1.1 feature must serialise them without the 1.1 keys."""
    from hccatom.demo import demo_bundle_path

    assert "systemic_when" not in AtomPolicy.atom_v1().model_dump()
    responder = AtomPolicy.atom_v1_responder().model_dump()
    assert responder["systemic_when"] == "no-response"  # a 1.0 reader must refuse this one
    assert AtomPolicy.model_validate(responder) == AtomPolicy.atom_v1_responder()
    spec = load_bundle(demo_bundle_path()).manifest.segmentation.spec
    dumped = json.loads(spec.to_json())
    assert not {"window_before_segmentation", "training_orientation", "postprocessing",
                } & set(dumped)
    oriented = spec.model_copy(update={"training_orientation": "RAS"})
    assert json.loads(oriented.to_json())["training_orientation"] == "RAS"
