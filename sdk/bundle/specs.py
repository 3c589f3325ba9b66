"""The specs other stages own, as the bundle stores them.

The CT preprocessing spec (:mod:`hccatom.preprocess`), the clinical encoding
(:mod:`hccatom.clinical_encoding`) and the segmentation spec
(:mod:`hccatom.segmentation.spec`) are defined by their stages; the manifest embeds them so a
bundle is the single source of truth for every value a trained model depends on. This module
is the one place the bundle imports them from.
"""

from __future__ import annotations

from hccatom.clinical_encoding import ClinicalEncoding
from hccatom.preprocess import PreprocessSpec
from hccatom.safety.limits import SafetyLimits
from hccatom.segmentation.spec import SegmentationSpec

__all__ = ["ClinicalEncoding", "PreprocessSpec", "SafetyLimits", "SegmentationSpec"]
