"""Safety signals in every result: bundle limits, typed errors and structured flags.

* :mod:`.limits` - :class:`SafetyLimits`, the manifest's optional ``safety`` section.
* :mod:`.image_checks` - same-series, no-body, liver-volume and no-tumour errors; tumour
  volume, one-phase, distance, confidence and synthetic-input flags.
* :mod:`.clinical_checks` - outside-the-training-population and consistency flags.

``docs/safety.md`` lists every limit, its default and what each flag means.
"""

from __future__ import annotations

from hccatom.recommendation import QualityFlag
from hccatom.safety.clinical_checks import (
    child_pugh_range,
    consistency_flags,
    population_flags,
    training_population,
    training_population_from_json,
)
from hccatom.safety.image_checks import (
    SYNTHETIC_PHANTOM_NOTE,
    SYNTHETIC_WARNING,
    PhaseMeasures,
    check_body,
    check_distinct_pixels,
    check_distinct_sources,
    check_segmentation,
    image_flags,
    is_synthetic_phantom,
    measure_phase,
    pixel_fingerprint,
    synthetic_input_flags,
)
from hccatom.safety.limits import (
    DEFAULT_SAFETY_LIMITS,
    SafetyLimits,
    TrainingPopulation,
    VariableRange,
)


def default_limits_flags(bundle_has_limits: bool, overridden: bool = False
                         ) -> list[QualityFlag]:
    """The note that the limits in force are not the bundle's: defaults, or the caller's."""
    if overridden:
        return [QualityFlag(
            code="safety_limits_overridden", severity="info",
            message="the safety limits in force were given by the caller, not taken from "
            "the bundle (see docs/safety.md).")]
    if bundle_has_limits:
        return []
    return [QualityFlag(
        code="safety_limits_default", severity="info",
        message="the bundle carries no safety limits; hccatom's defaults were used "
        "(see docs/safety.md).")]


__all__ = [
    "DEFAULT_SAFETY_LIMITS",
    "SYNTHETIC_PHANTOM_NOTE",
    "SYNTHETIC_WARNING",
    "PhaseMeasures",
    "SafetyLimits",
    "TrainingPopulation",
    "VariableRange",
    "check_body",
    "check_distinct_pixels",
    "check_distinct_sources",
    "check_segmentation",
    "child_pugh_range",
    "consistency_flags",
    "default_limits_flags",
    "image_flags",
    "is_synthetic_phantom",
    "measure_phase",
    "pixel_fingerprint",
    "population_flags",
    "synthetic_input_flags",
    "training_population",
    "training_population_from_json",
]
