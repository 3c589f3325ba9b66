"""Memory each chain step will need, computed from shapes and bundle values before it runs.

Each function estimates the arrays a step holds at once (bytes, Python ints: no overflow for
absurd sizes) and calls :func:`hccatom.memory_budget.check_memory`, which raises a typed
"too large" error saying how large and what to do. The estimates are upper bounds of the
right order, not exact peaks:

* z resampling (:func:`check_z_resampling`): the float32 output (``n_new`` slices) plus its
  spline weight matrix (``n_new x n_z`` float64);
* segmentation (:func:`check_segmentation`): on the network grid (the input resampled to
  the plan spacing), the resampled image, ``C`` float32 logits accumulated, a weight map and
  ``C`` logits resampled back to the input grid;
* bundle (:func:`check_bundle`, at load): one patch with its ``C`` output channels, and the
  z-resampled size of a reference abdominal scan (512 x 512 pixels, 500 mm long) at the
  bundle's slice thickness, so a manifest asking for 4096^3 patches or 0.001 mm slices is
  refused when it is opened, not during the first patient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hccatom.errors import BundleTooLargeError, InputTooLargeError
from hccatom.memory_budget import array_bytes, check_memory

__all__ = [
    "REFERENCE_SCAN_MM",
    "REFERENCE_SCAN_PX",
    "check_bundle",
    "check_segmentation",
    "check_z_resampling",
    "network_grid_shape",
    "z_resampled_slices",
]

REFERENCE_SCAN_PX = 512
REFERENCE_SCAN_MM = 500.0


def z_resampled_slices(n_z: int, spacing_z_mm: float, thickness_mm: float) -> int:
    """Slices after :func:`hccatom.preprocess.resample_z` (same rounding)."""
    return max(1, round(n_z * spacing_z_mm / thickness_mm))


def z_resampling_bytes(shape_zyx: Sequence[int], spacing_z_mm: float, thickness_mm: float) -> int:
    """Bytes z resampling allocates: float32 output and the float64 weight matrix."""
    n_new = z_resampled_slices(int(shape_zyx[0]), spacing_z_mm, thickness_mm)
    return array_bytes((n_new, shape_zyx[1], shape_zyx[2]), 4) + array_bytes(
        (n_new, shape_zyx[0]), 8
    )


def check_z_resampling(
    shape_zyx: Sequence[int], spacing_zyx_mm: Sequence[float], thickness_mm: float,
    *, budget_bytes: int | None = None,
) -> None:
    """Raise :class:`InputTooLargeError` when z resampling would exceed the budget."""
    n_new = z_resampled_slices(int(shape_zyx[0]), float(spacing_zyx_mm[0]), thickness_mm)
    check_memory(
        z_resampling_bytes(shape_zyx, float(spacing_zyx_mm[0]), thickness_mm),
        f"Resampling {shape_zyx[0]} slices of {spacing_zyx_mm[0]:g} mm to {thickness_mm:g} mm "
        f"({n_new} slices of {shape_zyx[1]} x {shape_zyx[2]})",
        "Crop the scan to the abdomen (fewer slices or pixels) before passing it.",
        error=InputTooLargeError,
        budget_bytes=budget_bytes,
    )


def network_grid_shape(
    shape_zyx: Sequence[int], spacing_zyx_mm: Sequence[float], seg_spec: Any
) -> tuple[int, int, int]:
    """The input's shape ``(z, y, x)`` on the segmentation plan's spacing."""
    target = [float(s) for s in spacing_zyx_mm]
    spacing = list(seg_spec.target_spacing_mm)
    perm = list(seg_spec.transpose_forward)
    if seg_spec.dims == 3:
        for i, axis in enumerate(perm):
            target[axis] = spacing[i]
    else:  # 2-D plans: in-plane spacing only (transposed axes 1 and 2)
        for i, axis in enumerate(perm[1:]):
            target[axis] = spacing[i]
    out = [
        max(1, math.ceil(int(n) * float(s) / t))
        for n, s, t in zip(shape_zyx, spacing_zyx_mm, target, strict=True)
    ]
    return (out[0], out[1], out[2])


def check_segmentation(
    shape_zyx: Sequence[int], spacing_zyx_mm: Sequence[float], seg_spec: Any,
    *, budget_bytes: int | None = None,
) -> None:
    """Raise :class:`InputTooLargeError` when segmenting this grid would exceed the budget."""
    grid = network_grid_shape(shape_zyx, spacing_zyx_mm, seg_spec)
    channels = int(seg_spec.num_output_channels)
    needed = array_bytes(grid, 4) * (channels + 2) + array_bytes(shape_zyx, 4) * channels
    check_memory(
        needed,
        f"Segmenting a {' x '.join(map(str, shape_zyx))} volume (network grid "
        f"{' x '.join(map(str, grid))} at the plan spacing, {channels} output channels)",
        "Crop the scan to the abdomen before passing it.",
        error=InputTooLargeError,
        budget_bytes=budget_bytes,
    )


def check_bundle(manifest: Any, *, budget_bytes: int | None = None) -> None:
    """Raise :class:`BundleTooLargeError` when a bundle's own values need more than the budget."""
    seg = manifest.segmentation.spec
    channels = int(seg.num_output_channels)
    patch = [int(p) for p in seg.patch_size]
    check_memory(
        array_bytes(patch, 4) * (1 + channels),
        f"The bundle's segmentation patch {' x '.join(map(str, patch))} ({channels} output "
        "channels)",
        "The bundle's patch_size is implausible (nnU-Net uses about 128^3); rebuild the "
        "bundle or use one made for this machine.",
        error=BundleTooLargeError,
        budget_bytes=budget_bytes,
    )
    thickness = float(manifest.preprocessing.slice_thickness_mm)
    n_new = max(1, round(REFERENCE_SCAN_MM / thickness))
    check_memory(
        array_bytes((n_new, REFERENCE_SCAN_PX, REFERENCE_SCAN_PX), 4),
        f"The bundle's slice thickness {thickness:g} mm (a {REFERENCE_SCAN_MM:g} mm scan of "
        f"{REFERENCE_SCAN_PX} x {REFERENCE_SCAN_PX} pixels becomes {n_new} slices)",
        "The bundle's preprocessing.slice_thickness_mm is implausible (the paper uses 1 mm); "
        "rebuild the bundle.",
        error=BundleTooLargeError,
        budget_bytes=budget_bytes,
    )
