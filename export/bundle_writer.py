"""Moved: the bundle writer is runtime code now, :mod:`hccatom.bundle.writer` (no torch).

Kept so that ``from hccatom.export.bundle_writer import build_bundle`` keeps working.
"""

from hccatom.bundle.writer import (
    build_bundle,
    find_selection_export,
    parse_thresholds,
    write_zip,
)

__all__ = ["build_bundle", "find_selection_export", "parse_thresholds", "write_zip"]
