"""Signed bundles: a manifest edit, a wrong key, a missing signature are refused by name."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from fixtures.bundle.helpers import build_fixture_bundle

from hccatom.bundle import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    bundle_digest,
    load_bundle,
    verify_bundle,
)
from hccatom.bundle.signature import (
    DEMO_PRIVATE_KEY_PATH,
    DEMO_PUBLIC_KEY_PATH,
    canonical_manifest_bytes,
)
from hccatom.bundle.signer import generate_keypair, sign_bundle
from hccatom.demo import DEMO_BUNDLE_DIR
from hccatom.errors import BundleFormatError, BundleSignatureError, InputError


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    generate_keypair(d / "site.pem", d / "site.pub.pem")
    generate_keypair(d / "other.pem", d / "other.pub.pem")
    return {"private": d / "site.pem", "public": d / "site.pub.pem",
            "other_private": d / "other.pem", "other_public": d / "other.pub.pem"}


@pytest.fixture(scope="module")
def signed_dir(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]) -> Path:
    out = tmp_path_factory.mktemp("signed") / "bundle"
    return build_fixture_bundle(out, verify=False, sign_key=keys["private"])


@pytest.fixture()
def signed_copy(signed_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(signed_dir, dest)
    return dest


def _edit_tace(raw: bytes, value: float = 0.99) -> bytes:
    data = json.loads(raw)
    data["thresholds"]["TACE"] = value
    return json.dumps(data, indent=2).encode()


def _rezip(folder: Path, dest: Path, manifest: bytes | None = None,
           drop: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).as_posix()
            if p.is_file() and rel not in drop:
                data = manifest if (rel == MANIFEST_NAME and manifest) else p.read_bytes()
                zf.writestr(rel, data)
    return dest


def test_signed_bundle_verifies_with_its_key(signed_dir: Path, keys: dict[str, Path]) -> None:
    assert (signed_dir / SIGNATURE_NAME).is_file()
    with load_bundle(signed_dir, trusted_keys=[keys["public"]]) as b:
        assert b.signature.status == "verified" and b.signature.verified
        assert not b.signature.demo_key
        assert b.sha256 == bundle_digest((signed_dir / MANIFEST_NAME).read_bytes())
    report = verify_bundle(signed_dir, trusted_keys=[keys["public"]], run_models=False)
    assert "verified: all checks passed; the manifest is signed by a trusted key" in (
        report.text())


def test_edited_threshold_is_refused_dir(signed_copy: Path, keys: dict[str, Path]) -> None:
    m = signed_copy / MANIFEST_NAME
    m.write_bytes(_edit_tace(m.read_bytes()))
    for trusted in ([keys["public"]], None):  # refused with or without a trusted key
        with pytest.raises(BundleSignatureError, match="bad signature") as err:
            load_bundle(signed_copy, trusted_keys=trusted)
        assert "thresholds" in str(err.value) and SIGNATURE_NAME in str(err.value)


def test_edited_threshold_is_refused_zip(signed_dir: Path, tmp_path: Path,
                                         keys: dict[str, Path]) -> None:
    intact = _rezip(signed_dir, tmp_path / "ok.zip")
    with load_bundle(intact, trusted_keys=[keys["public"]]) as b:
        assert b.signature.verified
    edited = _rezip(signed_dir, tmp_path / "edited.zip",
                    manifest=_edit_tace((signed_dir / MANIFEST_NAME).read_bytes()))
    with pytest.raises(BundleSignatureError, match="bad signature"):
        load_bundle(edited, trusted_keys=[keys["public"]])


def test_reformatting_keeps_digest_and_signature(signed_copy: Path,
                                                 keys: dict[str, Path]) -> None:
    m = signed_copy / MANIFEST_NAME
    before = bundle_digest(m.read_bytes())
    data = json.loads(m.read_bytes())
    m.write_text(json.dumps(dict(reversed(list(data.items()))), indent=7))
    with load_bundle(signed_copy, trusted_keys=[keys["public"]], expect_sha256=before) as b:
        assert b.sha256 == before and b.signature.verified


def test_wrong_key_is_refused(signed_dir: Path, keys: dict[str, Path]) -> None:
    with pytest.raises(BundleSignatureError, match="not among the trusted keys"):
        load_bundle(signed_dir, trusted_keys=[keys["other_public"]])
    # a trusted key among several is enough
    with load_bundle(signed_dir, trusted_keys=[keys["other_public"], keys["public"]]) as b:
        assert b.signature.verified


def test_resigned_by_another_key_is_refused(signed_copy: Path, keys: dict[str, Path]) -> None:
    m = signed_copy / MANIFEST_NAME
    m.write_bytes(_edit_tace(m.read_bytes()))
    sign_bundle(signed_copy, keys["other_private"])  # an editor re-signs with their own key
    with load_bundle(signed_copy) as b:  # consistent, but attests nothing
        assert b.signature.status == "untrusted" and not b.signature.verified
    with pytest.raises(BundleSignatureError, match="not among the trusted keys"):
        load_bundle(signed_copy, trusted_keys=[keys["public"]])


def test_missing_signature_is_refused_when_required(signed_copy: Path, tmp_path: Path,
                                                    keys: dict[str, Path]) -> None:
    (signed_copy / SIGNATURE_NAME).unlink()
    with load_bundle(signed_copy) as b:
        assert b.signature.status == "unsigned"
    with pytest.raises(BundleSignatureError, match="unsigned"):
        load_bundle(signed_copy, trusted_keys=[keys["public"]], require_signature=True)
    with pytest.raises(BundleSignatureError, match="unsigned"):
        load_bundle(signed_copy, trusted_keys=[keys["public"]])  # keys imply it
    z = _rezip(signed_copy, tmp_path / "unsigned.zip")
    with pytest.raises(BundleSignatureError, match="unsigned"):
        load_bundle(z, trusted_keys=[keys["public"]], require_signature=True)
    with pytest.raises(InputError, match="needs trusted_keys"):
        load_bundle(signed_copy, require_signature=True)
    report = verify_bundle(signed_copy, run_models=False)
    text = report.text()
    assert "unsigned: the manifest (thresholds, policy) is not attested" in text
    assert report.digest in text and len(report.digest) == 64


def test_expect_sha256_pins_the_manifest(signed_copy: Path) -> None:
    digest = bundle_digest((signed_copy / MANIFEST_NAME).read_bytes())
    with load_bundle(signed_copy, expect_sha256=digest.upper()) as b:
        assert b.sha256 == digest
    (signed_copy / SIGNATURE_NAME).unlink()  # pinning works for unsigned bundles too
    m = signed_copy / MANIFEST_NAME
    m.write_bytes(_edit_tace(m.read_bytes()))
    with pytest.raises(BundleSignatureError, match="pinned expect_sha256"):
        load_bundle(signed_copy, expect_sha256=digest)
    with pytest.raises(InputError, match="64 hex"):
        load_bundle(signed_copy, expect_sha256="abc")


def test_sign_a_zip_in_place_twice(tmp_path: Path, keys: dict[str, Path]) -> None:
    z = build_fixture_bundle(tmp_path / "b.zip", verify=False)
    sign_bundle(z, keys["other_private"])
    sign_bundle(z, keys["private"])  # replaces the first signature
    names = zipfile.ZipFile(z).namelist()
    assert names.count(SIGNATURE_NAME) == 1
    with load_bundle(z, trusted_keys=[keys["public"]]) as b:
        assert b.signature.verified
        assert (b.root / SIGNATURE_NAME).is_file()


def test_malformed_signature_and_duplicate_keys(signed_copy: Path) -> None:
    (signed_copy / SIGNATURE_NAME).write_text('{"format": "something else"}')
    with pytest.raises(BundleSignatureError, match="malformed"):
        load_bundle(signed_copy)
    with pytest.raises(BundleFormatError, match="twice"):
        canonical_manifest_bytes(b'{"a": 1, "a": 2}')
    with pytest.raises(BundleFormatError):
        canonical_manifest_bytes(b'{"a": NaN}')


def test_committed_demo_bundle_is_signed_by_the_demo_key() -> None:
    with load_bundle(DEMO_BUNDLE_DIR, trusted_keys=[DEMO_PUBLIC_KEY_PATH]) as b:
        assert b.signature.verified and b.signature.demo_key
    text = verify_bundle(DEMO_BUNDLE_DIR, trusted_keys=[DEMO_PUBLIC_KEY_PATH],
                         run_models=False).text()
    assert "proves nothing about a real bundle" in text
    assert "NOT attested: signed with the public demo key" in text


def test_demo_key_pair_matches(tmp_path: Path) -> None:
    z = build_fixture_bundle(tmp_path / "d", verify=False)
    sign_bundle(z, DEMO_PRIVATE_KEY_PATH)
    sig = json.loads((z / SIGNATURE_NAME).read_text())
    assert "DEMO" in sig["key_label"]
    with load_bundle(z, trusted_keys=[DEMO_PUBLIC_KEY_PATH]) as b:
        assert b.signature.demo_key


def test_bad_key_files_are_input_errors(tmp_path: Path, signed_dir: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(InputError, match="not a PEM public key"):
        load_bundle(signed_dir, trusted_keys=[junk])
    with pytest.raises(InputError, match="cannot read"):
        load_bundle(signed_dir, trusted_keys=[tmp_path / "missing.pem"])
    with pytest.raises(InputError, match="not an unencrypted PEM private key"):
        sign_bundle(signed_dir, junk)


def test_writer_moved_and_old_import_still_works() -> None:
    from hccatom.bundle import writer
    from hccatom.export import bundle_writer

    assert bundle_writer.build_bundle is writer.build_bundle


def test_the_issue_scenario_edited_demo_threshold_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hccatom.cli import main
    from hccatom.predictor import Predictor

    copy = tmp_path / "demo"
    shutil.copytree(DEMO_BUNDLE_DIR, copy)
    m = copy / MANIFEST_NAME
    m.write_bytes(_edit_tace(m.read_bytes(), 0.9999))
    assert main(["bundle", "verify", str(copy), "--no-run"]) == 3
    err = capsys.readouterr().err
    assert "bad signature" in err and "resign_demo_bundle" in err
    with pytest.raises(BundleSignatureError, match="bad signature"):
        Predictor.from_bundle(copy, device="cpu")
    (copy / SIGNATURE_NAME).unlink()  # dropping the signature: loads, but says unattested
    assert main(["bundle", "verify", str(copy), "--no-run"]) == 0
    assert "unsigned: the manifest (thresholds, policy) is not attested" in (
        capsys.readouterr().out)
    with pytest.raises(BundleSignatureError, match="unsigned"):
        Predictor.from_bundle(copy, device="cpu", trusted_keys=[DEMO_PUBLIC_KEY_PATH])



def test_an_oversized_signature_file_is_refused_unread(signed_copy: Path, tmp_path: Path) -> None:
    (signed_copy / SIGNATURE_NAME).write_bytes(b" " * (1 << 20))
    with pytest.raises(BundleSignatureError, match="few hundred"):
        load_bundle(signed_copy)
    z = _rezip(signed_copy, tmp_path / "big.zip")
    with pytest.raises(BundleSignatureError, match="few hundred"):
        load_bundle(z)
