"""The one-page visual report of a recommendation (``report`` extra: matplotlib).

``rec.report("out.pdf")`` / ``hccatom recommend ... --report out.pdf`` (also ``.png``).
See :mod:`hccatom.report.page` for what the page shows. The DICOM Secondary Capture
(``rec.to_dicom``) carries the same page as pixels (:func:`render_pixels`): one layout.
"""

from hccatom.report.page import (
    ReportUnavailableError,
    render_figure,
    render_pixels,
    write_report,
)

__all__ = ["ReportUnavailableError", "render_figure", "render_pixels", "write_report"]
