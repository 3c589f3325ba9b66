"""Bundle digest and Ed25519 signatures over the canonical manifest.

The manifest holds the decision itself (thresholds, ATOM policy) and pins every model file by
sha256 and size; the reader refuses files it does not list. So one digest of the manifest
names the whole bundle, and one signature over it attests the whole bundle.

**Canonical manifest bytes**: ``manifest.json`` parsed as JSON (a key given twice, NaN or
Infinity are refused) and written back with keys sorted at every level, separators ``,`` and
``:`` without spaces, non-ASCII characters kept, encoded as UTF-8. Reformatting the file
(indentation, key order) keeps them; changing any value, adding or removing any field does
not. Every field counts, including fields this runtime does not know (a newer minor schema).

**Bundle digest**: the lower-case hex sha256 of the canonical manifest bytes. It is what
``Bundle.sha256``, ``hccatom bundle info`` / ``verify`` and every Recommendation report, and
what ``expect_sha256`` pins.

**Signature**: a detached file :data:`SIGNATURE_NAME` at the bundle root (beside
``manifest.json``, not listed in it) holding an Ed25519 signature of
``DOMAIN + canonical manifest bytes`` together with the signer's public key. A signature
proves something only when its key is one the caller trusts (``trusted_keys``); the demo
bundle is signed with the demo key committed in the repository, which anyone can use, so a
demo-key signature proves nothing about a real bundle.

``cryptography`` (a runtime dependency) is imported only when a signature is checked or made.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from hccatom.errors import BundleFormatError, BundleSignatureError, InputError
from hccatom.path_checks import check_input_file, read_regular_file
from hccatom.safe_json import JSONLimits, loads_limited

SIGNATURE_NAME: Final[str] = "manifest.sig.json"
SIGNATURE_FORMAT: Final[str] = "hccatom-bundle-signature/1"
SIGNATURE_JSON_LIMITS = JSONLimits(max_bytes=64 << 10, max_depth=4, max_number_chars=40)
"""A signature file is one flat object of a few hundred bytes (JSONLimitError is a
ValueError: a file outside these limits is a malformed signature)."""
#: Prefixed to the canonical manifest before signing, so a bundle signature cannot be
#: replayed as a signature of anything else made with the same key.
DOMAIN: Final[bytes] = b"hccatom bundle manifest v1\x00"
DEMO_KEY_DIR: Final[Path] = Path(__file__).resolve().parent.parent / "data" / "demo_key"
DEMO_PUBLIC_KEY_PATH: Final[Path] = DEMO_KEY_DIR / "demo_signing_key.pub.pem"
DEMO_PRIVATE_KEY_PATH: Final[Path] = DEMO_KEY_DIR / "demo_signing_key.pem"
DEMO_KEY_LABEL: Final[str] = (
    "hccatom DEMO key (public in the repository; anyone can sign with it)"
)

SignatureStatus = Literal["unsigned", "untrusted", "verified"]

_INSTALL = 'pip install "cryptography>=42"'
MAX_KEY_FILE_BYTES: Final[int] = 64 << 10
"""A PEM key is a few hundred bytes; a larger key file is refused from its size, unread."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def canonical_manifest_bytes(raw: bytes, where: str = "manifest.json") -> bytes:
    """The canonical form of manifest bytes (see the module docstring)."""
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates,
                          parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleFormatError(f"{where}: manifest.json is not valid canonical JSON "
                                f"({exc}).") from exc
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def bundle_digest(raw: bytes, where: str = "manifest.json") -> str:
    """The bundle digest: hex sha256 of the canonical manifest bytes."""
    return hashlib.sha256(canonical_manifest_bytes(raw, where)).hexdigest()


# --- keys ------------------------------------------------------------------------------
def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ModuleNotFoundError as exc:  # pragma: no cover - a runtime dependency
        raise BundleSignatureError(
            f"checking bundle signatures needs the 'cryptography' package: {_INSTALL}."
        ) from exc
    return ed25519


def key_id(public_raw: bytes) -> str:
    """A short name of a public key: the first 16 hex digits of sha256(raw 32 bytes)."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def public_key_raw(source: str | Path | bytes) -> bytes:
    """The raw 32 bytes of an Ed25519 public key given as a PEM file path or PEM bytes."""
    from cryptography.hazmat.primitives import serialization

    ed25519 = _crypto()
    pem, where = _read_key(source, "public key")
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise InputError(f"{where}: not a PEM public key ({exc}).") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InputError(f"{where}: not an Ed25519 public key; bundles are signed with "
                         "Ed25519 (`hccatom bundle keygen`).")
    return bytes(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def _read_key(source: str | Path | bytes, what: str) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, f"the {what}"
    path = check_input_file(Path(source).expanduser(), f"the {what} file",
                            max_bytes=MAX_KEY_FILE_BYTES)
    try:  # read through the checked descriptor: a FIFO swapped in since is refused
        return read_regular_file(path, f"the {what} file",
                                 max_bytes=MAX_KEY_FILE_BYTES), str(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc}).") from exc


def load_private_key(source: str | Path | bytes) -> Any:
    """An Ed25519 private key from an unencrypted PKCS#8 PEM file or bytes."""
    from cryptography.hazmat.primitives import serialization

    ed25519 = _crypto()
    pem, where = _read_key(source, "private key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{where}: not an unencrypted PEM private key ({exc}).") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError(f"{where}: not an Ed25519 private key (`hccatom bundle keygen`).")
    return key


def demo_public_key_raw() -> bytes:
    """The raw demo public key (committed in the repository, shipped in the package)."""
    return public_key_raw(DEMO_PUBLIC_KEY_PATH)


# --- the signature file ----------------------------------------------------------------
@dataclass(frozen=True)
class SignatureFile:
    """The parsed content of :data:`SIGNATURE_NAME`."""

    public_key: bytes
    signature: bytes
    bundle_sha256: str
    key_label: str

    @property
    def key_id(self) -> str:
        """Short name of the signing key."""
        return key_id(self.public_key)

    def to_json(self) -> str:
        """The file's text."""
        return json.dumps({
            "format": SIGNATURE_FORMAT,
            "algorithm": "ed25519",
            "signed": "DOMAIN + canonical manifest bytes (see hccatom.bundle.signature)",
            "bundle_sha256": self.bundle_sha256,
            "key_id": self.key_id,
            "key_label": self.key_label,
            "public_key": base64.b64encode(self.public_key).decode("ascii"),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }, indent=2) + "\n"

    @classmethod
    def parse(cls, raw: bytes, where: str) -> SignatureFile:
        """Parse the file; anything malformed is a :class:`BundleSignatureError`."""
        try:
            data = loads_limited(raw, SIGNATURE_JSON_LIMITS)
            if not isinstance(data, dict) or data.get("format") != SIGNATURE_FORMAT:
                raise ValueError(f"format is not {SIGNATURE_FORMAT!r}")
            if data.get("algorithm") != "ed25519":
                raise ValueError(f"algorithm {data.get('algorithm')!r} is not 'ed25519'")
            pub = base64.b64decode(str(data["public_key"]), validate=True)
            sig = base64.b64decode(str(data["signature"]), validate=True)
            if len(pub) != 32 or len(sig) != 64:
                raise ValueError("public key must be 32 bytes and signature 64 bytes")
            return cls(pub, sig, str(data.get("bundle_sha256", "")),
                       str(data.get("key_label", "")))
        except (UnicodeDecodeError, ValueError, KeyError, binascii.Error) as exc:
            raise BundleSignatureError(
                f"{where}: {SIGNATURE_NAME} is malformed ({exc}); re-sign the bundle with "
                "`hccatom bundle sign`."
            ) from exc


@dataclass(frozen=True)
class SignatureCheck:
    """What is known about a bundle's signature after loading it.

    ``status``: "unsigned" (no signature file), "untrusted" (a valid signature by a key the
    caller did not name as trusted, or no trusted key given: it attests nothing), "verified"
    (a valid signature by one of ``trusted_keys``). ``demo_key``: the signer is the public
    demo key, so even "verified" proves nothing about a real bundle.
    """

    status: SignatureStatus
    key_id: str | None = None
    key_label: str | None = None
    demo_key: bool = False

    @property
    def verified(self) -> bool:
        """True when a trusted key's signature over this exact manifest was checked."""
        return self.status == "verified"

    def text(self) -> str:
        """One plain sentence for ``bundle verify`` and ``bundle info``."""
        if self.status == "unsigned":
            return "unsigned: the manifest (thresholds, policy) is not attested"
        who = f"key {self.key_id}" + (" (the DEMO key)" if self.demo_key else "")
        if self.status == "untrusted":
            line = (f"signed by {who}, signature valid, but that key was not given as trusted "
                    "(--trusted-key): the manifest (thresholds, policy) is not attested")
        else:
            line = f"verified: signed by trusted {who}"
        if self.demo_key:
            line += ("; the demo key is public, so its signature proves nothing about a real "
                     "bundle")
        return line


def _verify_raw(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    ed25519 = _crypto()
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def check_signature(
    manifest_raw: bytes,
    signature_raw: bytes | None,
    where: str,
    *,
    trusted_keys: Sequence[bytes] | None = None,
    require_signature: bool = False,
) -> SignatureCheck:
    """Check a bundle's signature; raise :class:`BundleSignatureError` naming what failed.

    A signature file that is present is always checked: one that does not match the
    manifest means the manifest (or the signature) was edited after signing, and is refused
    whether or not keys are trusted. With ``trusted_keys`` (raw public keys) the bundle must
    be signed by one of them; ``require_signature`` refuses an unsigned bundle.
    """
    trusted = list(trusted_keys or [])
    if signature_raw is None:
        if require_signature or trusted:
            raise BundleSignatureError(
                f"{where}: the bundle is unsigned (no {SIGNATURE_NAME}) but a signature by a "
                "trusted key is required; ask its publisher for a signed bundle or sign it "
                "yourself with `hccatom bundle sign --key PRIVATE.pem`."
            )
        return SignatureCheck("unsigned")
    sig = SignatureFile.parse(signature_raw, where)
    demo = sig.public_key == demo_public_key_raw()
    message = DOMAIN + canonical_manifest_bytes(manifest_raw, where)
    if not _verify_raw(sig.public_key, sig.signature, message):
        raise BundleSignatureError(
            f"{where}: bad signature: {SIGNATURE_NAME} (key {sig.key_id}) does not match "
            "manifest.json, so the manifest (thresholds, policy, file list) or the signature "
            "was changed after signing; restore the original bundle or re-sign it"
            + (" (the demo bundle: python tools/resign_demo_bundle.py)." if demo else ".")
        )
    if trusted and sig.public_key not in trusted:
        raise BundleSignatureError(
            f"{where}: signed by key {sig.key_id}"
            + (" (the public DEMO key)" if demo else "")
            + f", which is not among the trusted keys ({', '.join(key_id(k) for k in trusted)}"
            "); refusing it."
        )
    return SignatureCheck("verified" if trusted else "untrusted", sig.key_id, sig.key_label,
                          demo)


def trusted_key_bytes(keys: Iterable[str | Path | bytes] | None) -> list[bytes]:
    """Raw public keys from PEM paths, PEM bytes or raw 32-byte keys."""
    out: list[bytes] = []
    for k in keys or []:
        if isinstance(k, bytes) and len(k) == 32:
            out.append(k)
        else:
            out.append(public_key_raw(k))
    return out


__all__ = [
    "DEMO_KEY_LABEL",
    "DEMO_PRIVATE_KEY_PATH",
    "DEMO_PUBLIC_KEY_PATH",
    "DOMAIN",
    "SIGNATURE_NAME",
    "SignatureCheck",
    "SignatureFile",
    "bundle_digest",
    "canonical_manifest_bytes",
    "check_signature",
    "demo_public_key_raw",
    "key_id",
    "load_private_key",
    "public_key_raw",
    "trusted_key_bytes",
]
