"""Errors of site validation (all subclasses of :class:`hccatom.errors.InputError`)."""

from __future__ import annotations

from hccatom.errors import InputError


class StatisticsInputError(InputError):
    """A statistic got unusable data (too few cases, labels not 0/1, lengths differ)."""


class CohortInputError(InputError):
    """The cohort table is unreadable or has bad rows.

    ``problems`` lists every problem at once as ``(line, column, message)``; ``line`` is the
    line of the file as a spreadsheet numbers it (header = line 1), or None for a problem of
    the whole table.
    """

    def __init__(self, message: str,
                 problems: list[tuple[int | None, str, str]] | None = None) -> None:
        lines = [message] + [
            f"  line {r if r is not None else '-'}, {c}: {m}" for r, c, m in (problems or [])
        ]
        super().__init__("\n".join(lines))
        self.problems: list[tuple[int | None, str, str]] = list(problems or [])


__all__ = ["CohortInputError", "StatisticsInputError"]
