"""hccatom: SELECTION/ATOM treatment-planning inference for unresectable HCC.

Research use only: not a medical device, not validated for clinical decisions.
"""

from hccatom.clinical import ClinicalVariables
from hccatom.ct_io import read_ct
from hccatom.errors import (
    BundleError,
    ClinicalInputError,
    CTInputError,
    EngineUnavailableError,
    HccatomError,
    InputError,
    SegmentationError,
)
from hccatom.predictor import CTStudy, Predictor
from hccatom.recommendation import Recommendation
from hccatom.segmentation import Segmenter
from hccatom.volume import Volume

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "CTInputError",
    "CTStudy",
    "ClinicalInputError",
    "ClinicalVariables",
    "EngineUnavailableError",
    "HccatomError",
    "InputError",
    "Predictor",
    "Recommendation",
    "SegmentationError",
    "Segmenter",
    "Volume",
    "__version__",
    "read_ct",
]
