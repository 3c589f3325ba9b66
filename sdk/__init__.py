"""hccatom: SELECTION/ATOM treatment-planning inference for unresectable HCC.

Research use only: not a medical device, not validated for clinical decisions.

The public names below are imported on first use (PEP 562), so ``import hccatom`` and the
command line start without loading SimpleITK, SciPy or ONNX Runtime until a command needs
them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hccatom.errors import (
    BundleError,
    ClinicalInputError,
    CTInputError,
    EngineUnavailableError,
    HccatomError,
    InputError,
    SegmentationError,
)

if TYPE_CHECKING:
    from hccatom.clinical import ClinicalVariables
    from hccatom.ct_io import read_ct
    from hccatom.predictor import CTStudy, Predictor
    from hccatom.recommendation import Recommendation
    from hccatom.segmentation import Segmenter
    from hccatom.volume import Volume

__version__ = "0.1.0"

#: Public name -> the module that defines it (imported on first access).
_LAZY: dict[str, str] = {
    "ClinicalVariables": "hccatom.clinical",
    "read_ct": "hccatom.ct_io",
    "CTStudy": "hccatom.predictor",
    "Predictor": "hccatom.predictor",
    "Recommendation": "hccatom.recommendation",
    "Segmenter": "hccatom.segmentation",
    "Volume": "hccatom.volume",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hccatom' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
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
