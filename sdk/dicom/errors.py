"""Typed errors of :mod:`hccatom.dicom` (all :class:`~hccatom.errors.InputError`, exit code 2).

What an error *message* may contain (it ends up in logs and terminals): series numbers,
Series Instance UIDs (needed to choose a series), slice counts, thickness, modality,
image type, times relative to the first series of the study in seconds (no dates, no clock
times), and the phase *keywords* recognised in a description. It never contains the free
text of Series Description or Protocol Name (it can carry names or other PHI), nor any
patient attribute. The full candidate list, raw descriptions and times included, is on the
exception object (``exc.candidates``) for a caller's own user interface.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from hccatom.errors import ExtraMissingError, InputError

if TYPE_CHECKING:
    from hccatom.dicom.index import SeriesInfo


class DicomStudyError(InputError):
    """A DICOM study folder cannot be used (nothing readable, no CT, missing tags)."""


class PhaseSelectionError(DicomStudyError):
    """The arterial and portal-venous series cannot be chosen automatically.

    ``candidates`` holds the eligible series (with raw descriptions and times, for the
    caller's UI; the message itself is sanitised, see the module doc).
    """

    def __init__(self, message: str, candidates: Sequence[SeriesInfo] = ()) -> None:
        super().__init__(message)
        self.candidates: list[SeriesInfo] = list(candidates)


class PhaseAmbiguityError(PhaseSelectionError):
    """Several series fit one phase equally well (or none fits): choose explicitly."""


class PhaseConflictError(PhaseSelectionError):
    """The two chosen phases are the same series or hold identical pixel data."""


class DicomExtraMissingError(InputError, ExtraMissingError):
    """pydicom/highdicom are not installed: ``pip install 'hccatom[dicom]'``."""


@contextmanager
def no_phi_warnings() -> Iterator[None]:
    """Silence library warnings that quote patient attributes (highdicom's person-name
    check prints the name itself), so nothing of the patient reaches logs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*person name.*")
        warnings.filterwarnings("ignore", message=r".*PersonName.*")
        yield


__all__ = [
    "DicomExtraMissingError",
    "DicomStudyError",
    "PhaseAmbiguityError",
    "PhaseConflictError",
    "PhaseSelectionError",
    "no_phi_warnings",
]
