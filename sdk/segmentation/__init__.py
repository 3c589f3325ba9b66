"""nnU-Net v2 segmentation without torch: the spec, the pipeline functions and ``Segmenter``.

Runtime layer: numpy, scipy and :mod:`hccatom.engines` only.
"""

from hccatom.segmentation.pipeline import (
    NonFiniteLogitsError,
    Preprocessed,
    logits_to_probabilities,
    preprocess,
    sliding_window_logits,
    softmax,
)
from hccatom.segmentation.resampling import (
    compute_new_shape,
    resample,
    separate_z_axis,
    skimage_resize,
)
from hccatom.segmentation.segmenter import Segmenter
from hccatom.segmentation.sliding_window import (
    compute_steps,
    gaussian_importance,
    mirror_combinations,
    pad_to_patch,
    tile_starts,
)
from hccatom.segmentation.spec import (
    SPEC_FILENAME,
    CTIntensityStats,
    FoldModel,
    LabelMeaning,
    ResamplingSpec,
    SegmentationSpec,
)

__all__ = [
    "SPEC_FILENAME",
    "CTIntensityStats",
    "FoldModel",
    "LabelMeaning",
    "NonFiniteLogitsError",
    "Preprocessed",
    "ResamplingSpec",
    "SegmentationSpec",
    "Segmenter",
    "compute_new_shape",
    "compute_steps",
    "gaussian_importance",
    "logits_to_probabilities",
    "mirror_combinations",
    "pad_to_patch",
    "preprocess",
    "resample",
    "separate_z_axis",
    "skimage_resize",
    "sliding_window_logits",
    "softmax",
    "tile_starts",
]
