"""Make Ed25519 keys and sign bundles (``hccatom bundle keygen`` / ``bundle sign``).

Signing writes the detached signature file beside ``manifest.json`` (into the folder, or as a
member of the zip), over the canonical manifest bytes defined in
:mod:`hccatom.bundle.signature`. The bundle is opened with the checksum-verifying reader
first, so only an intact bundle gets signed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from hccatom.bundle.reader import MANIFEST_JSON_LIMITS, MANIFEST_NAME, TrustPolicy, load_bundle
from hccatom.bundle.signature import (
    DEMO_KEY_LABEL,
    DEMO_PUBLIC_KEY_PATH,
    DOMAIN,
    SIGNATURE_NAME,
    SignatureFile,
    bundle_digest,
    canonical_manifest_bytes,
    demo_public_key_raw,
    load_private_key,
)
from hccatom.errors import BundleFormatError, BundleIntegrityError, InputError
from hccatom.path_checks import check_output_file, read_regular_file


def generate_keypair(private_path: str | Path, public_path: str | Path, *,
                     overwrite: bool = False) -> str:
    """Write a new Ed25519 key pair as PEM (private: PKCS#8, mode 0600); returns its key id.

    Keep the private key secret and off the deployment machines; hand out the public key.
    Both paths are checked before a key is made (:func:`hccatom.path_checks.check_output_file`:
    an existing folder, a FIFO or device, a broken link, a missing or unwritable folder is an
    :class:`InputError`). An existing key file is never replaced unless ``overwrite``; a new
    file is created exclusively (``O_EXCL | O_NOFOLLOW``: never written through a link that
    appeared meanwhile), a replaced one is written beside it and renamed over it, so the
    private key is mode 0600 whatever the old file's mode was.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from hccatom.bundle.signature import key_id

    priv, pub = Path(private_path), Path(public_path)
    if os.path.abspath(priv) == os.path.abspath(pub):
        raise InputError(f"--private and --public are the same path ({priv}); give two files.")
    for p, flag in ((priv, "--private"), (pub, "--public")):
        check_output_file(p, flag)
        if os.path.lexists(p) and not overwrite:
            raise InputError(f"{flag} {p} exists; an existing key is never replaced silently: "
                             "choose another path or pass --overwrite.")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key()
    _write_key_file(priv, pem, 0o600, overwrite, "--private")
    _write_key_file(pub, public.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo),
                    0o644, overwrite, "--public")
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key_id(raw)


def _write_key_file(path: Path, data: bytes, mode: int, overwrite: bool, flag: str) -> None:
    """Write a key file: created exclusively, or (``overwrite``) renamed over the old one."""
    if not overwrite:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                         | getattr(os, "O_NOFOLLOW", 0), mode)
        except FileExistsError:  # appeared since the check (or a link to elsewhere)
            raise InputError(f"{flag} {path} exists; an existing key is never replaced "
                             "silently: choose another path or pass --overwrite.") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)  # replaces a link itself, never writes through it
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def signature_for(manifest_raw: bytes, private_key: str | Path | bytes,
                  label: str | None = None) -> SignatureFile:
    """The signature file content for these manifest bytes."""
    from cryptography.hazmat.primitives import serialization

    key = load_private_key(private_key)
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    if label is None:
        label = DEMO_KEY_LABEL if public == demo_public_key_raw() else ""
    signature = key.sign(DOMAIN + canonical_manifest_bytes(manifest_raw))
    return SignatureFile(public, signature, bundle_digest(manifest_raw), label)


def sign_bundle(path: str | Path, private_key: str | Path | bytes, *,
                label: str | None = None) -> SignatureFile:
    """Sign a bundle folder or zip in place (replacing any earlier signature).

    The bundle is loaded first (schema, every checksum), so a damaged bundle is refused.
    ``label``: free text naming the key (default: the demo key's label for the demo key).
    """
    p = Path(path).expanduser()
    if p.is_dir():  # where the signature goes can be written: checked before the checksums
        check_output_file(p / SIGNATURE_NAME, "bundle signature")
    elif p.exists():  # a zip is rewritten in place (through a temporary file beside it)
        check_output_file(p, "bundle")
    # Integrity first (schema, checksums); an earlier signature may be stale: not checked.
    with load_bundle(p, trust=TrustPolicy(ignore_signature=True)) as bundle:
        raw = read_regular_file(bundle.root / MANIFEST_NAME, f"bundle {p}: {MANIFEST_NAME}",
                                error=BundleIntegrityError,
                                max_bytes=MANIFEST_JSON_LIMITS.max_bytes)
    sig = signature_for(raw, private_key, label)
    if p.is_dir():
        (p / SIGNATURE_NAME).write_text(sig.to_json(), encoding="utf-8")
    else:
        _replace_zip_member(p, SIGNATURE_NAME, sig.to_json().encode("utf-8"))
    return sig


def _replace_zip_member(path: Path, name: str, data: bytes) -> None:
    """Write ``name`` (beside the manifest) into the zip, dropping an earlier copy."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        prefix = next((n[: -len(MANIFEST_NAME)] for n in names
                       if n == MANIFEST_NAME
                       or (n.endswith("/" + MANIFEST_NAME) and n.count("/") == 1)), None)
        if prefix is None:
            raise BundleFormatError(f"{path}: no {MANIFEST_NAME} at the zip root.")
        target = prefix + name
        if target not in names:
            with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as out:
                out.writestr(target, data)
            return
        fd, tmp_name = tempfile.mkstemp(suffix=".zip", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as out:
                for info in zf.infolist():
                    if info.filename != target:
                        out.writestr(info, zf.read(info))
                out.writestr(target, data)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    shutil.move(str(tmp), path)


__all__ = ["DEMO_PUBLIC_KEY_PATH", "generate_keypair", "sign_bundle", "signature_for"]
