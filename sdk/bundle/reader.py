"""Open a bundle (directory or ``.zip``), validate its manifest and verify every checksum.

Nothing here unpickles anything: the manifest is JSON validated by pydantic, model files are
opened later by ONNX Runtime. A zip is checked member by member before anything is written
(no absolute paths, no ``..``, no links, no unlisted files, sizes as listed) and the listed
files are extracted into a private temporary folder that lives as long as the
:class:`Bundle`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import stat
import tempfile
import weakref
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from pydantic import ValidationError

from hccatom.bundle.manifest import (
    SCHEMA_VERSION,
    SUPPORTED_MAJOR,
    FileEntry,
    Manifest,
    parse_schema_version,
)
from hccatom.bundle.signature import (
    SIGNATURE_JSON_LIMITS,
    SIGNATURE_NAME,
    SignatureCheck,
    bundle_digest,
    check_signature,
    trusted_key_bytes,
)
from hccatom.bundle.tree import MAX_BUNDLE_ZIP_BYTES, bundle_tree_files
from hccatom.engines.providers import file_sha256
from hccatom.errors import (
    BundleError,
    BundleFormatError,
    BundleIntegrityError,
    BundleNotFoundError,
    BundleSignatureError,
    BundleVersionError,
    InputError,
)
from hccatom.path_checks import (
    check_input_file,
    check_input_folder,
    open_regular_file,
    read_regular_file,
)
from hccatom.safe_json import JSONLimitError, JSONLimits, loads_limited

MANIFEST_JSON_LIMITS = JSONLimits(max_bytes=8 << 20, max_depth=64, max_number_chars=40)
"""A manifest is tens of kB; size, nesting and digits per number are capped."""

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed (the one implementation lives in the engines layer)."""
    return file_sha256(path)


def _sha256_stream(fh: IO[bytes], dest: IO[bytes] | None = None) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    for block in iter(lambda: fh.read(_CHUNK), b""):
        h.update(block)
        n += len(block)
        if dest is not None:
            dest.write(block)
    return h.hexdigest(), n


def _ignorable(rel: str) -> bool:
    """OS clutter that may sit in a bundle without being listed (never loaded)."""
    parts = PurePosixPath(rel).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _validation_summary(err: ValidationError, limit: int = 8) -> str:
    lines = []
    for e in err.errors()[:limit]:
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{where}: {e['msg']}")
    more = len(err.errors()) - limit
    if more > 0:
        lines.append(f"... and {more} more")
    return "; ".join(lines)


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """Parse and validate manifest bytes; version first, so a new major says so plainly."""
    try:
        data: Any = loads_limited(raw, MANIFEST_JSON_LIMITS)
    except JSONLimitError as exc:
        raise BundleFormatError(
            f"{where}: manifest.json cannot be used: {exc}. Rebuild the bundle."
        ) from None
    if not isinstance(data, dict):
        raise BundleFormatError(f"{where}: manifest.json must hold a JSON object.")
    version = data.get("schema_version")
    if version is None:
        raise BundleFormatError(f"{where}: manifest.json has no 'schema_version'.")
    try:
        major, minor = parse_schema_version(str(version))
    except ValueError as exc:
        raise BundleFormatError(f"{where}: {exc}.") from exc
    reads = ", ".join(f"{m}.x" for m in SUPPORTED_MAJOR)
    if major not in SUPPORTED_MAJOR:
        raise BundleVersionError(
            f"{where}: bundle schema version {version} is not supported; this hccatom reads "
            f"schema {reads}. Use an hccatom release that reads {major}.x, or rebuild the "
            "bundle with this one."
        )
    if minor > parse_schema_version(SCHEMA_VERSION)[1]:
        log.warning(
            "%s: schema %s is newer than this hccatom's %s; fields it does not know are "
            "ignored", where, version, SCHEMA_VERSION,
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise BundleFormatError(
            f"{where}: manifest.json does not validate: {_validation_summary(exc)}."
        ) from exc


@dataclass(frozen=True)
class TrustPolicy:
    """What a caller requires of a bundle's signature and digest (see :func:`load_bundle`)."""

    trusted_keys: tuple[bytes, ...] = ()
    require_signature: bool = False
    expect_sha256: str | None = None
    #: Skip the signature entirely (only for re-signing: an old signature may be stale).
    ignore_signature: bool = False

    @classmethod
    def make(
        cls,
        trusted_keys: Iterable[str | Path | bytes] | None = None,
        require_signature: bool | None = None,
        expect_sha256: str | None = None,
    ) -> TrustPolicy:
        """Keys as PEM paths/bytes or raw 32 bytes; ``require_signature`` defaults to True
        when trusted keys are given."""
        keys = tuple(trusted_key_bytes(trusted_keys))
        if require_signature and not keys:
            raise InputError(
                "require_signature=True needs trusted_keys: a signature by a key nobody "
                "trusts attests nothing. Pass the publisher's public key (PEM)."
            )
        pin = expect_sha256.strip().lower() if expect_sha256 else None
        if pin is not None and not re.fullmatch(r"[0-9a-f]{64}", pin):
            raise InputError(f"expect_sha256 must be 64 hex digits, got {expect_sha256!r}.")
        return cls(keys, bool(keys) if require_signature is None else require_signature, pin)

    def check(self, manifest_raw: bytes, signature_raw: bytes | None, where: str
              ) -> tuple[str, SignatureCheck]:
        """The bundle digest and signature status; raises what fails, before any checksum."""
        digest = bundle_digest(manifest_raw, where)
        if self.expect_sha256 is not None and digest != self.expect_sha256:
            raise BundleSignatureError(
                f"{where}: bundle digest {digest} differs from the pinned expect_sha256 "
                f"{self.expect_sha256}: this is not the bundle you pinned (its manifest - "
                "thresholds, policy or file list - differs)."
            )
        if self.ignore_signature:
            return digest, SignatureCheck("unsigned")
        sig = check_signature(manifest_raw, signature_raw, where,
                              trusted_keys=self.trusted_keys,
                              require_signature=self.require_signature)
        return digest, sig


class Bundle:
    """An opened, checksum-verified bundle. Files are read from :attr:`root`.

    For a zip the listed files live in a private temporary folder, removed by
    :meth:`close` (or when the object is garbage collected). Use as a context manager to
    clean up promptly.
    """

    def __init__(
        self, manifest: Manifest, root: Path, source: Path, sha256: str,
        tmp: Path | None = None, signature: SignatureCheck | None = None,
    ) -> None:
        self.manifest = manifest
        self.root = root
        self.source = source
        #: The bundle digest: sha256 of the canonical manifest bytes
        #: (:func:`hccatom.bundle.signature.bundle_digest`); names the whole content, since
        #: the manifest pins every file's sha256 and the reader refuses unlisted files.
        self.sha256 = sha256
        #: What was checked of the signature (:class:`SignatureCheck`).
        self.signature = signature or SignatureCheck("unsigned")
        self._finalizer = (
            weakref.finalize(self, shutil.rmtree, tmp, True) if tmp is not None else None
        )

    @property
    def name(self) -> str:
        """The bundle's name."""
        return self.manifest.name

    @property
    def version(self) -> str:
        """The bundle's own version."""
        return self.manifest.version

    def path(self, rel: str) -> Path:
        """Absolute path of a listed bundle file or folder."""
        return self.root.joinpath(*PurePosixPath(rel).parts)

    @property
    def segmentation_dir(self) -> Path:
        """Folder of the segmentation export (what :class:`hccatom.Segmenter` opens)."""
        return self.path(self.manifest.segmentation.directory)

    def close(self) -> None:
        """Remove the extracted files of a zip bundle (no-op for a directory)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Bundle({self.name!r} {self.version}, {self.source})"


def _check_directory(root: Path, manifest: Manifest) -> None:
    listed = {f.path for f in manifest.files}
    files = bundle_tree_files(root)  # refuses links out of the bundle, FIFOs, devices
    for entry in manifest.files:
        _check_file(root, entry)
    for p in files:
        rel = p.relative_to(root).as_posix()
        if rel in (MANIFEST_NAME, SIGNATURE_NAME) or rel in listed or _ignorable(rel):
            continue
        raise BundleIntegrityError(
            f"{root}: file {rel!r} is in the bundle but not in its manifest; remove it or "
            "rebuild the bundle."
        )


def _check_file(root: Path, entry: FileEntry) -> None:
    path = root.joinpath(*PurePosixPath(entry.path).parts)
    if not path.is_file():
        raise BundleNotFoundError(
            f"{root}: the manifest lists {entry.path!r} but the file is missing; the bundle "
            "is incomplete: copy it again or rebuild it."
        )
    size = path.stat().st_size
    if size != entry.size_bytes:
        raise BundleIntegrityError(
            f"{root}: {entry.path!r} has {size} bytes, the manifest says {entry.size_bytes}; "
            "the file was changed or truncated: restore the original bundle."
        )
    with open_regular_file(path, f"{root}: bundle file {entry.path!r}",
                           error=BundleIntegrityError) as fh:  # swapped for a FIFO: refused
        digest, _ = _sha256_stream(fh)
    if digest != entry.sha256:
        raise BundleIntegrityError(
            f"{root}: checksum mismatch for {entry.path!r} (sha256 {digest[:12]}..., manifest "
            f"{entry.sha256[:12]}...): the file was modified; restore the original bundle."
        )


def _open_directory(path: Path, trust: TrustPolicy) -> Bundle:
    bundle_tree_files(path)  # before anything in it is opened (manifest, signature)
    mpath = path / MANIFEST_NAME
    if not mpath.is_file():
        raise BundleNotFoundError(
            f"{path}: no {MANIFEST_NAME} at the bundle root; is this a hccatom bundle? "
            f"Pass the folder that holds {MANIFEST_NAME} (`hccatom bundle build` writes it)."
        )
    if mpath.stat().st_size > MANIFEST_JSON_LIMITS.max_bytes:
        raise BundleFormatError(
            f"{path}: {MANIFEST_NAME} has {mpath.stat().st_size:,} bytes, more than the "
            f"{MANIFEST_JSON_LIMITS.max_bytes:,} a manifest may have; rebuild the bundle."
        )
    raw = _bundle_file(mpath, MANIFEST_JSON_LIMITS.max_bytes)
    manifest = parse_manifest(raw, str(path))
    spath = path / SIGNATURE_NAME
    digest, sig = trust.check(raw, _small_file(spath) if spath.is_file() else None, str(path))
    _check_directory(path, manifest)
    return Bundle(manifest, path, path, digest, signature=sig)


#: A signature file is a few hundred bytes; anything much larger is refused unread.
MAX_SIGNATURE_BYTES = SIGNATURE_JSON_LIMITS.max_bytes


def _too_large(where: object, size: int) -> BundleSignatureError:
    return BundleSignatureError(
        f"{where}: {SIGNATURE_NAME} has {size:,} bytes (a signature has a few hundred); "
        "refusing it. Re-sign the bundle with `hccatom bundle sign`."
    )


def _small_file(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_SIGNATURE_BYTES:
        raise _too_large(path.parent, size)
    return _bundle_file(path, MAX_SIGNATURE_BYTES)


def _bundle_file(path: Path, max_bytes: int) -> bytes:
    """A bundle folder's manifest or signature, read through the checked descriptor: a FIFO
    or device swapped in after the folder scan is refused as the scan refuses one."""
    return read_regular_file(path, f"{path.parent}: bundle file {path.name!r}",
                             error=BundleIntegrityError, max_bytes=max_bytes)


def _small_member(zf: zipfile.ZipFile, name: str, path: Path) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > MAX_SIGNATURE_BYTES:
        raise _too_large(path, info.file_size)
    with zf.open(info) as fh:
        return fh.read(MAX_SIGNATURE_BYTES + 1)  # never more, whatever the header says


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if not name or "\x00" in name:
        return "has an empty name or a NUL byte in it"
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return "is an absolute or non-POSIX path"
    if any(p == ".." for p in PurePosixPath(name).parts):
        return "escapes the bundle root with '..'"
    if info.flag_bits & 0x1:
        return "is encrypted (bundles are never encrypted)"
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        return "is a symbolic link"
    return None


def _zip_root(names: list[str]) -> str:
    """'' when manifest.json is at the zip root, 'folder/' when the zip holds one folder."""
    if MANIFEST_NAME in names:
        return ""
    tops = {n.split("/", 1)[0] for n in names if not _ignorable(n)}
    if len(tops) == 1:
        top = next(iter(tops)) + "/"
        if top + MANIFEST_NAME in names:
            return top
    return "?"


#: What zipfile raises for a damaged or crafted member (bad CRC, broken stream, an offset
#: outside the file, an unknown compression method, a garbled local header).
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError,
                    ValueError, OverflowError)


def _corrupt_member(path: Path, member: str, exc: BaseException) -> BundleIntegrityError:
    """A zip member that fails to decompress (bad CRC, broken stream, unknown method)."""
    reason = "bad CRC" if "CRC" in str(exc) else type(exc).__name__
    return BundleIntegrityError(
        f"{path}: zip member {member!r} is corrupt ({reason}); the zip was damaged in "
        "transfer or storage: copy it again or rebuild the bundle."
    )


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytes:
    try:
        with zf.open(info) as fh:
            data = fh.read(info.file_size + 1)
    except _ZIP_READ_ERRORS as exc:
        raise _corrupt_member(path, info.filename, exc) from None
    if len(data) != info.file_size:
        raise BundleIntegrityError(
            f"{path}: zip member {info.filename!r} holds {len(data):,}+ bytes but declares "
            f"{info.file_size:,}; the zip is damaged or crafted: rebuild the bundle."
        )
    return data


def _open_zip(path: Path, trust: TrustPolicy, fh: IO[bytes]) -> Bundle:
    """Open the zip bundle ``path`` from its checked, open file ``fh`` (extracted, every
    member's checksum verified)."""
    try:
        zf = zipfile.ZipFile(fh)
    except _ZIP_READ_ERRORS as exc:
        raise BundleFormatError(f"{path}: not a readable zip file ({exc}).") from exc
    with zf:
        infos = zf.infolist()
        for info in infos:
            problem = _member_problem(info)
            if problem:
                raise BundleIntegrityError(
                    f"{path}: zip member {info.filename!r} {problem}; refusing to open this "
                    "bundle. Rebuild it with `hccatom bundle build`."
                )
        names = [i.filename for i in infos if not i.is_dir()]
        if len(names) != len(set(names)):
            raise BundleIntegrityError(f"{path}: the zip lists a member twice; refusing it.")
        prefix = _zip_root(names)
        if prefix == "?":
            raise BundleNotFoundError(
                f"{path}: no {MANIFEST_NAME} at the zip root (or in its single top folder); "
                "is this a hccatom bundle?"
            )
        minfo = zf.getinfo(prefix + MANIFEST_NAME)
        if minfo.file_size > MANIFEST_JSON_LIMITS.max_bytes:
            raise BundleFormatError(
                f"{path}: {MANIFEST_NAME} declares {minfo.file_size:,} bytes, more than the "
                f"{MANIFEST_JSON_LIMITS.max_bytes:,} a manifest may have; rebuild the bundle."
            )
        raw = _read_member(zf, minfo, path)
        manifest = parse_manifest(raw, str(path))
        sig_member = prefix + SIGNATURE_NAME
        bundle_sha256, sig = trust.check(
            raw, _small_member(zf, sig_member, path) if sig_member in names else None,
            str(path),
        )
        listed = {prefix + f.path: f for f in manifest.files}
        for n in names:
            if (n not in (prefix + MANIFEST_NAME, sig_member) and n not in listed
                    and not _ignorable(n)):
                raise BundleIntegrityError(
                    f"{path}: zip member {n!r} is not in the manifest; refusing it."
                )
        by_name = {i.filename: i for i in infos}
        tmp = Path(tempfile.mkdtemp(prefix="hccatom-bundle-"))
        try:
            for member, entry in listed.items():
                found = by_name.get(member)
                if found is None:
                    raise BundleNotFoundError(
                        f"{path}: the manifest lists {entry.path!r} but the zip lacks it; "
                        "the bundle is incomplete: rebuild it."
                    )
                if found.file_size != entry.size_bytes:
                    raise BundleIntegrityError(
                        f"{path}: {entry.path!r} has {found.file_size} bytes, the manifest says "
                        f"{entry.size_bytes}; the file was changed: restore the original."
                    )
                dest = tmp.joinpath(*PurePosixPath(entry.path).parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with dest.open("wb") as out:
                    try:
                        with zf.open(found) as src:
                            digest, _ = _sha256_stream(src, out)
                    except _ZIP_READ_ERRORS as exc:
                        raise _corrupt_member(path, entry.path, exc) from None
                if digest != entry.sha256:
                    raise BundleIntegrityError(
                        f"{path}: checksum mismatch for {entry.path!r} (sha256 "
                        f"{digest[:12]}..., manifest {entry.sha256[:12]}...): the file was "
                        "modified; restore the original bundle."
                    )
            (tmp / MANIFEST_NAME).write_bytes(raw)
            if sig_member in names:
                (tmp / SIGNATURE_NAME).write_bytes(_small_member(zf, sig_member, path))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Bundle(manifest, tmp, path, bundle_sha256, tmp=tmp, signature=sig)


def load_bundle(
    path: str | Path | Bundle,
    *,
    trusted_keys: Iterable[str | Path | bytes] | None = None,
    require_signature: bool | None = None,
    expect_sha256: str | None = None,
    trust: TrustPolicy | None = None,
) -> Bundle:
    """Open a bundle directory or zip; validate the manifest; check its signature and
    digest; verify every checksum.

    ``trusted_keys``: Ed25519 public keys (PEM paths, PEM bytes or raw 32 bytes); the bundle
    must then be signed by one of them (an unsigned bundle is refused).
    ``require_signature=True`` states that explicitly; it needs ``trusted_keys``, since a
    signature by a key nobody trusts attests nothing. ``expect_sha256``: the bundle
    digest (:func:`hccatom.bundle.signature.bundle_digest`) the caller pinned. A signature
    file that is present is always checked against the manifest.

    Raises :class:`BundleNotFoundError` (no such path, no manifest, a listed file missing),
    :class:`BundleSignatureError` (unsigned where required, bad signature, untrusted key,
    digest differs from the pin), :class:`BundleIntegrityError` (checksum or size mismatch,
    unlisted file, unsafe zip member), :class:`BundleVersionError` (unknown schema major
    version) or :class:`BundleFormatError` (the manifest does not validate). ``trust``: a
    ready :class:`TrustPolicy` instead of the three arguments.
    """
    if trust is None:
        trust = TrustPolicy.make(trusted_keys, require_signature, expect_sha256)
    if isinstance(path, Bundle):  # already open: apply what the caller requires now, if any
        if trust == TrustPolicy():
            return path
        raw = _bundle_file(path.root / MANIFEST_NAME, MANIFEST_JSON_LIMITS.max_bytes)
        spath = path.root / SIGNATURE_NAME
        _, path.signature = trust.check(
            raw, _small_file(spath) if spath.is_file() else None, str(path.source))
        return path
    p = Path(path).expanduser()
    if not p.exists() and not p.is_symlink():
        raise BundleNotFoundError(
            f"{p}: no such bundle (directory or .zip). Pass the folder or .zip that "
            "`hccatom bundle build` wrote; the packaged demo bundle is at "
            "hccatom.demo.demo_bundle_path().")
    if p.is_dir():
        return _open_directory(check_input_folder(p, "bundle", error=BundleFormatError), trust)
    check_input_file(p, "bundle", error=BundleFormatError, max_bytes=MAX_BUNDLE_ZIP_BYTES)
    with open_regular_file(p, "bundle", error=BundleFormatError,
                           max_bytes=MAX_BUNDLE_ZIP_BYTES) as fh:  # no stat-then-open race
        if zipfile.is_zipfile(fh):
            return _open_zip(p, trust, fh)
    raise BundleFormatError(f"{p}: a bundle is a directory or a .zip file; this is neither. "
                            "Pass the bundle folder (or its .zip), not a file inside it.")


def iter_model_files(bundle: Bundle) -> Iterator[tuple[FileEntry, Path]]:
    """Every listed ``.onnx`` file with its path on disk."""
    for f in bundle.manifest.files:
        if f.path.endswith(".onnx"):
            yield f, bundle.path(f.path)


__all__ = [
    "MANIFEST_NAME",
    "Bundle",
    "BundleError",
    "TrustPolicy",
    "iter_model_files",
    "load_bundle",
    "parse_manifest",
    "sha256_file",
]
