"""The two contrast phases the chain reads: one type name and their fixed order.

Every module that speaks of a phase by name (the recommendation, explanations, DICOM phase
selection, the predictor) imports ``Phase`` and ``PHASES`` from here. The module imports
nothing of ours, so any layer may use it without an import cycle or a heavy load.
"""

from __future__ import annotations

from typing import Final, Literal

Phase = Literal["arterial", "portal"]
"""A contrast phase of the CT study: arterial or portal venous."""

PHASES: Final[tuple[Phase, Phase]] = ("arterial", "portal")
"""The phases in the order the chain runs and reports them."""
