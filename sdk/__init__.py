"""hccatom: SELECTION/ATOM treatment-planning inference for unresectable HCC.

Research use only: not a medical device, not validated for clinical decisions.

The public names below are loaded lazily (PEP 562): ``import hccatom.atom`` or
``import hccatom.errors`` loads neither SimpleITK, SciPy, ONNX Runtime nor the segmentation
runtime; ``hccatom.Predictor`` (or ``from hccatom import Predictor``) loads what it needs on
first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names a static checker sees; at runtime __getattr__ loads them
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

__version__ = "0.4.0"

#: Public name -> the module that defines it.
_LAZY: dict[str, str] = {
    "BundleError": "hccatom.errors",
    "CTInputError": "hccatom.errors",
    "ClinicalInputError": "hccatom.errors",
    "EngineUnavailableError": "hccatom.errors",
    "HccatomError": "hccatom.errors",
    "InputError": "hccatom.errors",
    "SegmentationError": "hccatom.errors",
    "CTStudy": "hccatom.predictor",
    "Predictor": "hccatom.predictor",
    "ClinicalVariables": "hccatom.clinical",
    "Recommendation": "hccatom.recommendation",
    "Segmenter": "hccatom.segmentation",
    "Volume": "hccatom.volume",
    "read_ct": "hccatom.ct_io",
}


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hccatom' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
