"""DICOM in and out (the ``dicom`` extra: pydicom, highdicom).

* In: :func:`index_study` reads a study folder's headers into series;
  :func:`find_phases` picks the arterial and portal-venous series with documented rules,
  reasons and a confidence (:mod:`hccatom.dicom.phases`).
* Out: :func:`write_dicom` writes DICOM SEG (liver, tumour per phase, on the source grid),
  a TID 1500 SR and a Secondary Capture report into the study
  (:mod:`hccatom.dicom.outputs`).

Messages and logs never hold patient attributes or free-text descriptions; see
:mod:`hccatom.dicom.errors`.
"""

from __future__ import annotations

import importlib
from typing import Any

from hccatom.dicom.errors import (
    DicomExtraMissingError,
    DicomStudyError,
    PhaseAmbiguityError,
    PhaseConflictError,
    PhaseSelectionError,
)

# Everything else loads on first use, so that ``import hccatom.dicom`` works (and says what
# to install) where the extra is absent.
_LAZY = {
    "InstanceInfo": "hccatom.dicom.index",
    "SeriesInfo": "hccatom.dicom.index",
    "StudyIndex": "hccatom.dicom.index",
    "index_study": "hccatom.dicom.index",
    "PhaseChoice": "hccatom.dicom.phases",
    "PhaseSelection": "hccatom.dicom.phases",
    "find_phases": "hccatom.dicom.phases",
}


def require_extra() -> None:
    """Raise :class:`DicomExtraMissingError` unless pydicom and highdicom import."""
    try:
        importlib.import_module("pydicom")
        importlib.import_module("highdicom")
    except ModuleNotFoundError as exc:
        raise DicomExtraMissingError(
            f"DICOM input/output needs the dicom extra ({exc.name} is missing): "
            "pip install 'hccatom[dicom]'."
        ) from None


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hccatom.dicom' has no attribute {name!r}")
    require_extra()
    return getattr(importlib.import_module(module), name)


__all__ = [
    "DicomExtraMissingError",
    "DicomStudyError",
    "InstanceInfo",
    "PhaseAmbiguityError",
    "PhaseChoice",
    "PhaseConflictError",
    "PhaseSelection",
    "PhaseSelectionError",
    "SeriesInfo",
    "StudyIndex",
    "find_phases",
    "index_study",
    "require_extra",
]
