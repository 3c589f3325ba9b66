"""The one-page visual report of a recommendation (``report`` extra: matplotlib).

``rec.report("out.pdf")`` / ``hccatom recommend ... --report out.pdf`` (also ``.png``).
See :mod:`hccatom.report.page` for what the page shows.
"""

from hccatom.report.page import ReportUnavailableError, render_figure, write_report

__all__ = ["ReportUnavailableError", "render_figure", "write_report"]
