"""Model bundles: the versioned manifest, the checksum-verifying reader, verify and info.

A bundle is a directory (or a zip of one) with ``manifest.json`` at its root and optionally
a detached Ed25519 signature (:mod:`hccatom.bundle.signature`). Everything here runs without
torch: the writer (:mod:`hccatom.bundle.writer`, ``hccatom bundle build``) and the signer
(:mod:`hccatom.bundle.signer`) included; import those two where needed (not re-exported, so
loading a bundle does not import them).
"""

from hccatom.bundle.info import bundle_summary
from hccatom.bundle.manifest import (
    RESEARCH_USE_ONLY,
    SCHEMA_VERSION,
    SUPPORTED_MAJOR,
    FileEntry,
    Manifest,
    Provenance,
    SegmentationSection,
    SelectionIO,
    SelectionModel,
    SelectionSpec,
)
from hccatom.bundle.reader import (
    MANIFEST_NAME,
    Bundle,
    TrustPolicy,
    load_bundle,
    sha256_file,
)
from hccatom.bundle.signature import SIGNATURE_NAME, SignatureCheck, bundle_digest
from hccatom.bundle.verify import Check, VerifyReport, verify_bundle

__all__ = [
    "MANIFEST_NAME",
    "RESEARCH_USE_ONLY",
    "SCHEMA_VERSION",
    "SIGNATURE_NAME",
    "SUPPORTED_MAJOR",
    "Bundle",
    "Check",
    "FileEntry",
    "Manifest",
    "Provenance",
    "SegmentationSection",
    "SelectionIO",
    "SelectionModel",
    "SelectionSpec",
    "SignatureCheck",
    "TrustPolicy",
    "VerifyReport",
    "bundle_digest",
    "bundle_summary",
    "load_bundle",
    "sha256_file",
    "verify_bundle",
]
