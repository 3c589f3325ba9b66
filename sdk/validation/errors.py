"""Errors of site validation (all subclasses of :class:`hccatom.errors.InputError`)."""

from __future__ import annotations

from hccatom.errors import InputError


class StatisticsInputError(InputError):
    """A statistic got unusable data (too few cases, labels not 0/1, lengths differ)."""


class CohortInputError(InputError):
    """The cohort table is unreadable or has bad rows.

    ``problems`` lists every problem at once as ``(row, column, message)``; ``row`` is the
    1-based data row number (the header is row 0), or None for a table-level problem.
    """

    def __init__(self, message: str,
                 problems: list[tuple[int | None, str, str]] | None = None) -> None:
        lines = [message] + [
            f"  row {r if r is not None else '-'}, {c}: {m}" for r, c, m in (problems or [])
        ]
        super().__init__("\n".join(lines))
        self.problems: list[tuple[int | None, str, str]] = list(problems or [])


__all__ = ["CohortInputError", "StatisticsInputError"]
