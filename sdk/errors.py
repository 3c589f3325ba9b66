"""The one error hierarchy of hccatom.

Every error the SDK raises on purpose derives from :class:`HccatomError`, so an embedding
application can catch one type. Subclasses say *what kind* of thing was wrong (the input,
the bundle, the engine, the segmentation) so that callers and the CLI can react (exit codes,
messages) without parsing text. Messages say what was wrong, where, and what to do; they
never contain patient identifiers.

This module imports nothing from the package so that every layer (``hccatom.engines``,
``hccatom.atom``) can derive its errors from the same base without import cycles.
"""

from __future__ import annotations


class HccatomError(Exception):
    """Base class of every error raised by hccatom on purpose."""

    phase: str | None = None
    """The CT phase ("arterial" or "portal") the error arose in, where it did."""

    def in_phase(self, phase: str) -> HccatomError:
        """Record the phase and put it in front of the message (once); returns self."""
        if self.phase is None:
            self.phase = phase
            if self.args and isinstance(self.args[0], str):
                self.args = (f"{phase} phase: {self.args[0]}", *self.args[1:])
        return self


# --- bad input -------------------------------------------------------------------------
class ExtraMissingError(HccatomError):
    """An optional extra (export, dicom, report, validate, serve) is not installed; the
    message names the ``pip install`` line. Raised before any work starts where possible."""


class InputError(HccatomError, ValueError):
    """The caller's input is wrong (CLI exit code 2)."""


class CTInputError(InputError):
    """A CT source cannot be read or does not look like a CT volume in Hounsfield units."""


class SamePhaseError(CTInputError):
    """The arterial and portal inputs are the same series, file or pixel data."""


class NoBodyError(CTInputError):
    """The CT holds (almost) no tissue: all air, blank, or not a body scan."""


class ClinicalInputError(InputError):
    """Clinical variables are missing, unknown, out of range or in the wrong unit.

    ``problems`` lists every bad field at once as ``(field, message)`` pairs.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems: list[tuple[str, str]] = list(problems or [])


class ScoreInputError(InputError):
    """Scores or thresholds given to ATOM are missing, not finite or outside [0, 1]."""


# --- bad bundle ------------------------------------------------------------------------
class BundleError(HccatomError):
    """A model bundle is missing, tampered with, malformed or incompatible (exit code 3)."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """The bundle path, its manifest or a file the manifest lists does not exist."""


class BundleIntegrityError(BundleError):
    """A bundle file's sha256 differs from the manifest, or a zip member escapes the root."""


class BundleSignatureError(BundleIntegrityError):
    """A bundle's signature is missing where required, invalid, by an untrusted key, or its
    digest differs from the one pinned (``expect_sha256``)."""


class BundleVersionError(BundleError):
    """The bundle's schema major version is not one this runtime reads."""


class ExplainUnavailableError(BundleError):
    """The bundle has no explain graphs (export with ``hccatom export selection --explain``)."""


class BundleFormatError(BundleError):
    """The manifest or a spec inside the bundle does not validate."""


# --- engines -----------------------------------------------------------------------------
class EngineError(HccatomError):
    """A model file cannot be run."""


class EngineUnavailableError(EngineError):
    """The requested device or execution provider is not available here (exit code 4)."""


class ModelLoadError(EngineError, BundleError):
    """A model file is present (checksum matching or not) but ONNX Runtime cannot load it:
    corrupt, not a model, or using operators this runtime lacks - a bad bundle (exit code 3)."""


class EngineInputError(EngineError, ValueError):
    """Feeds given to an engine miss an input or have the wrong dtype or shape."""


# --- resources ---------------------------------------------------------------------------
class TooLargeError(HccatomError):
    """A step would need more memory than the budget allows (see :mod:`hccatom.memory_budget`).

    ``needed_bytes`` and ``budget_bytes`` say how large; the message says what to do.
    """

    def __init__(self, message: str, needed_bytes: int = 0, budget_bytes: int = 0) -> None:
        super().__init__(message)
        self.needed_bytes = int(needed_bytes)
        self.budget_bytes = int(budget_bytes)


class InputTooLargeError(TooLargeError, CTInputError):
    """A CT input (or a step on it) needs more memory than the budget (exit code 2)."""


class BundleTooLargeError(TooLargeError, BundleError):
    """A bundle's values (patch size, slice thickness) ask for more memory than the budget
    (exit code 3)."""


# --- segmentation ----------------------------------------------------------------------
class SegmentationError(HccatomError):
    """Segmentation finished but its result cannot be used downstream."""


class NoLiverError(SegmentationError):
    """No liver voxels were found where the chain needs a liver."""


class NoTumourError(SegmentationError):
    """No tumour voxels were found where the chain needs a tumour."""


class ImplausibleLiverError(SegmentationError):
    """The segmented liver's volume is outside the bundle's plausible range."""


# --- build time --------------------------------------------------------------------------
class ExportError(HccatomError):
    """Converting or checking a trained model failed (build time only)."""


class ParityError(ExportError):
    """An exported model does not reproduce its source within the tolerance."""


class CheckpointError(ExportError):
    """A checkpoint does not match the model it is loaded into."""


__all__ = [
    "BundleError",
    "BundleFormatError",
    "BundleIntegrityError",
    "BundleNotFoundError",
    "BundleSignatureError",
    "BundleTooLargeError",
    "BundleVersionError",
    "CTInputError",
    "CheckpointError",
    "ClinicalInputError",
    "EngineError",
    "EngineInputError",
    "EngineUnavailableError",
    "ExplainUnavailableError",
    "ExportError",
    "ExtraMissingError",
    "HccatomError",
    "ImplausibleLiverError",
    "InputError",
    "InputTooLargeError",
    "ModelLoadError",
    "NoBodyError",
    "NoLiverError",
    "NoTumourError",
    "ParityError",
    "SamePhaseError",
    "ScoreInputError",
    "SegmentationError",
    "TooLargeError",
]
