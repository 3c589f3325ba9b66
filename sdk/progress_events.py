"""Progress events: what long steps report while they run (no dependencies).

:meth:`hccatom.Predictor.recommend` reports its stages and tile counts with them, and
:func:`hccatom.dicom.index_study` its files read and series found;
:class:`hccatom.cli_progress.StderrProgress` shows them on the command line. Kept apart from
:mod:`hccatom.predictor` so that light modules can report without importing the engines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ProgressCallback", "ProgressEvent"]


@dataclass(frozen=True)
class ProgressEvent:
    """A step of one recommendation: ``stage`` started (done 0) or advanced/finished."""

    stage: str
    done: int
    total: int
    elapsed_s: float
    detail: str = ""
    """What else the step has to say (e.g. ``"3 series"`` while a study is indexed)."""


ProgressCallback = Callable[[ProgressEvent], None]
