"""Whether the segmentation model sees HU-windowed CT: resolved explicitly at bundle build.

The paper windows CT to [-50, 350] HU before segmentation; nnU-Net normalises raw HU itself,
and a model trained on raw HU must not see windowed CT (nor the reverse). The choice is a
property of the trained segmentation model, so ``hccatom bundle build`` takes it from (in
order) its ``--window-before-segmentation`` flag, the ``--preprocessing`` JSON when that
sets the field, or the segmentation spec (``hccatom export nnunet`` records it); sources
that disagree, or no source at all, are an :class:`~hccatom.errors.InputError`. No silent
default for a bundle built from a site's model.
"""

from __future__ import annotations

from hccatom.errors import InputError
from hccatom.preprocess import PreprocessSpec
from hccatom.segmentation.spec import SegmentationSpec

FIELD = "apply_window_before_segmentation"


def _word(value: bool) -> str:
    return "windowed CT" if value else "raw HU"


def resolve_window_before_segmentation(
    preprocessing: PreprocessSpec | None,
    segmentation: SegmentationSpec,
    flag: bool | None,
) -> PreprocessSpec:
    """The preprocessing spec with ``apply_window_before_segmentation`` set from its sources.

    ``flag``: the CLI flag (None when not given). ``preprocessing``: the site's spec (None:
    the defaults); its field counts as a source only when it was set explicitly.
    """
    stated: dict[str, bool] = {}
    if flag is not None:
        stated["--window-before-segmentation flag"] = flag
    if preprocessing is not None and FIELD in preprocessing.model_fields_set:
        stated[f"--preprocessing {FIELD}"] = getattr(preprocessing, FIELD)
    if segmentation.window_before_segmentation is not None:
        stated["segmentation spec (hccatom export nnunet)"] = (
            segmentation.window_before_segmentation
        )
    if not stated:
        raise InputError(
            "The segmentation export does not record whether its model was trained on CT "
            "clipped to the HU window or on raw HU. Pass --window-before-segmentation (the "
            "paper windows to [-50, 350] HU before segmentation) or "
            "--no-window-before-segmentation (nnU-Net's own normalisation of raw HU, the usual "
            "case), or re-export with `hccatom export nnunet --[no-]window-before-segmentation`."
        )
    values = set(stated.values())
    if len(values) > 1:
        listing = "; ".join(f"{k}: {_word(v)}" for k, v in stated.items())
        raise InputError(
            f"Conflicting statements of what the segmentation model was trained on ({listing}). "
            "Make them agree."
        )
    value = values.pop()
    base = preprocessing if preprocessing is not None else PreprocessSpec.model_validate({})
    return PreprocessSpec.model_validate({**base.model_dump(), FIELD: value})


__all__ = ["resolve_window_before_segmentation"]
