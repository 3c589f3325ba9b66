"""``Volume``: a 3-D image on a physical grid, in hccatom's one axis order.

Conventions (the same everywhere in hccatom):

* ``array`` is indexed ``(z, y, x)``; ``spacing`` is ``(z, y, x)`` in millimetres.
* Canonical orientation is DICOM LPS with identity direction: array index ``x`` grows
  towards the patient's Left, ``y`` towards Posterior, ``z`` towards Superior. The reader
  reorients every input to this (the nearest axis permutation/flip for oblique scans, whose
  residual rotation stays in ``direction``).
* ``origin`` is the LPS position in mm of voxel ``(0, 0, 0)``, listed ``(z, y, x)``, i.e. the
  (S, P, L) components.
* ``direction`` is a 3x3 matrix (row-major tuple of tuples) whose column ``i`` is the unit
  vector, in ``(z, y, x)`` = (S, P, L) components, of array axis ``i``. Identity for a
  canonical, non-oblique volume.
* CT volumes hold float32 Hounsfield units; label volumes hold small unsigned integers.
* ``notes`` records anything the reader or a stage changed on purpose (e.g. scanner padding
  replaced by air), so nothing is altered silently.

SimpleITK's ``(x, y, z)`` order appears only in :mod:`hccatom.ct_io` at the boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from hccatom.errors import CTInputError

Triple = tuple[float, float, float]
Matrix3 = tuple[Triple, Triple, Triple]

IDENTITY_DIRECTION: Matrix3 = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _triple(values: Sequence[float], name: str) -> Triple:
    if len(values) != 3:
        raise CTInputError(f"{name} must have 3 values in (z, y, x) order, got {len(values)}.")
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise CTInputError(f"{name} must be finite, got {out}.")
    return (out[0], out[1], out[2])


DIRECTION_ATOL = 1e-3
"""How far ``direction``'s columns may be from orthonormal (DICOM stores ~6 decimals)."""


def check_direction(direction: Sequence[Sequence[float]]) -> None:
    """Refuse a direction matrix that is not finite and orthonormal (within
    :data:`DIRECTION_ATOL`): an all-zero or NaN matrix would otherwise reach ITK, whose SVD
    spends minutes in warnings before failing."""
    d = np.asarray(direction, dtype=float)
    if d.shape != (3, 3) or not np.all(np.isfinite(d)):
        raise CTInputError(
            f"direction must be a finite 3x3 matrix (unit axis vectors as columns), got "
            f"{np.array2string(d, precision=4)}. Fix the image's orientation header."
        )
    err = float(np.max(np.abs(d.T @ d - np.eye(3))))
    if err > DIRECTION_ATOL:
        raise CTInputError(
            f"direction is not orthonormal (columns must be perpendicular unit vectors; "
            f"largest deviation {err:.3g}): {np.array2string(d, precision=4)}. Fix the "
            "image's orientation header."
        )


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D array with its physical grid. Construct with :meth:`from_array`."""

    array: np.ndarray
    spacing: Triple
    origin: Triple = (0.0, 0.0, 0.0)
    direction: Matrix3 = IDENTITY_DIRECTION
    notes: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_array(
        cls,
        array_zyx: np.ndarray,
        spacing_zyx_mm: Sequence[float],
        *,
        origin: Sequence[float] = (0.0, 0.0, 0.0),
        direction: Sequence[Sequence[float]] = IDENTITY_DIRECTION,
        notes: Sequence[str] = (),
    ) -> Volume:
        """Wrap a ``(z, y, x)`` array; spacing in mm, ``(z, y, x)``. Checks shape and spacing."""
        array = np.asarray(array_zyx)
        if array.ndim != 3:
            raise CTInputError(
                f"A volume needs a 3-D array indexed (z, y, x); got {array.ndim}-D with shape "
                f"{array.shape}. Stack 2-D slices along a new first axis."
            )
        if min(array.shape) < 1:
            raise CTInputError(f"The volume is empty: shape {array.shape}.")
        spacing = _triple(spacing_zyx_mm, "spacing_zyx_mm")
        if min(spacing) <= 0:
            raise CTInputError(f"Spacing must be positive (mm), got {spacing} in (z, y, x).")
        rows = [tuple(float(v) for v in row) for row in direction]
        if len(rows) != 3 or any(len(r) != 3 for r in rows):
            raise CTInputError("direction must be a 3x3 matrix.")
        dir3: Matrix3 = (
            (rows[0][0], rows[0][1], rows[0][2]),
            (rows[1][0], rows[1][1], rows[1][2]),
            (rows[2][0], rows[2][1], rows[2][2]),
        )
        check_direction(dir3)
        return cls(
            array=array,
            spacing=spacing,
            origin=_triple(origin, "origin"),
            direction=dir3,
            notes=tuple(notes),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(z, y, x)``."""
        s = self.array.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def extent_mm(self) -> Triple:
        """Physical extent ``(z, y, x)`` in mm covered by the voxels (shape x spacing)."""
        return (
            self.shape[0] * self.spacing[0],
            self.shape[1] * self.spacing[1],
            self.shape[2] * self.spacing[2],
        )

    def with_array(
        self,
        array: np.ndarray,
        *,
        spacing: Sequence[float] | None = None,
        origin: Sequence[float] | None = None,
        note: str | None = None,
    ) -> Volume:
        """A copy on the same (or given) grid with another array, optionally adding a note."""
        notes = (*self.notes, note) if note else self.notes
        return replace(
            self,
            array=array,
            spacing=self.spacing if spacing is None else _triple(spacing, "spacing"),
            origin=self.origin if origin is None else _triple(origin, "origin"),
            notes=notes,
        )

    def same_grid(self, other: Volume, *, atol_mm: float = 1e-3) -> bool:
        """Whether ``other`` has the same shape, spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol_mm)
            and np.allclose(self.origin, other.origin, atol=atol_mm)
            and np.allclose(self.direction, other.direction, atol=1e-6)
        )
