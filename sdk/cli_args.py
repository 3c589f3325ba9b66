"""Command-line values shared by ``hccatom`` and ``hccatom export``: ``COHORT=PATH`` lists."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hccatom.errors import InputError


def cohort_paths(items: Sequence[str], option: str, example: str) -> dict[str, Path]:
    """``["TACE=dir", ...]`` -> ``{"TACE": Path("dir"), ...}`` (cohort upper-cased).

    An item without ``=`` or a path, or a cohort named twice, is an :class:`InputError`
    naming ``option`` and showing ``example`` (e.g. ``TACE=DIR``). Which cohorts must be
    present is the caller's rule.
    """
    out: dict[str, Path] = {}
    for item in items:
        cohort, sep, value = item.partition("=")
        if not sep or not value:
            raise InputError(f"{option} entries look like {example}, got {item!r}.")
        key = cohort.strip().upper()
        if key in out:
            raise InputError(f"{option} names cohort {key} twice.")
        out[key] = Path(value)
    return out
