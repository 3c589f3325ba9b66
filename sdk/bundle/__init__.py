"""Model bundles: the versioned manifest, the checksum-verifying reader, verify and info.

A bundle is a directory (or a zip of one) with ``manifest.json`` at its root. The writer is
build-time code (:mod:`hccatom.export.bundle_writer`); everything here is runtime.
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
from hccatom.bundle.reader import MANIFEST_NAME, Bundle, load_bundle, sha256_file
from hccatom.bundle.verify import Check, VerifyReport, verify_bundle

__all__ = [
    "MANIFEST_NAME",
    "RESEARCH_USE_ONLY",
    "SCHEMA_VERSION",
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
    "VerifyReport",
    "bundle_summary",
    "load_bundle",
    "sha256_file",
    "verify_bundle",
]
