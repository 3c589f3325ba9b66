"""hccatom: SELECTION/ATOM treatment-planning inference for unresectable HCC.

Research use only: not a medical device, not validated for clinical decisions.
"""

from hccatom.errors import (
    BundleError,
    ClinicalInputError,
    CTInputError,
    EngineUnavailableError,
    HccatomError,
    InputError,
    SegmentationError,
)
from hccatom.volume import Volume

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "CTInputError",
    "ClinicalInputError",
    "EngineUnavailableError",
    "HccatomError",
    "InputError",
    "SegmentationError",
    "Volume",
    "__version__",
]
