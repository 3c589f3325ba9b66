"""Where a model-image pixel came from: patch grid -> model image -> source slice.

The forward path (:mod:`hccatom.preprocess`): a square box of side ``box_mm`` centred at
``centre_yx_mm`` (mm from the slice's first pixel centre) is sampled at ``crop_px`` x
``crop_px`` pixel centres; optionally the crop is resized to ``resize_px`` and its centre
``model_px`` pixels kept (the authors' test transform). This module inverts it: each source
pixel is mapped to the model-image pixel that sampled it (nearest), and pixels outside the
box get NaN. All arrays are (y, x) = (row, column).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from hccatom.model_base import FrozenModel


class CropGeometry(FrozenModel):
    """How one phase's model image was cut from its key slice (JSON-serialisable)."""

    slice_shape: tuple[int, int] = Field(description="(rows, columns) of the key slice.")
    spacing_yx_mm: tuple[float, float]
    centre_yx_mm: tuple[float, float] = Field(
        description="Box centre, mm from the slice's first pixel centre (y, x).")
    box_mm: float
    crop_px: int = Field(description="Side of the crop grid the box was sampled on.")
    resize_px: int | None = Field(default=None, description="Resize before the centre crop.")
    model_px: int = Field(description="Side of the model image.")

    def model_to_crop(self, u: np.ndarray) -> np.ndarray:
        """Model-image pixel index -> crop-grid coordinate (continuous)."""
        u = np.asarray(u, dtype=np.float64)
        if self.resize_px is None:
            return u
        top = (self.resize_px - self.model_px) // 2
        return (u + top + 0.5) * self.crop_px / self.resize_px - 0.5

    def source_to_model(self, yx_index: np.ndarray, axis: int) -> np.ndarray:
        """Source pixel index along ``axis`` (0 = y, 1 = x) -> model-image coordinate."""
        pix = self.box_mm / self.crop_px
        mm = np.asarray(yx_index, dtype=np.float64) * self.spacing_yx_mm[axis]
        crop = (mm - self.centre_yx_mm[axis] + self.box_mm / 2.0) / pix - 0.5
        if self.resize_px is None:
            return crop
        top = (self.resize_px - self.model_px) // 2
        return (crop + 0.5) * self.resize_px / self.crop_px - 0.5 - top

    def box_on_source(self) -> tuple[float, float, float, float]:
        """The crop box as (row0, col0, height, width) in source index coordinates (pixel
        ``i``'s centre at ``i``), as matplotlib's ``imshow`` draws a slice."""
        sy, sx = self.spacing_yx_mm
        half = self.box_mm / 2.0
        return ((self.centre_yx_mm[0] - half) / sy, (self.centre_yx_mm[1] - half) / sx,
                self.box_mm / sy, self.box_mm / sx)


def grid_to_model_image(grid: np.ndarray, model_px: int) -> np.ndarray:
    """(gy, gx) patch values -> (model_px, model_px): each patch fills its pixels."""
    g = np.asarray(grid, dtype=np.float64)
    py, px = model_px // g.shape[0], model_px // g.shape[1]
    return np.kron(g, np.ones((py, px)))


def model_image_to_source(image_map: np.ndarray, geom: CropGeometry) -> np.ndarray:
    """A (model_px, model_px) map on the key slice's grid (rows, columns); NaN off the box."""
    ny, nx = geom.slice_shape
    my = np.rint(geom.source_to_model(np.arange(ny), 0)).astype(np.int64)
    mx = np.rint(geom.source_to_model(np.arange(nx), 1)).astype(np.int64)
    inside_y = (my >= 0) & (my < geom.model_px)
    inside_x = (mx >= 0) & (mx < geom.model_px)
    out = np.full((ny, nx), np.nan)
    rows = np.flatnonzero(inside_y)
    cols = np.flatnonzero(inside_x)
    if rows.size and cols.size:
        out[np.ix_(rows, cols)] = np.asarray(image_map)[np.ix_(my[rows], mx[cols])]
    return out


__all__ = ["CropGeometry", "grid_to_model_image", "model_image_to_source"]
