"""``SegmentationSpec``: the nnU-Net v2 plan values the segmentation runtime needs (only those).

Written by ``hccatom export nnunet`` next to the ONNX files (``segmentation_spec.json``) and
embedded in bundles. Every value comes from the model folder (``plans.json``,
``dataset.json``, the checkpoints); the runtime hard-codes none of them.

Axis conventions are nnU-Net's: the image array is what nnU-Net's ``SimpleITKIO`` reads,
``(z, y, x)`` with spacing ``(z, y, x)`` — the same as :class:`hccatom.Volume`. Lists that
nnU-Net stores *after* ``transpose_forward`` (``patch_size``, ``target_spacing_mm``, the
mirror axes) are kept in that transposed order, exactly as in ``plans.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from hccatom.errors import BundleFormatError
from hccatom.model_base import FrozenModel, without_absent
from hccatom.safe_json import JSONLimitError, JSONLimits, load_limited
from hccatom.segmentation.orientation import is_code
from hccatom.segmentation.postprocessing import Postprocessing, check_mappable

SPEC_FILENAME = "segmentation_spec.json"
SCHEMA = "hccatom.segmentation-spec/1"
SPEC_JSON_LIMITS = JSONLimits(max_bytes=4 << 20, max_depth=32, max_number_chars=40)
"""A spec is a few kB (a five-member ensemble with a cascade stays far under 1 MB)."""


class CTIntensityStats(FrozenModel):
    """Foreground intensity statistics of the training set (HU), used by ``CTNormalization``.

    Normalised value = (clip(HU, percentile_00_5, percentile_99_5) - mean) / max(std, 1e-8).
    """

    mean: float
    std: float
    percentile_00_5: float = Field(description="Lower clip bound, HU.")
    percentile_99_5: float = Field(description="Upper clip bound, HU.")

    @model_validator(mode="after")
    def _bounds(self) -> CTIntensityStats:
        if self.percentile_00_5 > self.percentile_99_5:
            raise ValueError("percentile_00_5 must be <= percentile_99_5")
        return self


class ResamplingSpec(FrozenModel):
    """Arguments of nnU-Net's ``resample_data_or_seg_to_shape`` for one kind of array.

    ``order``: spline order in-plane (or in 3-D); ``order_z``: order along the low-resolution
    axis when it is resampled separately; ``force_separate_z``: None = decide by the
    anisotropy rule (max/min spacing > ``anisotropy_threshold``, current spacing tested
    first, then the target spacing).
    """

    order: int = Field(ge=0, le=5)
    order_z: int = Field(default=0, ge=0, le=5)
    force_separate_z: bool | None = None
    anisotropy_threshold: float = Field(default=3.0, gt=0)


class FoldModel(FrozenModel):
    """One fold's ONNX file (relative to the export directory) and its sha256."""

    fold: int | Literal["all"]
    onnx: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    onnx_fp16: str | None = Field(
        default=None, description="Optional fp16 twin of the graph (fp32 inputs/outputs), "
        "kept only after its parity gate against this fp32 graph passed."
    )
    sha256_fp16: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _fp16_pair(self) -> FoldModel:
        if (self.onnx_fp16 is None) != (self.sha256_fp16 is None):
            raise ValueError("onnx_fp16 and sha256_fp16 go together")
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_fp16(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # fp32-only specs serialise exactly as before, so older readers still load them
        return without_absent(handler(self), ("onnx_fp16", "sha256_fp16"))


class LabelMeaning(FrozenModel):
    """What each network output channel means in hccatom's label map.

    ``channel_to_label[c]`` is the hccatom label (0 background, 1 liver, 2 tumour) written
    where channel ``c`` wins the argmax; ``channel_names[c]`` is the dataset.json name.
    """

    channel_names: list[str]
    channel_to_label: list[Literal[0, 1, 2]]
    liver_channel: int = Field(ge=1)
    tumour_channel: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> LabelMeaning:
        n = len(self.channel_to_label)
        if len(self.channel_names) != n:
            raise ValueError("channel_names and channel_to_label must have the same length")
        if self.channel_to_label[0] != 0:
            raise ValueError("channel 0 is nnU-Net's background and must map to label 0")
        for name, ch, lab in (
            ("liver_channel", self.liver_channel, 1),
            ("tumour_channel", self.tumour_channel, 2),
        ):
            if ch >= n or self.channel_to_label[ch] != lab:
                raise ValueError(f"{name}={ch} must be a channel that maps to label {lab}")
        if self.liver_channel == self.tumour_channel:
            raise ValueError("liver_channel and tumour_channel must differ")
        return self


class SegmentationSpec(FrozenModel):
    """Everything the torch-free runtime needs to reproduce nnU-Net v2 inference."""

    schema_: Literal["hccatom.segmentation-spec/1"] = Field(
        default="hccatom.segmentation-spec/1", alias="schema"
    )
    configuration: str = Field(description="nnU-Net configuration, e.g. '3d_fullres'.")
    dims: Literal[2, 3] = Field(description="Network dimensionality (2 for the '2d' config).")
    patch_size: list[int] = Field(description="Tile size, transposed axis order (plans.json).")
    target_spacing_mm: list[float] = Field(
        description="Configuration spacing, transposed axis order; 2 entries for 2-D."
    )
    transpose_forward: list[int]
    transpose_backward: list[int]
    normalization: Literal["CTNormalization"] = "CTNormalization"
    ct_intensity: CTIntensityStats
    resampling_data: ResamplingSpec
    resampling_probabilities: ResamplingSpec
    mirror_axes: list[int] = Field(
        description="Axes nnU-Net allows for test-time mirroring (spatial, 0-based)."
    )
    num_output_channels: int = Field(ge=2)
    folds: list[FoldModel] = Field(min_length=1)
    labels: LabelMeaning
    input_name: str = "image"
    output_name: str = "logits"
    dynamic_patch: bool = Field(
        default=False, description="False: the ONNX spatial dims are fixed to patch_size."
    )
    gaussian_sigma_scale: float = 1.0 / 8
    gaussian_value_scale: float = 10.0
    provenance: dict[str, str] = Field(
        default_factory=dict,
        description="Where it came from: dataset, trainer, plans, nnU-Net version, checkpoint.",
    )
    window_before_segmentation: bool | None = Field(
        default=None,
        description="Whether the model was trained on CT clipped to the bundle's HU window "
        "(True) or on raw HU (False), as stated at export; None: not recorded (older "
        "exports). `hccatom bundle build` requires it stated here or by its flag.",
    )
    training_orientation: str | None = Field(
        default=None,
        description="Orientation of the arrays the model was trained on (letters for the "
        "x, y, z index axes, e.g. 'LPS', or 'RAS' for NIfTI stored RAS+); the runtime "
        "reorients the array the network sees to it. None: not recorded, the array is used "
        "as given (hccatom reads CT into 'LPS').",
    )
    postprocessing: Postprocessing | None = Field(
        default=None,
        description="nnU-Net's chosen postprocessing (nnUNetv2_find_best_configuration), read "
        "at export from postprocessing.json / .pkl; None: none (as nnUNetv2_predict).",
    )
    previous_stage: SegmentationSpec | None = Field(
        default=None,
        description="3d_cascade_fullres: the 3d_lowres stage whose segmentation, resampled "
        "and one-hot encoded (foreground labels), is fed to this stage as extra input "
        "channels (see hccatom.segmentation.cascade). None: a single-stage configuration.",
    )
    resampling_segmentation: ResamplingSpec | None = Field(
        default=None,
        description="nnU-Net's resampling_fn_seg_kwargs, used on the previous stage's "
        "segmentation (cascades only).",
    )
    ensemble: list[SegmentationSpec] = Field(
        default_factory=list,
        description="Further configurations ensembled with this one (nnUNetv2_ensemble): "
        "each member's softmax probabilities on the input grid are averaged with this "
        "configuration's, then argmax. Empty: no ensemble.",
    )

    model_config = ConfigDict(populate_by_name=True)  # frozen and strict from FrozenModel

    @model_serializer(mode="wrap")
    def _omit_absent_optional(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # fields added in schema 1.1 are left out when unset, so that a spec without them
        # serialises exactly as before and readers of schema 1.0 still load it
        # (likewise the cascade and ensemble fields: single-configuration specs omit them)
        data = without_absent(handler(self), (
            "window_before_segmentation", "training_orientation", "postprocessing",
            "previous_stage", "resampling_segmentation"))
        if not data.get("ensemble"):
            data.pop("ensemble", None)
        return data

    @field_validator("transpose_forward", "transpose_backward")
    @classmethod
    def _perm(cls, v: list[int]) -> list[int]:
        if sorted(v) != [0, 1, 2]:
            raise ValueError(f"must be a permutation of [0, 1, 2], got {v}")
        return v

    @field_validator("training_orientation")
    @classmethod
    def _orientation(cls, v: str | None) -> str | None:
        if v is not None and not is_code(v):
            raise ValueError(f"training_orientation must be a code like 'LPS' or 'RAS', got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SegmentationSpec:
        if len(self.patch_size) != self.dims or len(self.target_spacing_mm) != self.dims:
            raise ValueError("patch_size and target_spacing_mm need one entry per network axis")
        if any(p < 1 for p in self.patch_size) or any(s <= 0 for s in self.target_spacing_mm):
            raise ValueError("patch_size and target_spacing_mm must be positive")
        if [self.transpose_forward[i] for i in self.transpose_backward] != [0, 1, 2]:
            raise ValueError("transpose_backward must invert transpose_forward")
        if any(a < 0 or a >= self.dims for a in self.mirror_axes):
            raise ValueError(f"mirror_axes must lie in 0..{self.dims - 1}")
        if len(self.labels.channel_to_label) != self.num_output_channels:
            raise ValueError("labels must describe every output channel")
        if self.postprocessing is not None:
            check_mappable(self.postprocessing, self.labels.channel_to_label)
        check_stages(self)
        return self

    @property
    def num_input_channels(self) -> int:
        """Network input channels: the CT, plus one per foreground label in a cascade."""
        if self.previous_stage is None:
            return 1
        return 1 + self.previous_stage.num_output_channels - 1

    def all_folds(self) -> list[FoldModel]:
        """Every fold model of every stage and member, in engine order: the previous stage's
        (recursively), this configuration's, then each ensemble member's."""
        return [fold for fold, _ in self.fold_stages()]

    def fold_stages(self) -> list[tuple[FoldModel, SegmentationSpec]]:
        """:meth:`all_folds`, each with the configuration (stage or member) it belongs to
        (that one's patch size and input channels describe the fold's graph)."""
        out = [] if self.previous_stage is None else self.previous_stage.fold_stages()
        out.extend((fold, self) for fold in self.folds)
        for member in self.ensemble:
            out.extend(member.fold_stages())
        return out

    # --- file I/O ---------------------------------------------------------------------
    def to_json(self) -> str:
        """Serialise (with the ``schema`` key) as pretty JSON."""
        return self.model_dump_json(by_alias=True, indent=2)

    def save(self, directory: str | Path) -> Path:
        """Write ``segmentation_spec.json`` into ``directory``."""
        path = Path(directory) / SPEC_FILENAME
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SegmentationSpec:
        """Read a spec file (or the spec inside an export directory)."""
        p = Path(path)
        if p.is_dir():
            p = p / SPEC_FILENAME
        if not p.is_file():
            raise BundleFormatError(
                f"no segmentation spec at {p}; point at an `hccatom export nnunet` output "
                f"directory (it holds {SPEC_FILENAME} and the fold ONNX files)"
            )
        try:
            data = load_limited(p, SPEC_JSON_LIMITS)
        except (OSError, JSONLimitError) as exc:
            raise BundleFormatError(
                f"segmentation spec {p} cannot be used: {exc}; re-export it with "
                "`hccatom export nnunet`") from None
        try:
            return cls.model_validate(data)
        except (ValueError, TypeError) as exc:
            raise BundleFormatError(f"invalid segmentation spec {p}: {exc}") from exc


def check_stages(spec: SegmentationSpec) -> None:
    """Rules for cascades and ensembles (ValueError): members and the previous stage
    describe the same labels, carry no postprocessing (it belongs to the whole), and nest
    no further ensembles; a previous stage is itself single-stage; ONNX names are unique."""
    lut = spec.labels.channel_to_label
    for member in spec.ensemble:
        if member.labels.channel_to_label != lut:
            raise ValueError(
                f"ensemble member {member.configuration} maps channels to labels "
                f"{member.labels.channel_to_label}, this spec {lut}: members must agree"
            )
        if member.ensemble or member.postprocessing is not None:
            raise ValueError("ensemble members carry no ensemble or postprocessing of their own")
    prev = spec.previous_stage
    if prev is not None:
        if prev.previous_stage is not None or prev.ensemble or prev.postprocessing is not None:
            raise ValueError("the previous stage of a cascade must be a single configuration")
        if prev.num_output_channels != spec.num_output_channels:
            raise ValueError(
                f"previous stage has {prev.num_output_channels} output channels, this stage "
                f"{spec.num_output_channels}: a cascade's stages share the dataset's labels"
            )
        seg = spec.resampling_segmentation
        if seg is None:
            raise ValueError("a cascade stage needs resampling_segmentation (resampling_fn_seg)")
        if seg.order_z != 0:
            raise ValueError("resampling_segmentation.order_z must be 0 (nnU-Net's default)")
    if spec.dims == 2 and prev is not None:
        raise ValueError("a cascade's full-resolution stage is a 3-D configuration")
    names = [f.onnx for f in spec.all_folds()]
    if len(set(names)) != len(names):
        raise ValueError(f"fold ONNX files must be distinct across stages and members: {names}")
