"""CT preprocessing of the SELECTION chain as pure functions on Volumes and label maps.

Chain (each step a function; parameters come from the bundle's :class:`PreprocessSpec`).
Where each default comes from is said at each step: "paper" (the published methods),
"authors' code" (their public training code, github.com/banterlin/SELECTION) or "ours"
(hccatom's reading where neither prints it):

1. :func:`resample_z` - slice thickness to ``slice_thickness_mm`` (paper: 1 mm, "1-D spline
   interpolation") along z only; in-plane voxels untouched (spline order 3: ours).
2. :func:`window_hu` - clip to the HU window (paper: [-50, 350]).
3. :func:`pick_slice` - the axial slice with the largest tumour area (paper: "maximum tumour
   area"; measured in mm^2 and ties broken by liver area: ours).
4. :func:`crop_liver_box` - a square ``crop_mm`` (paper: 224 mm) box around the liver on
   that slice, resampled to ``image_size_px`` (224 px: the authors' code's input size); the
   pad value outside the image (the window's low value) and the interpolation are ours.
5. :func:`model_image` - window mapped to [0, 1] (ours: the natural reading of the authors'
   to-tensor step), then ``(x - mean) / std`` with 0.5/0.5 (authors' code), replicated to 3
   channels (authors' code): float32 ``(3, H, W)``.

Images are in the canonical LPS orientation of :mod:`hccatom.volume`, so a 2-D slice
``[y, x]`` shows the patient in the usual radiological view (anterior up, patient's left on
the image's right).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hccatom.blas_threads import single_blas_thread
from hccatom.errors import CTInputError, InputError, NoLiverError, NoTumourError
from hccatom.model_base import FrozenModel
from hccatom.volume import Volume

__all__ = [
    "CropResult",
    "PreprocessSpec",
    "SlicePick",
    "crop_liver_box",
    "model_image",
    "pick_slice",
    "resample_z",
    "resize_center_crop",
    "window_hu",
]


class PreprocessSpec(FrozenModel):
    """CT preprocessing parameters a bundle stores.

    Each field's description says where its default comes from: the paper, the authors'
    code, or ours (see the module docstring).
    """

    slice_thickness_mm: float = Field(
        1.0, gt=0, le=20, description="Target slice thickness after z resampling (paper: 1 mm)"
    )
    z_spline_order: int = Field(
        3, ge=0, le=5,
        description="Spline order along z (3 = cubic; ours: the paper says '1-D spline')",
    )
    hu_window: tuple[float, float] = Field(
        (-50.0, 350.0), description="HU window [low, high] (paper: [-50, 350])"
    )
    apply_window_before_segmentation: bool = Field(
        False,
        description=(
            "Clip the CT to hu_window before segmentation. The paper windows to [-50, 350] HU "
            "before segmentation ('to enhance ... segmentation'). Default False (ours): follow "
            "nnU-Net's own CT normalisation of raw HU, which is right for nnU-Net models "
            "trained on raw HU (the usual case, and the demo model). Set True only for a model "
            "trained on windowed CT. Bundles built from a site's model record the choice "
            "explicitly (hccatom export nnunet / bundle build --window-before-segmentation)."
        ),
    )
    crop_mm: float = Field(224.0, gt=0, description="Side of the square liver box (paper: 224 mm)")
    image_size_px: int = Field(
        224, ge=8, description="Side of the model image (authors' code: 224 pixels)"
    )
    crop_pad_value_hu: float | None = Field(
        None,
        description="HU outside the image inside the box; None = the window's low value (ours)",
    )
    crop_interpolation_order: int = Field(
        1, ge=0, le=5, description="In-plane order (1 = linear; ours)"
    )
    norm_mean: float = Field(
        0.5,
        description="Mean subtracted after mapping the window to [0, 1] (the [0, 1] mapping: "
        "ours; 0.5: authors' code)",
    )
    norm_std: float = Field(
        0.5, gt=0, description="Std divided by after subtracting the mean (authors' code: 0.5)"
    )
    resize_center_crop_px: int | None = Field(
        None,
        description=(
            "Optional authors' test transform: resize the image to this size, then centre-crop "
            "image_size_px (their code: 256 -> 224). None = off."
        ),
    )
    liver_label: int = Field(1, ge=0, le=255)
    tumour_label: int = Field(2, ge=0, le=255)

    @model_validator(mode="after")
    def _check(self) -> PreprocessSpec:
        lo, hi = self.hu_window
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"hu_window must be finite with low < high, got {self.hu_window}")
        if self.liver_label == self.tumour_label:
            raise ValueError("liver_label and tumour_label must differ")
        if self.resize_center_crop_px is not None and self.resize_center_crop_px < (
            self.image_size_px
        ):
            raise ValueError("resize_center_crop_px must be >= image_size_px")
        return self

    @property
    def pad_value_hu(self) -> float:
        """HU used outside the image inside the crop box."""
        return self.hu_window[0] if self.crop_pad_value_hu is None else self.crop_pad_value_hu


# --- 1. z resampling --------------------------------------------------------------------
def resample_z(volume: Volume, thickness_mm: float = 1.0, order: int = 3) -> Volume:
    """Resample along z to slices of ``thickness_mm``; in-plane voxels are untouched.

    Grid: the source covers ``extent = n_z * spacing_z`` mm; the result has
    ``n = max(1, round(extent / thickness_mm))`` slices of exactly ``thickness_mm``, centred
    on the same physical centre, so the extent is preserved to within half a slice. The
    origin moves along the volume's z axis (its direction column) to the new first slice
    centre. Interpolation is a 1-D interpolating spline of ``order`` along z (not-a-knot
    ends, :func:`scipy.interpolate.make_interp_spline`), which reproduces polynomials up to
    that order exactly; the outermost new slices, up to half a source slice beyond the
    outermost source centres, extend the end polynomial. The spline is applied as a
    precomputed (numerically banded) weight matrix over slices, in float32. ``order=0`` is
    nearest-neighbour and keeps the dtype (use it for label maps); other orders return
    float32.
    """
    if not (math.isfinite(thickness_mm) and thickness_mm > 0):
        raise InputError(f"resample_z: thickness_mm must be positive, got {thickness_mm}.")
    if order not in range(6):
        raise InputError(f"resample_z: order must be 0..5, got {order}.")
    nz = volume.shape[0]
    sz = volume.spacing[0]
    n_new = max(1, round(nz * sz / thickness_mm))
    step = thickness_mm / sz  # new slice step in source index units
    first = (nz - 1) / 2.0 - (n_new - 1) / 2.0 * step
    positions = first + step * np.arange(n_new)
    src = np.asarray(volume.array)
    if order == 0 or nz == 1:
        idx = np.clip(np.rint(positions), 0, nz - 1).astype(np.intp)
        out = src[idx]
        if order != 0:
            out = out.astype(np.float32)
    else:
        weights = _spline_weights(nz, positions, min(order, nz - 1))
        out = np.empty((n_new, *src.shape[1:]), dtype=np.float32)
        with single_blas_thread():  # ~200 small products: threads only wait (blas_threads)
            for k, row in enumerate(weights):
                (taps,) = np.nonzero(row)
                j0, j1 = int(taps[0]), int(taps[-1]) + 1
                out[k] = np.tensordot(row[j0:j1].astype(np.float32), src[j0:j1], axes=1)
    zdir = np.asarray(volume.direction, dtype=float)[:, 0]
    origin = np.asarray(volume.origin, dtype=float) + zdir * (first * sz)
    note = f"z resampled {sz:g} mm x {nz} -> {thickness_mm:g} mm x {n_new} (order {order})"
    return volume.with_array(
        out,
        spacing=(thickness_mm, volume.spacing[1], volume.spacing[2]),
        origin=tuple(origin),
        note=note,
    )


def _spline_weights(n: int, positions: np.ndarray, k: int) -> np.ndarray:
    """Weights ``W`` with ``resampled = W @ samples`` for an order-``k`` interpolating spline.

    The spline is linear in its samples, so interpolating the identity gives the operator.
    Weights decay geometrically away from each position; those below 1e-9 of the row's
    largest are dropped so that every output slice reads only a few source slices.
    """
    from scipy.interpolate import make_interp_spline  # lazy: loading a bundle needs no scipy

    spline = make_interp_spline(np.arange(n, dtype=np.float64), np.eye(n), k=k, axis=0)
    weights = np.asarray(spline(positions, extrapolate=True))
    small = np.abs(weights) < 1e-9 * np.abs(weights).max(axis=1, keepdims=True)
    weights[small] = 0.0
    return weights


# --- 2. window --------------------------------------------------------------------------
@overload
def window_hu(volume: Volume, lo: float = ..., hi: float = ...) -> Volume: ...
@overload
def window_hu(volume: np.ndarray, lo: float = ..., hi: float = ...) -> np.ndarray: ...
def window_hu(
    volume: Volume | np.ndarray, lo: float = -50.0, hi: float = 350.0
) -> Volume | np.ndarray:
    """Clip HU to ``[lo, hi]`` (paper: [-50, 350]); float32, same type as the input."""
    if not lo < hi:
        raise InputError(f"window_hu: the window must have lo < hi, got [{lo}, {hi}].")
    if isinstance(volume, Volume):
        clipped = np.clip(volume.array, lo, hi).astype(np.float32, copy=False)
        return volume.with_array(clipped, note=f"HU window [{lo:g}, {hi:g}]")
    return np.clip(np.asarray(volume), lo, hi).astype(np.float32, copy=False)


# --- 3. slice pick ----------------------------------------------------------------------
class SlicePick(BaseModel):
    """The axial slice chosen for the model image."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(description="z index in the label/CT array")
    z_mm: float = Field(description="Superior (z) LPS coordinate of the slice centre, mm")
    tumour_area_mm2: float
    liver_area_mm2: float = Field(description="Liver including tumour on this slice, mm^2")


def pick_slice(labels: Volume, liver_label: int = 1, tumour_label: int = 2) -> SlicePick:
    """The axial slice with the largest tumour area (mm^2); ties -> larger liver area.

    Liver area counts liver and tumour voxels (the organ). Raises :class:`NoLiverError`
    if the map has no liver label at all and :class:`NoTumourError` if it has no tumour.
    """
    lab = np.asarray(labels.array)
    pixel_mm2 = labels.spacing[1] * labels.spacing[2]
    tumour = (lab == tumour_label).sum(axis=(1, 2))
    liver_only = (lab == liver_label).sum(axis=(1, 2))
    if not liver_only.any():
        raise NoLiverError(
            f"The label map has no liver voxels (label {liver_label}); the segmentation found "
            "no liver. Check that the CT covers the upper abdomen and is a contrast CT."
        )
    if not tumour.any():
        raise NoTumourError(
            f"The label map has no tumour voxels (label {tumour_label}); SELECTION needs a "
            "visible tumour to pick the slice."
        )
    organ = liver_only + tumour
    # lexicographic: tumour area first, then organ area; first index wins remaining ties
    best = int(np.lexsort((-np.arange(lab.shape[0]), organ, tumour))[-1])
    zdir = np.asarray(labels.direction, dtype=float)[:, 0]
    z_mm = float(labels.origin[0] + zdir[0] * best * labels.spacing[0])
    return SlicePick(
        index=best,
        z_mm=z_mm,
        tumour_area_mm2=float(tumour[best] * pixel_mm2),
        liver_area_mm2=float(organ[best] * pixel_mm2),
    )


# --- 4. liver box crop ------------------------------------------------------------------
@dataclass(frozen=True)
class CropResult:
    """A square in-plane crop of one slice, in HU, with what was done to get it."""

    image: np.ndarray
    """(size_px, size_px) float32 HU."""
    labels: np.ndarray
    """(size_px, size_px) uint8 labels on the same grid (nearest neighbour)."""
    slice_index: int
    box_mm: float
    """Side of the square box actually used (>= the requested box)."""
    pixel_spacing_mm: tuple[float, float]
    """(y, x) spacing of the output pixels, mm."""
    centre_yx_mm: tuple[float, float]
    """Box centre in mm from the slice's first voxel centre, (y, x)."""
    liver_extent_mm: tuple[float, float]
    """(y, x) extent of the liver bounding box on the slice, mm."""
    box_enlarged: bool
    """The liver was wider than the requested box, which was enlarged to fit it."""
    liver_touches_border: bool
    """The liver reaches the image edge on this slice (it may be cut off)."""
    padded: bool
    """Part of the box lies outside the image and was filled with the pad value."""
    notes: tuple[str, ...] = field(default_factory=tuple)


def crop_liver_box(
    ct: Volume,
    labels: Volume,
    slice_index: int,
    box_mm: float = 224.0,
    size_px: int = 224,
    pad_value: float = -50.0,
    *,
    liver_label: int = 1,
    tumour_label: int = 2,
    order: int = 1,
) -> CropResult:
    """Crop a square ``box_mm`` box centred on the liver's bounding box on one slice.

    The box is measured in mm with the slice's real (possibly anisotropic) pixel spacing,
    enlarged to the liver's larger extent if the liver is wider (flagged), filled with
    ``pad_value`` outside the image (ours: the window's low value) and resampled to
    ``size_px`` x ``size_px`` by spline interpolation of ``order`` (labels: nearest).
    """
    if not ct.same_grid(labels):
        raise CTInputError(
            f"CT and label map are on different grids (shapes {ct.shape} vs {labels.shape}, "
            f"spacing {ct.spacing} vs {labels.spacing}); segment the same CT you crop."
        )
    if not 0 <= slice_index < ct.shape[0]:
        raise InputError(
            f"crop_liver_box: slice_index {slice_index} is outside 0..{ct.shape[0] - 1}; pick a "
            "slice of this CT."
        )
    if not (box_mm > 0 and size_px >= 1):
        raise InputError(f"crop_liver_box: box_mm must be > 0 and size_px >= 1, got {box_mm}, "
                         f"{size_px}.")
    lab2d = np.asarray(labels.array[slice_index])
    organ = (lab2d == liver_label) | (lab2d == tumour_label)
    if not organ.any():
        raise NoLiverError(
            f"No liver on slice {slice_index}: the box cannot be centred. Check the "
            "segmentation or the picked slice."
        )
    sy, sx = ct.spacing[1], ct.spacing[2]
    ys, xs = np.nonzero(organ)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    ext_y, ext_x = (y1 - y0 + 1) * sy, (x1 - x0 + 1) * sx
    side = max(box_mm, ext_y, ext_x)
    enlarged = side > box_mm
    cy, cx = (y0 + y1) / 2.0 * sy, (x0 + x1) / 2.0 * sx
    pix = side / size_px
    offs = (np.arange(size_px) + 0.5) * pix - side / 2.0
    yy = (cy + offs) / sy  # source index coordinates of output pixel centres
    xx = (cx + offs) / sx
    ny, nx = lab2d.shape
    yy = _snap(yy, ny)
    xx = _snap(xx, nx)
    from scipy import ndimage  # lazy: loading a bundle needs no scipy

    grid_y, grid_x = np.meshgrid(yy, xx, indexing="ij")
    coords = np.stack([grid_y, grid_x])
    img = ndimage.map_coordinates(
        np.asarray(ct.array[slice_index], dtype=np.float32),
        coords,
        order=order,
        mode="constant",
        cval=pad_value,
    ).astype(np.float32)
    lab_out = ndimage.map_coordinates(lab2d, coords, order=0, mode="constant", cval=0)
    padded = bool(yy[0] < 0 or yy[-1] > ny - 1 or xx[0] < 0 or xx[-1] > nx - 1)
    touches = bool(y0 == 0 or x0 == 0 or y1 == ny - 1 or x1 == nx - 1)
    notes = []
    if enlarged:
        notes.append(
            f"liver extent {ext_y:.1f} x {ext_x:.1f} mm exceeds the {box_mm:g} mm box; box "
            f"enlarged to {side:.1f} mm"
        )
    if touches:
        notes.append("liver touches the image border on this slice; it may be cut off")
    if padded:
        notes.append(f"box extends outside the image; filled with {pad_value:g} HU")
    return CropResult(
        image=img,
        labels=lab_out.astype(np.uint8),
        slice_index=slice_index,
        box_mm=float(side),
        pixel_spacing_mm=(pix, pix),
        centre_yx_mm=(float(cy), float(cx)),
        liver_extent_mm=(float(ext_y), float(ext_x)),
        box_enlarged=enlarged,
        liver_touches_border=touches,
        padded=padded,
        notes=tuple(notes),
    )


def _snap(coords: np.ndarray, n: int, tol: float = 1e-6) -> np.ndarray:
    """Snap coordinates within ``tol`` of the first/last sample onto it (float round-off
    would otherwise turn an edge pixel into padding)."""
    out = coords.copy()
    out[(out < 0) & (out > -tol)] = 0.0
    out[(out > n - 1) & (out < n - 1 + tol)] = n - 1
    return out


# --- 5. model image ---------------------------------------------------------------------
def model_image(
    crop_hu: np.ndarray | CropResult,
    window: Sequence[float] = (-50.0, 350.0),
    mean: float | Sequence[float] = 0.5,
    std: float | Sequence[float] = 0.5,
) -> np.ndarray:
    """HU crop -> float32 ``(3, H, W)``: clip to ``window``, map to [0, 1], ``(x-mean)/std``.

    ``mean``/``std`` may be one value or one per channel (the authors' code normalises each of
    the three identical channels with 0.5/0.5; the [0, 1] mapping before it is ours, the
    natural reading of their to-tensor step).
    """
    image = crop_hu.image if isinstance(crop_hu, CropResult) else np.asarray(crop_hu)
    if image.ndim != 2:
        raise InputError(f"model_image needs a 2-D (H, W) crop, got shape {image.shape}.")
    lo, hi = float(window[0]), float(window[1])
    if not lo < hi:
        raise InputError(f"model_image: the window must have low < high, got {tuple(window)}.")
    unit = (np.clip(image.astype(np.float64), lo, hi) - lo) / (hi - lo)
    m = np.broadcast_to(np.asarray(mean, dtype=np.float64), (3,)).reshape(3, 1, 1)
    s = np.broadcast_to(np.asarray(std, dtype=np.float64), (3,)).reshape(3, 1, 1)
    if np.any(s <= 0):
        raise InputError(f"model_image: std must be positive, got {std}.")
    return ((unit[None] - m) / s).astype(np.float32)


def resize_center_crop(image: np.ndarray, resize_px: int, crop_px: int) -> np.ndarray:
    """Bilinear resize of the last two axes to ``resize_px``, then a centre crop of
    ``crop_px`` (the authors' test transform: 256 then 224). Works on (H, W) or (C, H, W)."""
    if crop_px > resize_px:
        raise InputError(
            f"resize_center_crop: crop_px ({crop_px}) must be <= resize_px ({resize_px})."
        )
    arr = np.asarray(image, dtype=np.float32)
    h, w = arr.shape[-2:]
    zoom = [1.0] * (arr.ndim - 2) + [resize_px / h, resize_px / w]
    from scipy import ndimage  # lazy: loading a bundle needs no scipy

    resized = ndimage.zoom(arr, zoom, order=1, mode="nearest", grid_mode=True)
    top = (resize_px - crop_px) // 2
    return np.ascontiguousarray(resized[..., top : top + crop_px, top : top + crop_px])
